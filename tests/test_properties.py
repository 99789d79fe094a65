"""Property-based tests: the split-string parser and image preprocessing
either give a valid result or one clear `UserError` line, never a crash;
any file name is shown on one printable line and written as one CSV cell.

Extends tests/test_data.py (which covers `parse_split` on any text and
slicing equivalence) with near-miss split strings, any example count, and
the complement property that makes percentage splits lose no example.
"""

import csv
import io
import os
import unicodedata
import warnings

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pandas as pd
from PIL import Image
import pytest

from kmnist_jax.inference import predict
from kmnist_jax.inference import prediction_inputs as inputs
from kmnist_jax.inference import framing as preprocess
from kmnist_jax.data import splits
from kmnist_jax.core.errors import UserError

pytestmark = pytest.mark.filterwarnings(
    'ignore:(Truncated File Read|Corrupt EXIF):UserWarning')
_SETTINGS = hypothesis.settings(max_examples=200, deadline=None)

_NUMBER = st.one_of(st.integers(-10**13, 10**13), st.integers(-120, 120))
_BOUND_TEXT = st.one_of(
    st.just(''), _NUMBER.map(str), _NUMBER.map(lambda v: f'{v}%'),
    st.text('0123456789-%+. e', max_size=6))
_SPLIT = st.builds(
    lambda base, open_, a, sep, b, close: f'{base}{open_}{a}{sep}{b}{close}',
    st.sampled_from(['train', 'test', 'trian', 'Test', 'validation', '',
                     ' train', 'train ']),
    st.sampled_from(['[', '', '(', '[[']), _BOUND_TEXT,
    st.sampled_from([':', '', '::', ',']), _BOUND_TEXT,
    st.sampled_from([']', '', ')', ']]']))


@_SETTINGS
@hypothesis.given(_SPLIT, st.integers(0, 10**6))
def test_resolve_split_gives_rows_or_one_clear_line(split, n):
  try:
    rows = splits.resolve_split(split, n)
  except UserError as error:
    message = str(error)
    assert '\n' not in message
    assert repr(split) in message, message
    assert 'expected' in message, message
    return
  assert 0 <= rows.start < rows.stop <= n


@_SETTINGS
@hypothesis.given(st.sampled_from(['train', 'test']), st.integers(1, 99),
                  st.integers(1, 300_000))
def test_percent_splits_are_complementary(base, percent, n):
  """`x[:k%]` and `x[k%:]` split every example into exactly one side."""
  try:
    head = splits.resolve_split(f'{base}[:{percent}%]', n)
    tail = splits.resolve_split(f'{base}[{percent}%:]', n)
  except UserError as error:
    assert 'selects no examples' in str(error)  # One side rounds to empty.
    return
  assert (head.start, head.stop, tail.start, tail.stop) == (
      0, tail.start, head.stop, n)


def _assert_kmnist(image):
  assert image.dtype == np.uint8 and image.shape == (28, 28)


def _assert_clear(error):
  message = str(error)
  assert '\n' not in message and 'expected' in message, message


_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.bool_,
                           np.float16, np.float32, np.float64])
_ARRAYS = st.one_of(
    hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0,
                                         max_side=70)),
    hnp.arrays(_DTYPES, st.tuples(st.integers(1, 40), st.integers(1, 40),
                                  st.sampled_from([1, 2, 3, 4]))),
    hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6)),
    hnp.arrays(np.uint8, st.just((28, 28))))


@_SETTINGS
@hypothesis.given(_ARRAYS)
def test_to_kmnist_any_array(array):
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', RuntimeWarning)  # float16 overflow.
      image = preprocess.to_kmnist(array)
  except UserError as error:
    _assert_clear(error)
  else:
    _assert_kmnist(image)


_MODES = st.sampled_from(['L', 'RGB', 'RGBA', 'LA', 'P', '1', 'I;16', 'I',
                          'F', 'CMYK'])
_FORMATS = st.sampled_from(['PNG', 'TIFF', 'BMP', 'GIF', 'JPEG'])


def _encode(mode, fmt, pixels):
  """An image of `mode` from uint8 pixels, encoded as `fmt` (None if the
  format cannot hold the mode)."""
  base = Image.fromarray(pixels, 'L')
  if mode in ('I;16', 'I', 'F'):
    dtype = {'I;16': np.uint16, 'I': np.int32, 'F': np.float32}[mode]
    im = Image.fromarray((pixels.astype(np.uint16) * 257).astype(dtype))
  else:
    im = base.convert(mode)
  buffer = io.BytesIO()
  try:
    im.save(buffer, fmt)
  except (OSError, ValueError, KeyError):
    return None
  return buffer.getvalue()


@_SETTINGS
@hypothesis.given(_MODES, _FORMATS,
                  hnp.arrays(np.uint8, st.tuples(st.integers(1, 60),
                                                 st.integers(1, 60))),
                  st.one_of(st.none(), st.floats(0, 1)), st.binary(max_size=8))
def test_image_files_any_mode_truncated_or_garbled(tmp_path_factory, mode,
                                                   fmt, pixels, cut, junk):
  """Encoded images of any mode, whole, truncated or with junk appended."""
  blob = _encode(mode, fmt, pixels)
  hypothesis.assume(blob is not None)
  if cut is not None:
    blob = blob[:int(len(blob) * cut)]
  path = tmp_path_factory.mktemp('img') / f'x.{fmt.lower()}'
  path.write_bytes(blob + junk)
  items, errors = inputs.collect([str(path)])
  assert len(items) + len(errors) == 1
  for item in items:
    _assert_kmnist(item.image)
  for name, message in errors:
    assert name == str(path)
    _assert_clear(message)


@_SETTINGS
@hypothesis.given(st.binary(max_size=300),
                  st.sampled_from(['.png', '.jpg', '.npy', '.npz', '.gif']))
def test_random_bytes_under_any_suffix(tmp_path_factory, blob, suffix):
  path = tmp_path_factory.mktemp('bytes') / f'x{suffix}'
  path.write_bytes(blob)
  items, errors = inputs.collect([str(path)])
  for item in items:
    _assert_kmnist(item.image)
  for _, message in errors:
    _assert_clear(message)
  assert items or errors


# ------------------------------------------------- file names as data


_NAMES = st.one_of(
    st.text(max_size=12),
    st.text(st.sampled_from('=+-@$\t\r\n\x1b\x07\x7f\x9b\u202e\u2028 a,"\'\\'),
            max_size=8),
    st.binary(max_size=8).map(os.fsdecode))  # Not UTF-8: surrogateescape.
_UNSAFE = ('Cc', 'Cf', 'Cs', 'Zl', 'Zp')


@_SETTINGS
@hypothesis.given(_NAMES)
def test_display_name_is_one_printable_line(name):
  shown = inputs.display_name(name)
  shown.encode('utf-8')  # No surrogate left: prints on any UTF-8 terminal.
  assert not [c for c in shown if unicodedata.category(c) in _UNSAFE], shown
  if not [c for c in name if unicodedata.category(c) in _UNSAFE]:
    assert shown == name


@_SETTINGS
@hypothesis.given(st.lists(_NAMES, min_size=1, max_size=5))
def test_csv_gives_back_one_row_per_name(tmp_path_factory, names):
  """Any names: the CSV parses to the same rows; a cell never starts a
  spreadsheet formula; UTF-8 names not starting one are kept exactly."""
  table = pd.DataFrame({'path': names, 'top1_prob': np.linspace(0, 1,
                                                                len(names))})
  path = tmp_path_factory.mktemp('csv') / 'p.csv'
  predict.write_csv(table, str(path))
  with open(path, encoding='utf-8', newline='') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['path', 'top1_prob'] and len(rows) == len(names) + 1
  cells = [r[0] for r in rows[1:]]
  assert cells == [predict.csv_cell(n) for n in names]
  assert not [c for c in cells if c.startswith(('=', '+', '-', '@', '\t',
                                                '\r'))]
  for name, cell in zip(names, cells):
    if not name.startswith(('=', '+', '-', '@', '\t', '\r')) and not [
        c for c in name if unicodedata.category(c) == 'Cs']:
      assert cell == name
  assert [float(r[1]) for r in rows[1:]] == pytest.approx(
      table['top1_prob'].tolist(), abs=1e-6)
