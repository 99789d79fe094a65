"""Image reading and KMNIST-convention preprocessing (no model needed)."""

import io
import os
import resource
import struct
import zipfile
import zlib

from hypothesis import given, settings, strategies as st
import numpy as np
from PIL import Image
import pytest

from kmnist_jax.data import datasets as data
from kmnist_jax.inference import prediction_inputs as inputs
from kmnist_jax.inference import framing as preprocess
from kmnist_jax.inference.framing import InputError


def glyph(seed=0, h=28, w=20) -> np.ndarray:
  """A 28x28 white-on-black 'character': strokes spanning an h x w box."""
  rng = np.random.default_rng(seed)
  g = np.zeros((28, 28), np.uint8)
  top, left = (28 - h) // 2, (28 - w) // 2
  g[top:top + h, left + w // 2 - 1:left + w // 2 + 2] = 255  # Vertical.
  r = top + rng.integers(3, h - 3)
  g[r - 1:r + 2, left:left + w] = 230  # Horizontal.
  g[top:top + 3, left:left + w // 3] = 200
  return g


def scan(img: np.ndarray, rng, size=(200, 260), scale=6.0,
         paper=(240, 228, 200), noise=6.0) -> np.ndarray:
  """Dark ink on tinted paper: inverted, upscaled, off-centre, noisy RGB."""
  side = int(28 * scale)
  ink = np.asarray(Image.fromarray(img).resize(
      (side, side), Image.Resampling.BICUBIC), np.float32) / 255
  w, h = size
  canvas = np.zeros((h, w), np.float32)
  y, x = rng.integers(4, h - side - 3), rng.integers(4, w - side - 3)
  canvas[y:y + side, x:x + side] = np.clip(ink, 0, 1)
  paper = np.asarray(paper, np.float32) * rng.uniform(0.92, 1.0)
  rgb = (paper * (1 - canvas[..., None])
         + np.array([30, 25, 40], np.float32) * canvas[..., None])
  rgb += rng.normal(0, noise, rgb.shape)
  return np.clip(rgb, 0, 255).astype(np.uint8)


def ink_box(img, frac=0.25):
  m = img > frac * img.max()
  rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
  return rows[0], rows[-1], cols[0], cols[-1]


def test_28x28_white_on_black_passes_through_unchanged():
  rng = np.random.default_rng(0)
  for img in [glyph(1), rng.integers(0, 60, (28, 28), dtype=np.uint8)]:
    np.testing.assert_array_equal(preprocess.to_kmnist(img), img)


def test_28x28_dark_on_light_is_inverted_only():
  img = glyph(2)
  np.testing.assert_array_equal(preprocess.to_kmnist(255 - img), img)
  assert preprocess.is_dark_on_light(255 - img)
  assert not preprocess.is_dark_on_light(img)


def test_scan_is_cropped_inverted_and_framed_like_kmnist():
  img = glyph(3, h=28, w=18)
  out = preprocess.to_kmnist(scan(img, np.random.default_rng(0)))
  assert out.shape == (28, 28) and out.dtype == np.uint8
  top, bottom, left, right = ink_box(out)
  assert (top, bottom) == (0, 27)  # The long side fills the frame.
  assert abs(left - (27 - right)) <= 1  # Centred.
  assert out.max() >= 240 and np.median(out) == 0
  assert np.abs(out.astype(float) - img).mean() < 12


@settings(max_examples=25, deadline=None)
@given(h=st.integers(12, 150), w=st.integers(12, 150),
       canvas_h=st.integers(160, 300), canvas_w=st.integers(160, 300),
       dark_on_light=st.booleans(), data_=st.data())
def test_any_box_is_centred_with_its_long_side_filling_the_frame(
    h, w, canvas_h, canvas_w, dark_on_light, data_):
  y = data_.draw(st.integers(3, canvas_h - h - 3))
  x = data_.draw(st.integers(3, canvas_w - w - 3))
  img = np.zeros((canvas_h, canvas_w), np.uint8)
  img[y:y + h, x:x + w] = 255
  if dark_on_light:
    img = 255 - img
  out = preprocess.to_kmnist(img)
  top, bottom, left, right = ink_box(out, 0.5)
  long_side = max(bottom - top, right - left) + 1
  assert long_side >= 27
  assert abs(top - (27 - bottom)) <= 1 and abs(left - (27 - right)) <= 1


def test_real_kmnist_scans_match_the_originals(real_data_dir):
  images, _ = data.load('kmnist', 'test[8000:8100]', real_data_dir)
  rng = np.random.default_rng(0)
  for img in images[:20]:
    np.testing.assert_array_equal(preprocess.to_kmnist(img), img)
  diffs = [np.abs(preprocess.to_kmnist(scan(img, rng)).astype(float) - img)
           .mean() for img in images]
  # Glyphs whose ink box is smaller than the frame get enlarged; the rest
  # differ by resampling only.
  assert np.median(diffs) < 9 and np.mean(diffs) < 10, np.percentile(
      diffs, [50, 90, 100])


def save(path, array, **kw):
  Image.fromarray(array).save(path, **kw)
  return str(path)


@pytest.mark.parametrize('suffix,kw', [
    ('png', {}), ('jpg', {'quality': 90}), ('bmp', {}), ('tiff', {}),
    ('gif', {})])
def test_formats(tmp_path, suffix, kw):
  img = glyph(4)
  big = np.asarray(Image.fromarray(255 - img).resize((112, 112)))
  path = save(tmp_path / f'x.{suffix}', big, **kw)
  items, errors = inputs.collect(path)
  assert errors == [] and [it.name for it in items] == [path]
  assert np.abs(items[0].image.astype(float) - img).mean() < 12
  assert items[0].display.shape[:2] == (96, 96)


def test_gif_first_frame_rgba_and_16_bit(tmp_path):
  first, second = glyph(5), glyph(6, w=10)
  frames = [Image.fromarray(first), Image.fromarray(second)]
  frames[0].save(tmp_path / 'a.gif', save_all=True, append_images=frames[1:])
  rgba = np.zeros((28, 28, 4), np.uint8)
  rgba[..., 3] = first  # Black ink where opaque, transparent paper.
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'b.png')
  Image.fromarray(first.astype(np.uint16) * 257).save(tmp_path / 'c.png')
  assert Image.open(tmp_path / 'c.png').mode.startswith('I')
  items, errors = inputs.collect([str(tmp_path / n)
                                      for n in ('a.gif', 'b.png', 'c.png')])
  assert errors == []
  for it in items:
    np.testing.assert_array_equal(it.image, first)


def test_huge_images_are_shrunk_and_bombs_refused(tmp_path, monkeypatch):
  img = np.full((3000, 4000), 250, np.uint8)
  img[500:2500, 1500:2500] = 10
  path = save(tmp_path / 'big.jpg', img, quality=90)
  gray, display = inputs.read_image(path)
  assert max(gray.shape) <= inputs.MAX_SIDE
  assert max(display.shape) <= inputs.DISPLAY_SIDE
  out = preprocess.to_kmnist(gray)
  top, bottom, left, right = ink_box(out)
  assert (top, bottom) == (0, 27) and 12 <= right - left + 1 <= 16
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  with pytest.raises(InputError, match=r'image too large .*expected at most '
                     r'1,000 pixels'):
    inputs.read_image(path)


def test_arrays(tmp_path):
  stack = np.stack([glyph(i) for i in range(3)])
  np.save(tmp_path / 'one.npy', stack[0])
  np.save(tmp_path / 'stack.npy', stack)
  np.savez(tmp_path / 'two.npz', a=stack[:2], b=stack[2])
  np.save(tmp_path / 'float.npy', stack[:1].astype(np.float32) / 255)
  items, errors = inputs.collect(
      [str(tmp_path / n) for n in ('one.npy', 'stack.npy', 'two.npz',
                                   'float.npy')])
  assert errors == []
  names = [os.path.basename(it.name) for it in items]
  assert names == ['one.npy', 'stack.npy[0]', 'stack.npy[1]', 'stack.npy[2]',
                   'two.npz:a[0]', 'two.npz:a[1]', 'two.npz:b',
                   'float.npy[0]']
  expected = [0, 0, 1, 2, 0, 1, 2, 0]
  for it, k in zip(items, expected):
    np.testing.assert_array_equal(it.image, stack[k])


def test_in_memory_inputs():
  img = glyph(7)
  items, errors = inputs.collect(
      [img, np.stack([img, img]), Image.fromarray(255 - img),
       np.dstack([255 - img] * 3), np.zeros((5, 5, 5))])
  assert [it.name for it in items] == [
      '<array 0>', '<array 1>[0]', '<array 1>[1]', '<array 2>', '<array 3>']
  for it in items:
    np.testing.assert_array_equal(it.image, img)
  assert errors == [('<array 4>', 'array of shape (5, 5, 5); expected one '
                     'image (H, W) or (H, W, 3)')]


def test_folders_are_walked_recursively_in_sorted_order(tmp_path):
  img = glyph(8)
  (tmp_path / 'd' / 'b').mkdir(parents=True)
  (tmp_path / 'd' / '.hidden').mkdir()
  for name in ('d/b/2.png', 'd/b/1.png', 'd/a.png', 'd/c.PNG',
               'd/.hidden/x.png', 'd/.y.png'):
    save(tmp_path / name, img)
  (tmp_path / 'd' / 'notes.txt').write_text('not an image')
  items, errors = inputs.collect(str(tmp_path / 'd'))
  assert errors == []
  assert [os.path.relpath(it.name, tmp_path) for it in items] == [
      'd/a.png', 'd/b/1.png', 'd/b/2.png', 'd/c.PNG']


def test_bad_inputs_get_one_message_each_and_others_still_load(tmp_path):
  img = glyph(9)
  good = save(tmp_path / 'good.png', img)
  (tmp_path / 'zero.png').write_bytes(b'')
  (tmp_path / 'text.png').write_text('hello')
  save(tmp_path / 'full.png', np.zeros((300, 300), np.uint8))
  truncated = (tmp_path / 'full.png').read_bytes()
  (tmp_path / 'cut.png').write_bytes(truncated[:len(truncated) // 2])
  save(tmp_path / 'blank.png', np.full((60, 80), 200, np.uint8))
  np.save(tmp_path / 'shape.npy', np.zeros((2, 27, 28), np.uint8))
  np.save(tmp_path / 'none.npy', np.zeros((0, 28, 28), np.uint8))
  np.save(tmp_path / 'nan.npy', np.full((28, 28), np.nan))
  (tmp_path / 'bad.npz').write_bytes(b'PK\x03\x04garbage')
  (tmp_path / 'empty_dir').mkdir()
  names = ['zero.png', 'text.png', 'cut.png', 'blank.png', 'shape.npy',
           'none.npy', 'nan.npy', 'bad.npz', 'empty_dir', 'missing.png']
  paths = [str(tmp_path / n) for n in names]
  items, errors = inputs.collect(paths[:5] + [good] + paths[5:])
  assert [it.name for it in items] == [good]
  assert [e[0] for e in errors] == paths
  messages = dict(zip(names, (m for _, m in errors)))
  expected = {
      'zero.png': 'empty file (0 bytes); expected an image',
      'text.png': 'not an image; expected an image (PNG, JPEG',
      'cut.png': 'truncated or corrupt image (',
      'blank.png': 'no ink found (the image is uniform)',
      'shape.npy': 'array of shape (2, 27, 28); expected (N, 28, 28) with '
                   'N >= 1, or (28, 28)',
      'none.npy': 'array of shape (0, 28, 28); expected (N, 28, 28)',
      'nan.npy': 'array holds NaN or infinite values',
      'bad.npz': 'not a readable .npy/.npz array (',
      'empty_dir': 'folder without images; expected image files (.png',
      'missing.png': 'no such file or folder; expected an image, a folder',
  }
  for name, start in expected.items():
    assert messages[name].startswith(start), (name, messages[name])
    assert '\n' not in messages[name]


def test_zero_size_image():
  with pytest.raises(InputError, match=r'empty image \(0x5\)'):
    preprocess.to_kmnist(np.zeros((0, 5), np.uint8))


# --------------------------------------------- content that lies about itself


def npy_bytes(shape, descr='|u1', data=b'') -> bytes:
  """A .npy header declaring `shape` of `descr`, then `data` (any length)."""
  out = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      out, {'descr': descr, 'fortran_order': False, 'shape': shape})
  return out.getvalue() + data


def zip_bomb(path, n: int) -> int:
  """An .npz whose one member, arr_0.npy, inflates to (n, 28, 28) uint8 of
  zeros (n * 784 a multiple of 1 MiB); returns the inflated size.

  One deflated MiB of zeros, ended by a full flush, is repeated: a 3 GiB
  member takes 3 MB and no time to write. The CRC is left 0: a reader that
  got to the end would also find it corrupt.
  """
  mib = 1 << 20
  header = npy_bytes((n, 28, 28))
  assert n * 784 % mib == 0
  c = zlib.compressobj(9, zlib.DEFLATED, -15)
  body = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
  c = zlib.compressobj(9, zlib.DEFLATED, -15)
  chunk = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH)
  body += chunk * (n * 784 // mib) + b'\x03\x00'  # An empty final block.
  size = len(header) + n * 784
  name = b'arr_0.npy'
  local = struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, 0, 8, 0, 0, 0,
                      len(body), size, len(name), 0) + name
  central = struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 20, 20, 0, 8, 0, 0,
                        0, len(body), size, len(name), 0, 0, 0, 0, 0,
                        0) + name
  end = struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 1, 1, len(central),
                    len(local) + len(body), 0)
  with open(path, 'wb') as f:
    f.write(local + body + central + end)
  return size


def lying_inputs(d) -> dict:
  """{file name: words its one message must hold} for files whose content
  is another format than their name says, or whose headers declare more
  than the file holds or a machine could."""
  img = glyph(3)
  png = io.BytesIO()
  Image.fromarray(img).save(png, 'PNG')
  jpeg = io.BytesIO()
  Image.fromarray(img).save(jpeg, 'JPEG')
  npy = io.BytesIO()
  np.save(npy, img)
  npz = io.BytesIO()
  np.savez(npz, img)
  files = {
      'png.npy': png.getvalue(), 'jpeg.npz': jpeg.getvalue(),
      'npz.npy': npz.getvalue(), 'npy.npz': npy.getvalue(),
      'npy.png': npy.getvalue(), 'npz.gif': npz.getvalue(),
      'pdf.jpg': b'%PDF-1.4\n' + bytes(100),
      'huge.npy': npy_bytes((10**12, 28, 28), data=bytes(1000)),
      'overflow.npy': npy_bytes((2**62, 28, 28), '<f8'),
      'short.npy': npy_bytes((5, 28, 28), data=bytes(1000)),
      'negative.npy': npy_bytes((-1, 28, 28)),
      'strings.npy': npy_bytes((28, 28), '<U5', bytes(28 * 28 * 20)),
  }
  for name, blob in files.items():
    (d / name).write_bytes(blob)
  zip_bomb(d / 'bomb.npz', 4 << 20)  # 3.06 GiB of zeros in 3 MB.
  with zipfile.ZipFile(d / 'header_bomb.npz', 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('arr_0.npy', npy_bytes((10**9, 28, 28), data=bytes(10_000)))
  with zipfile.ZipFile(d / 'short_member.npz', 'w') as z:
    z.writestr('a.npy', npy.getvalue())
    z.writestr('b.npy', npy_bytes((3, 28, 28), data=bytes(784)))
  with zipfile.ZipFile(d / 'notes.npz', 'w') as z:
    z.writestr('notes.txt', 'not an array')
  array = 'not a readable .npy/.npz array'
  expected = 'expected a NumPy file of shape (N, 28, 28) or (28, 28)'
  image = 'expected an image (PNG, JPEG, BMP, TIFF, GIF)'
  too_large = ('expected at most 250,000 images and 536,870,912 bytes of '
               'data per file')
  return {
      'png.npy': [array, 'name ends in .npy but the content is a PNG image',
                  expected],
      'jpeg.npz': [array, 'ends in .npz but the content is a JPEG image',
                   expected],
      'npz.npy': [array, 'ends in .npy but the content is a ZIP archive',
                  expected],
      'npy.npz': [array, 'ends in .npz but the content is a NumPy .npy',
                  expected],
      'npy.png': ['not an image: the name ends in .png but the content is a '
                  'NumPy .npy array', image],
      'npz.gif': ['not an image: the name ends in .gif but the content is a '
                  'ZIP archive', image],
      'pdf.jpg': ['not an image', 'the content is a PDF document', image],
      'huge.npy': ['array too large: the header declares shape '
                   '(1000000000000, 28, 28) of uint8 (784,000,000,000,000 '
                   'bytes)', too_large],
      'overflow.npy': ['array too large', f'shape ({2**62}, 28, 28) of '
                       'float64', too_large],
      'short.npy': ['truncated array: the header declares shape (5, 28, 28) '
                    '(3,920 bytes of data) but only 1,000 bytes follow'],
      'negative.npy': ['array of shape (-1, 28, 28); expected (N, 28, 28)'],
      'strings.npy': [array, 'array of dtype <U5; expected numbers'],
      'bomb.npz': ["member 'arr_0.npy' would decompress to 3,288,334,464 "
                   'bytes; expected at most 536,870,912 bytes'],
      'header_bomb.npz': ['array too large: the header declares shape '
                          '(1000000000, 28, 28)', too_large],
      'short_member.npz': ["truncated array 'b': the header declares shape "
                           '(3, 28, 28) (2,352 bytes of data) but only 784'],
      'notes.npz': [array, "member 'notes.txt' is not a .npy array"],
  }


def test_content_that_lies_about_the_file_gets_one_message(tmp_path):
  """Formats told by content, shapes and sizes checked from the headers
  before the data is read (the 3 GiB bomb costs no memory), one message per
  file, and the good input still loads."""
  cases = lying_inputs(tmp_path)
  good = save(tmp_path / 'good.png', glyph(4))
  names = sorted(cases)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  items, errors = inputs.collect(
      [str(tmp_path / n) for n in names[:5]] + [good] +
      [str(tmp_path / n) for n in names[5:]])
  grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
  assert [it.name for it in items] == [good]
  assert [e[0] for e in errors] == [str(tmp_path / n) for n in names]
  for name, (_, message) in zip(names, errors):
    assert '\n' not in message, message
    for needle in cases[name]:
      assert needle in message, (name, needle, message)
  assert grown < 200 * 1024, f'peak memory grew by {grown // 1024} MiB'


def test_array_caps_count_every_member(tmp_path, monkeypatch):
  monkeypatch.setattr(inputs, 'MAX_ARRAY_IMAGES', 3)
  np.savez(tmp_path / 'two.npz', a=np.stack([glyph(1)] * 2),
           b=np.stack([glyph(2)] * 2))
  np.save(tmp_path / 'three.npy', np.stack([glyph(1)] * 3))
  items, errors = inputs.collect([str(tmp_path / 'two.npz'),
                                      str(tmp_path / 'three.npy')])
  assert [os.path.basename(it.name) for it in items] == [
      'three.npy[0]', 'three.npy[1]', 'three.npy[2]']
  assert errors == [(str(tmp_path / 'two.npz'),
                     "array 'b' too large: the header declares shape "
                     '(2, 28, 28) of uint8 (1,568 bytes); expected at most 3 '
                     'images and 536,870,912 bytes of data per file')]


def test_the_content_decides_when_the_name_says_nothing(tmp_path):
  """No suffix or an unknown one: read by content. A JPEG named .png and a
  Fortran-ordered .npy are fine too."""
  img = glyph(5)
  Image.fromarray(img).save(tmp_path / 'scan', 'PNG')
  Image.fromarray(img).save(tmp_path / 'photo.png', 'JPEG', quality=95)
  with open(tmp_path / 'array.bin', 'wb') as f:
    np.save(f, np.stack([img, 255 - img]))
  with open(tmp_path / 'arrays.zip', 'wb') as f:
    np.savez(f, x=img)
  np.save(tmp_path / 'fortran.npy', np.asfortranarray(np.stack([img, img.T])))
  names = ['scan', 'photo.png', 'array.bin', 'arrays.zip', 'fortran.npy']
  items, errors = inputs.collect([str(tmp_path / n) for n in names])
  assert errors == []
  assert [os.path.basename(it.name) for it in items] == [
      'scan', 'photo.png', 'array.bin[0]', 'array.bin[1]', 'arrays.zip',
      'fortran.npy[0]', 'fortran.npy[1]']
  np.testing.assert_array_equal(items[0].image, img)
  assert np.abs(items[1].image.astype(float) - img).mean() < 3
  for it, want in zip(items[2:], [img, img, img, img, img.T]):
    np.testing.assert_array_equal(it.image, want)
  assert [inputs.sniff(tmp_path / n)[0] for n in names] == [
      'image', 'image', 'npy', 'zip', 'npy']


@pytest.mark.parametrize('name,shown', [
    ('$x^2$ =1+2 @a -b.png', '$x^2$ =1+2 @a -b.png'),
    ('esc\x1b[31mred.png', 'esc\\x1b[31mred.png'),
    ('two\nlines\r\tx.png', 'two\\nlines\\r\\tx.png'),
    ('bell\x07del\x7fcsi\x9b.png', 'bell\\x07del\\x7fcsi\\x9b.png'),
    ('rtl\u202egnp.exe', 'rtl\\u202egnp.exe'),
    ('line\u2028sep', 'line\\u2028sep'),
    (os.fsdecode(b'latin1-\xe9.png'), 'latin1-\\xe9.png'),
    ('lone\ud800', 'lone\\ud800'),
    ('かな\\back.png', 'かな\\back.png'),
])
def test_display_name_escapes_what_a_terminal_would_obey(name, shown):
  assert inputs.display_name(name) == shown
  shown.encode('utf-8')  # Printable on any UTF-8 terminal.


def test_every_npz_header_is_checked_before_any_data_is_read(tmp_path,
                                                             monkeypatch):
  np.savez(tmp_path / 'x.npz', a=np.stack([glyph(1)] * 2), b=glyph(2)[None],
           c=np.zeros((2, 28, 27), np.uint8))
  reads = []
  read_exact = inputs._read_exact
  monkeypatch.setattr(inputs, '_read_exact',
                      lambda *a: reads.append(a[2]) or read_exact(*a))
  items, errors = inputs.collect(str(tmp_path / 'x.npz'))
  assert items == [] and reads == []
  assert errors == [(str(tmp_path / 'x.npz'), "array 'c' of shape (2, 28, "
                     '27); expected (N, 28, 28) with N >= 1, or (28, 28)')]
  np.savez(tmp_path / 'y.npz', a=np.stack([glyph(1)] * 2), b=glyph(2))
  items, errors = inputs.collect(str(tmp_path / 'y.npz'))
  assert errors == [] and reads == ["array 'a'", "array 'b'"]
  assert [os.path.basename(it.name) for it in items] == [
      'y.npz:a[0]', 'y.npz:a[1]', 'y.npz:b']
  np.testing.assert_array_equal(items[2].image, glyph(2))
