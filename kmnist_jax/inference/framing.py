"""The KMNIST frame: any grayscale image to 28x28 white ink on black.

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

Limits: a speck of dirt or a second character far from the first widens the
crop; thin pen strokes stay thinner than KMNIST's brush strokes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageFilter

from kmnist_jax.core.errors import UserError

SIZE = 28
INK_THRESHOLD = 0.25  # Of the ink peak, for the crop box.
MIN_CONTRAST = 16.0  # Ink peak above the background, on the 0-255 scale.


class InputError(UserError):
  """One input cannot be used; the message says what was expected."""


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


def pil_gray(im: Image.Image) -> Image.Image:
  """8-bit grayscale, transparent pixels on white, 16-bit scaled down."""
  if im.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
    a = np.asarray(im, np.float32)
    top = 65535.0 if im.mode.startswith('I;16') or a.max() > 255 else 255.0
    if im.mode == 'F' and a.size and a.max() <= 1:
      top = 1.0
    return Image.fromarray(
        np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8))
  return pil_rgb(im).convert('L')


def pil_rgb(im: Image.Image) -> Image.Image:
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


def to_gray(image: Any) -> np.ndarray:
  """A PIL image or array ((H, W), (H, W, 3|4)) -> float32 (H, W) in 0-255.

  Floating arrays with values in [0, 1] are scaled to 0-255; others must lie
  in [0, 255].
  """
  if isinstance(image, Image.Image):
    return np.asarray(pil_gray(image), np.float32)
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
