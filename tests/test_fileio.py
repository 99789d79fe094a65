"""kmnist_jax.core.fileio: atomic writes and their permissions; errors.one_line."""

import json
import os
import stat

import pytest

from kmnist_jax.core import errors
from kmnist_jax.core import fileio


def test_write_json_replaces_and_leaves_no_temp_file(tmp_path):
  path = tmp_path / 'r.json'
  fileio.write_json(path, {'a': 1})
  fileio.write_json(path, {'a': 2})
  assert json.loads(path.read_text()) == {'a': 2}
  assert os.listdir(tmp_path) == ['r.json']


def test_error_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
  path = tmp_path / 'r.txt'
  path.write_text('old')
  with pytest.raises(RuntimeError):
    with fileio.atomic_path(path) as tmp:
      with open(tmp, 'w') as f:
        f.write('half')
      raise RuntimeError('disk full')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['r.txt']


def test_permissions_follow_the_umask(tmp_path):
  old = os.umask(0o002)
  try:
    fileio.write_text(tmp_path / 'shared.txt', 'x')
  finally:
    os.umask(old)
  assert stat.S_IMODE((tmp_path / 'shared.txt').stat().st_mode) == 0o664


def test_explicit_mode(tmp_path):
  with fileio.atomic_path(tmp_path / 'lib.so', mode=0o700) as tmp:
    open(tmp, 'wb').close()
  assert stat.S_IMODE((tmp_path / 'lib.so').stat().st_mode) == 0o700


@pytest.mark.parametrize('error,expected', [
    (ValueError('bad\n  value\tthere'), 'bad value there'),
    (KeyError(), 'KeyError'),
    ('plain   text', 'plain text'),
])
def test_one_line(error, expected):
  assert errors.one_line(error) == expected


def test_one_line_limit():
  assert errors.one_line('x' * 500, limit=10) == 'xxxxxxx...'
