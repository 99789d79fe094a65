"""Prediction inputs: image files, folders, .npy/.npz arrays, in-memory images.

Each input becomes `Item`s of 28x28 uint8 images in the KMNIST frame
(`kmnist_jax.inference.framing.to_kmnist`), or one `error:` line saying what was
expected.

Colour images become grayscale by ITU-R 601 luma; transparent pixels are laid
on white paper first. Images larger than `MAX_SIDE` on a side are shrunk on
reading (JPEGs are decoded at reduced scale), and images of more than
`PIL.Image.MAX_IMAGE_PIXELS` pixels are refused.

Files are told apart by their first bytes (`sniff`), not their names: a name
ending in .npy, .npz or an image suffix whose content is another format is
refused, saying what the content is (a JPEG named .png is still read: both
are images); other names are read by their content. Arrays are checked from
their headers before any data is read: the .npy header's dtype (numbers) and
shape ((N, 28, 28) or (28, 28)), at most `MAX_ARRAY_IMAGES` images and
`MAX_ARRAY_BYTES` bytes of data per file, and a file that holds them all; in
an .npz, each member's declared uncompressed size first, then its header.
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
from PIL import ImageOps

from kmnist_jax.core.errors import UserError, one_line
# Re-exported: callers show names with inputs.display_name.
from kmnist_jax.core.names import as_utf8, display_name  # pylint: disable=W0611
from kmnist_jax.inference.framing import SIZE, InputError
from kmnist_jax.inference.framing import pil_gray, pil_rgb, to_gray, to_kmnist

MAX_SIDE = 1024  # Larger images are shrunk to this on reading.
DISPLAY_SIDE = 96  # Thumbnails kept for the prediction gallery.
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.gif')
ARRAY_SUFFIXES = ('.npy', '.npz')
_EXPECTED_FILE = ('expected an image (PNG, JPEG, BMP, TIFF, GIF) or a '
                  '.npy/.npz array of shape (N, 28, 28) or (28, 28)')
_EXPECTED_ARRAY = 'expected a NumPy file of shape (N, 28, 28) or (28, 28)'
# Per .npy/.npz file, checked from the headers before the data is read: the
# 232,365 KMNIST-49 training images fit, as uint8 or float16.
MAX_ARRAY_IMAGES = 250_000
MAX_ARRAY_BYTES = 512 << 20
# Over all inputs of one call: images kept (each 28x28, with a thumbnail of
# at most DISPLAY_SIDE on a side for the gallery) and their bytes.
MAX_TOTAL_IMAGES = 1_000_000
MAX_TOTAL_BYTES = 2 << 30
_MAX_NPY_HEADER = 10_000  # numpy's limit; longer headers are refused.
# (first bytes, kind, what): kind 'npy', 'zip', 'image' or 'other'.
_SIGNATURES = (
    (b'\x93NUMPY', 'npy', 'a NumPy .npy array'),
    (b'PK\x03\x04', 'zip', 'a ZIP archive'),
    (b'PK\x05\x06', 'zip', 'an empty ZIP archive'),
    (b'\x89PNG\r\n\x1a\n', 'image', 'a PNG image'),
    (b'\xff\xd8\xff', 'image', 'a JPEG image'),
    (b'GIF87a', 'image', 'a GIF image'),
    (b'GIF89a', 'image', 'a GIF image'),
    (b'II*\x00', 'image', 'a TIFF image'),
    (b'MM\x00*', 'image', 'a TIFF image'),
    (b'II+\x00', 'image', 'a BigTIFF image'),
    (b'MM\x00+', 'image', 'a BigTIFF image'),
    (b'BM', 'image', 'a BMP image'),
    (b'%PDF-', 'other', 'a PDF document'),
    (b'\x1f\x8b', 'other', 'gzip-compressed data'),
    (b'BZh', 'other', 'bzip2-compressed data'),
    (b'\xfd7zXZ\x00', 'other', 'xz-compressed data'),
    (b'7z\xbc\xaf\x27\x1c', 'other', 'a 7-Zip archive'),
    (b'\x80', 'other', 'Python pickle data'),
)


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


def _upright(im: Image.Image) -> Image.Image:
  """`im` turned as its EXIF orientation tag says (phone photos are stored
  sideways with the tag); as stored when it has none or a broken one."""
  try:
    return ImageOps.exif_transpose(im)
  except Exception:  # pylint: disable=broad-except
    return im  # Malformed EXIF: the pixels as stored.


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
  """(grayscale float32 (H, W), display thumbnail uint8) of an image file.

  GIFs and multi-page TIFFs give their first frame; the EXIF orientation
  tag is honoured.

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
          im = pil_gray(im) if im.mode.startswith(('I', 'F')) else pil_rgb(im)
          im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
        im = _upright(im)
        gray = pil_gray(im)
        display = pil_rgb(im) if not im.mode.startswith(('I', 'F')) else gray
        display = display.copy()
        display.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BOX)
        return np.asarray(gray, np.float32), np.asarray(display)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise InputError(f'image too large ({e}); expected at most '
                     f'{Image.MAX_IMAGE_PIXELS:,} pixels') from None
  except Image.UnidentifiedImageError:
    raise InputError(f'not an image; {_EXPECTED_FILE}') from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    raise InputError(f'truncated or corrupt image ({one_line(e)}); expected '
                     'a complete PNG, JPEG, BMP, TIFF or GIF') from None


def sniff(path: str | os.PathLike[str]) -> tuple[str, str]:
  """(kind, what) of a file from its first bytes, whatever its name says.

  kind is 'npy', 'zip', 'image' (PNG, JPEG, GIF, TIFF, BMP), 'other' (a
  known format that is none of these) or '' (unknown); `what` names the
  format for messages ('a PNG image').
  """
  with open(path, 'rb') as f:
    head = f.read(16)
  for magic, kind, what in _SIGNATURES:
    if head.startswith(magic):
      return kind, what
  if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
    return 'other', 'a WebP image'
  return '', ''


def _not_array(message: str) -> InputError:
  return InputError(f'not a readable .npy/.npz array ({message}); '
                    f'{_EXPECTED_ARRAY}')


def _npy_header(fp, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
  """(shape, fortran_order, dtype) of the .npy header at `fp`, checked."""
  try:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
      raise ValueError(f'.npy format version {version[0]}.{version[1]} is '
                       'not supported (1.0 or 2.0)')
  except (ValueError, SyntaxError, EOFError, TypeError) as e:
    raise _not_array(f'{what}: {one_line(e)}' if what else one_line(e)
                     ) from None
  if dtype.kind not in 'biuf' or dtype.fields or dtype.shape:
    raise _not_array(f'{what or "array"} of dtype {dtype}; expected numbers '
                     '(bool, integer or float)')
  if (len(shape) not in (2, 3) or shape[-2:] != (SIZE, SIZE)
      or (len(shape) == 3 and shape[0] < 1)):
    raise InputError(f'{what or "array"} of shape {shape}; expected '
                     '(N, 28, 28) with N >= 1, or (28, 28)')
  return shape, fortran, dtype


def _check_size(shape, dtype, what: str, images: int, nbytes: int
                ) -> tuple[int, int, int]:
  """(images, bytes) of the file with one more array, and the array's
  bytes; refuses the file past the caps."""
  n = shape[0] if len(shape) == 3 else 1
  size = n * SIZE * SIZE * dtype.itemsize  # Python ints: no overflow.
  images, nbytes = images + n, nbytes + size
  if images > MAX_ARRAY_IMAGES or nbytes > MAX_ARRAY_BYTES:
    raise InputError(
        f'{what or "array"} too large: the header declares shape {shape} of '
        f'{dtype} ({size:,} bytes); expected at most {MAX_ARRAY_IMAGES:,} '
        f'images and {MAX_ARRAY_BYTES:,} bytes of data per file')
  return images, nbytes, size


def _read_exact(fp, size: int, what: str, shape) -> bytes:
  chunks, left = [], size
  while left:
    chunk = fp.read(min(left, 1 << 24))
    if not chunk:
      raise InputError(
          f'truncated {what or "array"}: the header declares shape {shape} '
          f'({size:,} bytes of data) but only {size - left:,} bytes follow; '
          'expected a complete NumPy file')
    chunks.append(chunk)
    left -= len(chunk)
  return b''.join(chunks)


def _to_array(data: bytes, shape, fortran: bool, dtype) -> np.ndarray:
  return np.frombuffer(data, dtype).reshape(shape,
                                            order='F' if fortran else 'C')


def _read_npy(path: str) -> list[tuple[str, np.ndarray]]:
  with open(path, 'rb') as f:
    shape, fortran, dtype = _npy_header(f, '')
    _, _, size = _check_size(shape, dtype, '', 0, 0)
    data = _read_exact(f, size, '', shape)
  return [('', _to_array(data, shape, fortran, dtype))]


def _read_npz(path: str) -> list[tuple[str, np.ndarray]]:
  """Checks every member's declared size, then every header, then reads
  the data member by member."""
  try:
    with zipfile.ZipFile(path) as z:
      infos = [i for i in z.infolist() if not i.is_dir()]
      if not infos:
        raise InputError('.npz holds no arrays; expected one of shape '
                         '(N, 28, 28) or (28, 28)')
      declared = 0
      for info in infos:
        what = f'member {info.filename!r}'
        if not info.filename.endswith('.npy'):
          raise _not_array(f'{what} is not a .npy array')
        declared += info.file_size
        if declared > MAX_ARRAY_BYTES + len(infos) * _MAX_NPY_HEADER:
          before = (f' ({declared:,} with the members before it)'
                    if declared > info.file_size else '')
          raise InputError(
              f'{what} would decompress to {info.file_size:,} bytes{before}; '
              f'expected at most {MAX_ARRAY_BYTES:,} bytes of data per file')
      headers, images, nbytes = [], 0, 0
      for info in infos:  # Every header (a few hundred bytes inflated) ...
        key = info.filename[:-len('.npy')]
        what = f'array {key!r}' if len(infos) > 1 else ''
        with z.open(info) as fp:
          shape, fortran, dtype = _npy_header(fp, what)
          start = fp.tell()
        images, nbytes, size = _check_size(shape, dtype, what, images, nbytes)
        headers.append((info, key, what, start, shape, fortran, dtype, size))
      out = []
      for info, key, what, start, shape, fortran, dtype, size in headers:
        with z.open(info) as fp:  # ... before any data.
          fp.read(start)
          data = _read_exact(fp, size, what, shape)
        out.append((key, _to_array(data, shape, fortran, dtype)))
      return out
  except (OSError, EOFError, RuntimeError, NotImplementedError,
          zipfile.BadZipFile, zipfile.LargeZipFile) as e:
    raise _not_array(one_line(e)) from None


def read_arrays(path: str | os.PathLike[str]) -> list[tuple[str, np.ndarray]]:
  """(name, (28, 28) array) per image of a .npy or .npz file.

  The format is the content's (`sniff`), not the name's. A (28, 28) array is
  one image named by the path; a (N, 28, 28) array gives `path[i]`. In an
  .npz with several arrays the names are `path:key[i]`. Headers and sizes
  are checked before data is read (see the module docstring).

  Raises:
    InputError: unreadable file, wrong shapes or dtypes, too large, no
      images.
  """
  name = str(path)
  kind, what = sniff(path)
  try:
    if kind == 'npy':
      arrays = _read_npy(name)
    elif kind == 'zip':
      arrays = _read_npz(name)
    else:
      raise _not_array(f'the content is {what}' if what else
                       'no NumPy or ZIP header at the start')
  except OSError as e:
    raise _not_array(one_line(e.strerror or e)) from None
  out = []
  for key, a in arrays:
    base = f'{name}:{key}' if len(arrays) > 1 else name
    if a.ndim == 2:
      out.append((base, a))
    else:
      out.extend((f'{base}[{i}]', x) for i, x in enumerate(a))
  return out


def expand(path: str | os.PathLike[str]) -> list[str]:
  """A file as is, or a folder's image and array files, recursively sorted.

  Hidden files and files of other types inside folders are skipped.

  Raises:
    InputError: a missing path or a folder without image or array files.
  """
  if not os.fspath(path):  # pathlib reads '' as '.', the current folder.
    raise InputError('empty path; expected an image, a folder or a .npy/.npz '
                     'array')
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
  try:
    kind, what = sniff(path)
  except OSError as e:
    raise InputError(f'cannot read it ({one_line(e.strerror or e)}); '
                     f'{_EXPECTED_FILE}') from None
  suffix = os.path.splitext(path)[1].lower()
  if suffix in ARRAY_SUFFIXES:
    wanted = 'npy' if suffix == '.npy' else 'zip'
    if kind != wanted and what:
      raise _not_array(f'the name ends in {suffix} but the content is {what}')
  elif suffix in IMAGE_SUFFIXES:
    if kind != 'image':
      raise InputError(
          f'not an image: the name ends in {suffix} but the content is '
          f'{what}; {_EXPECTED_FILE}' if what else
          f'not an image; {_EXPECTED_FILE}')
  elif kind == 'other':  # Other names: read by the content.
    raise InputError(f'not an image: the content is {what}; '
                     f'{_EXPECTED_FILE}')
  if kind in ('npy', 'zip') or suffix in ARRAY_SUFFIXES:
    return [Item(n, to_kmnist(a), _display_array(a))
            for n, a in read_arrays(path)]
  gray, display = read_image(path)
  return [Item(path, to_kmnist(gray), display)]


def _display_array(a: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(to_gray(a)), 0, 255).astype(np.uint8)


def _memory_items(index: int, x: Any) -> list[Item]:
  name = f'<array {index}>'
  if isinstance(x, Image.Image):
    display = pil_rgb(x).copy()
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
  items, errors, total = [], [], (0, 0)
  for index, x in enumerate(as_list(inputs)):
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
        total = _check_total(items, total, path)
    else:
      try:
        items.extend(_memory_items(index, x))
      except InputError as e:
        errors.append((f'<array {index}>', str(e)))
      total = _check_total(items, total, f'<array {index}>')
  return items, errors


def _check_total(items: list[Item], total: tuple[int, int], where: str
                 ) -> tuple[int, int]:
  """(count, bytes) of `items` so far, given those of a shorter prefix;
  `UserError` past `MAX_TOTAL_IMAGES` or `MAX_TOTAL_BYTES`."""
  count, nbytes = total
  nbytes += sum(it.image.nbytes + it.display.nbytes for it in items[count:])
  count = len(items)
  if count > MAX_TOTAL_IMAGES or nbytes > MAX_TOTAL_BYTES:
    raise UserError(
        f'the inputs up to {display_name(where)} hold {count:,} images '
        f'({nbytes:,} bytes); expected at most {MAX_TOTAL_IMAGES:,} images '
        f'and {MAX_TOTAL_BYTES:,} bytes in all: predict them in several runs')
  return count, nbytes


def as_list(inputs: Any) -> Sequence[Any]:
  """`inputs` as a list: one path, array or image becomes a list of one."""
  if isinstance(inputs, (str, os.PathLike, np.ndarray, Image.Image)):
    return [inputs]
  if isinstance(inputs, Iterable):
    return list(inputs)
  raise UserError(f'inputs of type {type(inputs).__name__}; expected paths, '
                  'arrays or PIL images')
