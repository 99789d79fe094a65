"""Reading images and arrays for prediction, in the KMNIST convention.

KMNIST images are 28x28 uint8, white ink (255) on a black background (0).
Each character is scaled so that its longer side fills the frame and its
ink box is centred: on the real test set the median ink bounding box
(pixels above 25% of the image maximum) is 28 px on the longer side, 0 px
from the top and bottom edges and 3 px from the left and right ones, and the
border ring has median 0. `to_kmnist` maps any grayscale image to that:

1. Background: the median of the outer ring of pixels (5% of the shorter
   side, at least 1 px). If it is brighter than mid-gray the image is dark
   ink on light paper, and it is inverted.
2. An image already 28x28 is taken to be in the KMNIST frame: it passes
   through unchanged (after the inversion, if any), so real KMNIST arrays are
   predicted as they are.
3. Otherwise the paper is removed: the background level plus twice its noise
   (from the median absolute deviation of the ring) becomes 0 and the ink
   peak (the maximum after a 3x3 median filter, so lone specks do not count)
   becomes 255.
4. Crop to the ink: the bounding box of the median-filtered pixels above 25%
   of the peak.
5. Resize the crop with Lanczos antialiasing so its longer side is 28 px.
6. Centre it in a black 28x28 frame (the padding is split evenly).

Colour images become grayscale by ITU-R 601 luma; transparent pixels are laid
on white paper first. Images larger than `MAX_SIDE` on a side are shrunk on
reading (JPEGs are decoded at reduced scale), and images of more than
`PIL.Image.MAX_IMAGE_PIXELS` pixels are refused.

Limits: a speck of dirt or a second character far from the first widens the
crop; thin pen strokes stay thinner than KMNIST's brush strokes.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageFilter

from kmnist_jax.errors import UserError

SIZE = 28
MAX_SIDE = 1024  # Larger images are shrunk to this on reading.
DISPLAY_SIDE = 96  # Thumbnails kept for the prediction gallery.
INK_THRESHOLD = 0.25  # Of the ink peak, for the crop box.
MIN_CONTRAST = 16.0  # Ink peak above the background, on the 0-255 scale.
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.gif')
ARRAY_SUFFIXES = ('.npy', '.npz')
_EXPECTED_FILE = ('expected an image (PNG, JPEG, BMP, TIFF, GIF) or a '
                  '.npy/.npz array of shape (N, 28, 28) or (28, 28)')


class InputError(UserError):
  """One input cannot be used; the message says what was expected."""


@dataclasses.dataclass(frozen=True)
class Item:
  """One input ready for the model.

  Attributes:
    name: the path as given (or found in a folder), `file.npz[i]` for one
      image of an array, `<array i>` for in-memory inputs.
    image: uint8 (28, 28), white ink on black.
    display: the input as read (uint8, (H, W) or (H, W, 3), at most
      `DISPLAY_SIDE` on a side for image files), for galleries.
  """
  name: str
  image: np.ndarray
  display: np.ndarray


# ---------------------------------------------------------------- the frame


def _ring(a: np.ndarray) -> np.ndarray:
  w = max(1, round(0.05 * min(a.shape)))
  return np.concatenate([a[:w].ravel(), a[-w:].ravel(),
                         a[w:-w, :w].ravel(), a[w:-w, -w:].ravel()])


def _median3(a: np.ndarray) -> np.ndarray:
  img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
  return np.asarray(img.filter(ImageFilter.MedianFilter(3)), np.float32)


def is_dark_on_light(image: np.ndarray) -> bool:
  """Whether the border of a grayscale image is brighter than mid-gray."""
  return float(np.median(_ring(np.asarray(image, np.float32)))) > 127.5


def to_kmnist(image: Any) -> np.ndarray:
  """Any image (array or PIL) -> uint8 (28, 28) white ink on black.

  See the module docstring for the steps.

  Raises:
    InputError: an empty image, or one without ink (uniform).
  """
  a = to_gray(image)
  if a.size == 0:
    raise InputError(f'empty image ({"x".join(map(str, a.shape))}); expected '
                     'at least one pixel')
  if is_dark_on_light(a):
    a = 255.0 - a
  if a.shape == (SIZE, SIZE):
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
  ring = _ring(a)
  bg = float(np.median(ring))
  floor = bg + 2.0 * 1.4826 * float(np.median(np.abs(ring - bg)))
  smooth = _median3(a)
  peak = float(smooth.max())
  if peak - floor < MIN_CONTRAST:
    raise InputError('no ink found (the image is uniform); expected a '
                     'character darker or lighter than its background')
  scale = 1.0 / (peak - floor)
  ink = np.clip((a - floor) * scale, 0.0, 1.0)
  rows = np.flatnonzero(((smooth - floor) * scale > INK_THRESHOLD).any(1))
  cols = np.flatnonzero(((smooth - floor) * scale > INK_THRESHOLD).any(0))
  crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  h, w = crop.shape
  # Resize first, then centre in the 28x28 frame: padding the crop to a
  # square before resizing would scale an odd padding split into a 2-pixel
  # off-centre shift.
  scale = SIZE / max(h, w)
  new_h = min(SIZE, max(1, round(h * scale)))
  new_w = min(SIZE, max(1, round(w * scale)))
  small = Image.fromarray(crop * 255.0, mode='F').resize(
      (new_w, new_h), Image.Resampling.LANCZOS)
  out = np.zeros((SIZE, SIZE), np.float32)
  top, left = (SIZE - new_h) // 2, (SIZE - new_w) // 2
  out[top:top + new_h, left:left + new_w] = np.asarray(small)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_gray(image: Any) -> np.ndarray:
  """A PIL image or array ((H, W), (H, W, 3|4)) -> float32 (H, W) in 0-255.

  Floating arrays with values in [0, 1] are scaled to 0-255; others must lie
  in [0, 255].
  """
  if isinstance(image, Image.Image):
    return np.asarray(_pil_gray(image), np.float32)
  a = np.asarray(image)
  if a.dtype == bool:
    a = a.astype(np.uint8) * 255
  if not (np.issubdtype(a.dtype, np.integer)
          or np.issubdtype(a.dtype, np.floating)):
    raise InputError(f'array of dtype {a.dtype}; expected numbers')
  if a.ndim == 3 and a.shape[-1] in (3, 4):
    a = a.astype(np.float32)
    if a.shape[-1] == 4:  # Lay transparent pixels on white paper.
      alpha = a[..., 3:] / 255.0
      a = a[..., :3] * alpha + 255.0 * (1 - alpha)
    a = a @ np.array([0.299, 0.587, 0.114], np.float32)
  if a.ndim != 2:
    raise InputError(f'array of shape {a.shape}; expected one image (H, W) '
                     'or (H, W, 3)')
  a = a.astype(np.float32)
  if a.size and not np.isfinite(a).all():
    raise InputError('array holds NaN or infinite values; expected pixel '
                     'values in [0, 255]')
  if a.size and np.issubdtype(np.asarray(image).dtype, np.floating) and (
      a.min() >= 0 and a.max() <= 1):
    a = a * 255.0
  if a.size and (a.min() < 0 or a.max() > 255):
    raise InputError(f'pixel values from {a.min():g} to {a.max():g}; '
                     'expected values in [0, 255] (or [0, 1] for floats)')
  return a


# ------------------------------------------------------------ reading files


def _pil_gray(im: Image.Image) -> Image.Image:
  """8-bit grayscale, transparent pixels on white, 16-bit scaled down."""
  if im.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
    a = np.asarray(im, np.float32)
    top = 65535.0 if im.mode.startswith('I;16') or a.max() > 255 else 255.0
    if im.mode == 'F' and a.size and a.max() <= 1:
      top = 1.0
    return Image.fromarray(
        np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8))
  return _pil_rgb(im).convert('L')


def _pil_rgb(im: Image.Image) -> Image.Image:
  """RGB or L, transparent pixels laid on white paper."""
  if im.mode == 'P' and 'transparency' in im.info:
    im = im.convert('RGBA')
  if 'A' in im.getbands():
    im = im.convert('RGBA')
    paper = Image.new('RGBA', im.size, (255, 255, 255, 255))
    return Image.alpha_composite(paper, im).convert('RGB')
  if im.mode in ('L', 'RGB'):
    return im
  return im.convert('RGB')


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """(grayscale float32 (H, W), display thumbnail uint8) of an image file.

  GIFs and multi-page TIFFs give their first frame.

  Raises:
    InputError: unreadable, truncated, empty, too large, or not an image.
  """
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as im:
        im.seek(0)
        w, h = im.size
        if w == 0 or h == 0:
          raise InputError(f'empty image ({w}x{h}); expected at least one '
                           'pixel')
        if max(w, h) > MAX_SIDE:
          im.draft(im.mode if im.mode in ('L', 'RGB') else None,
                   (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced scale.
        im.load()
        if max(im.size) > MAX_SIDE:
          im = _pil_gray(im) if im.mode.startswith(('I', 'F')) else _pil_rgb(im)
          im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
        gray = _pil_gray(im)
        display = _pil_rgb(im) if not im.mode.startswith(('I', 'F')) else gray
        display = display.copy()
        display.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BOX)
        return np.asarray(gray, np.float32), np.asarray(display)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise InputError(f'image too large ({e}); expected at most '
                     f'{Image.MAX_IMAGE_PIXELS:,} pixels') from None
  except Image.UnidentifiedImageError:
    raise InputError(f'not an image; {_EXPECTED_FILE}') from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise InputError(f'truncated or corrupt image ({_one_line(e)}); expected '
                     'a complete PNG, JPEG, BMP, TIFF or GIF') from None


def _one_line(e: BaseException) -> str:
  return ' '.join((str(e) or type(e).__name__).split())


def read_arrays(path: str | os.PathLike[str]) -> list[tuple[str, np.ndarray]]:
  """(name, (28, 28) array) per image of a .npy or .npz file.

  A (28, 28) array is one image named by the path; a (N, 28, 28) array gives
  `path[i]`. In an .npz with several arrays the names are `path:key[i]`.

  Raises:
    InputError: unreadable file, wrong shapes or dtypes, no images.
  """
  name = str(path)
  try:
    if name.lower().endswith('.npz'):
      with np.load(path, allow_pickle=False) as z:
        arrays = [(k, z[k]) for k in z.files]
    else:
      arrays = [('', np.load(path, allow_pickle=False))]
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise InputError(f'not a readable .npy/.npz array ({_one_line(e)}); '
                     'expected a NumPy file of shape (N, 28, 28) or '
                     '(28, 28)') from None
  if not arrays:
    raise InputError('.npz holds no arrays; expected one of shape '
                     '(N, 28, 28) or (28, 28)')
  out = []
  for key, a in arrays:
    base = f'{name}:{key}' if len(arrays) > 1 else name
    what = f'array {key!r}' if len(arrays) > 1 else 'array'
    if a.shape == (SIZE, SIZE):
      out.append((base, a))
    elif a.ndim == 3 and a.shape[1:] == (SIZE, SIZE) and len(a):
      out.extend((f'{base}[{i}]', x) for i, x in enumerate(a))
    else:
      raise InputError(f'{what} of shape {a.shape}; expected (N, 28, 28) with '
                       'N >= 1, or (28, 28)')
  return out


def expand(path: str | os.PathLike[str]) -> list[str]:
  """A file as is, or a folder's image and array files, recursively sorted.

  Hidden files and files of other types inside folders are skipped.

  Raises:
    InputError: a missing path or a folder without image or array files.
  """
  p = pathlib.Path(path)
  if p.is_dir():
    suffixes = IMAGE_SUFFIXES + ARRAY_SUFFIXES
    found = sorted(
        f for f in p.rglob('*')
        if f.is_file() and f.suffix.lower() in suffixes
        and not any(part.startswith('.') for part in f.relative_to(p).parts))
    if not found:
      raise InputError('folder without images; expected image files '
                       f'({", ".join(IMAGE_SUFFIXES)}) or .npy/.npz arrays '
                       'in it or its subfolders')
    return [os.path.join(str(path), str(f.relative_to(p))) for f in found]
  if not p.exists():
    raise InputError('no such file or folder; expected an image, a folder '
                     'or a .npy/.npz array')
  return [str(path)]


def _file_items(path: str) -> list[Item]:
  if not os.path.isfile(path):
    raise InputError(f'not a regular file; {_EXPECTED_FILE}')
  if os.path.getsize(path) == 0:
    raise InputError(f'empty file (0 bytes); {_EXPECTED_FILE}')
  if path.lower().endswith(ARRAY_SUFFIXES):
    return [Item(n, to_kmnist(a), _display_array(a))
            for n, a in read_arrays(path)]
  gray, display = read_image(path)
  return [Item(path, to_kmnist(gray), display)]


def _display_array(a: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(to_gray(a)), 0, 255).astype(np.uint8)


def _memory_items(index: int, x: Any) -> list[Item]:
  name = f'<array {index}>'
  if isinstance(x, Image.Image):
    display = _pil_rgb(x).copy()
    display.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
    return [Item(name, to_kmnist(x), np.asarray(display))]
  a = np.asarray(x)
  if a.ndim == 3 and a.shape[1:] == (SIZE, SIZE):
    return [Item(f'{name}[{i}]', to_kmnist(im), _display_array(im))
            for i, im in enumerate(a)]
  return [Item(name, to_kmnist(a), _display_array(a))]


def collect(inputs: Any) -> tuple[list[Item], list[tuple[str, str]]]:
  """Reads and preprocesses inputs; bad ones are reported, not raised.

  Args:
    inputs: a path, a NumPy array, a PIL image, or a sequence of these.
      Paths are image files, folders (walked recursively in sorted order) or
      .npy/.npz arrays. Arrays are one image (H, W) or (H, W, 3|4), or a
      stack (N, 28, 28).

  Returns:
    (items, errors): the good inputs in order, and (name, message) per bad
    input; the message says what was expected.
  """
  if isinstance(inputs, (str, os.PathLike, np.ndarray, Image.Image)):
    inputs = [inputs]
  items, errors = [], []
  for index, x in enumerate(_as_list(inputs)):
    if isinstance(x, (str, os.PathLike)):
      try:
        paths = expand(x)
      except InputError as e:
        errors.append((str(x), str(e)))
        continue
      for path in paths:
        try:
          items.extend(_file_items(path))
        except InputError as e:
          errors.append((path, str(e)))
    else:
      try:
        items.extend(_memory_items(index, x))
      except InputError as e:
        errors.append((f'<array {index}>', str(e)))
  return items, errors


def _as_list(inputs: Any) -> Sequence[Any]:
  if isinstance(inputs, Iterable):
    return list(inputs)
  raise UserError(f'inputs of type {type(inputs).__name__}; expected paths, '
                  'arrays or PIL images')
