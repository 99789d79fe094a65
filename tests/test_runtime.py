"""kmnist_jax.runtime: the compilation cache, environment switches, the console."""

import logging
import os
import stat
import subprocess
import sys

import jax
import pytest

from kmnist_jax import runtime
from kmnist_jax.core import environment
from kmnist_jax.core import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

@pytest.mark.parametrize('value,off', [
    ('0', True), ('false', True), ('OFF', True), ('no', True), ('1', False),
    ('yes', False), ('/some/folder', False)])
def test_switched_off_words(value, off):
  assert environment.switched_off(value) is off


def test_import_needs_only_the_standard_library():
  # The PyTorch benchmark worker imports it in an environment without jax.
  code = ('import sys; sys.path.insert(0, %r); import kmnist_jax.runtime; '
          'print(sorted(m for m in ("jax", "absl", "numpy") '
          'if m in sys.modules))' % ROOT)
  out = subprocess.run([sys.executable, '-c', code], check=True,
                       capture_output=True, text=True)
  assert out.stdout.strip() == '[]'


@pytest.fixture
def jax_config(monkeypatch):
  """Records runtime.setup's jax.config updates instead of applying them."""
  updates = {}
  monkeypatch.setattr(jax.config, 'update', updates.__setitem__)
  monkeypatch.setenv('KMNIST_JAX_MALLOC', '0')  # Not in the test process.
  return updates


def test_compilation_cache_is_created_private(tmp_path, monkeypatch,
                                              jax_config):
  path = tmp_path / 'cache' / 'jax'
  monkeypatch.setenv('KMNIST_JAX_COMPILATION_CACHE', str(path))
  runtime.setup()
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
  assert jax_config['jax_compilation_cache_dir'] == str(path)


def test_a_cache_others_can_write_is_not_used(tmp_path, monkeypatch,
                                              jax_config, caplog):
  shared = tmp_path / 'shared'
  shared.mkdir()
  shared.chmod(0o777)
  monkeypatch.setenv('KMNIST_JAX_COMPILATION_CACHE', str(shared))
  with caplog.at_level(logging.WARNING):
    runtime.setup()
  assert jax_config == {}
  assert f'no compilation cache: {shared} is not a folder of this user' in (
      caplog.text)


def _stat(mode, uid=None):
  uid = os.getuid() if uid is None else uid
  return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize('st, kind, safe', [
    (_stat(stat.S_IFREG | 0o700), stat.S_ISREG, True),
    (_stat(stat.S_IFREG | 0o755), stat.S_ISREG, True),
    (_stat(stat.S_IFREG | 0o720), stat.S_ISREG, False),   # group-writable
    (_stat(stat.S_IFREG | 0o702), stat.S_ISREG, False),   # world-writable
    (_stat(stat.S_IFREG | 0o700, uid=os.getuid() + 1), stat.S_ISREG, False),
    (_stat(stat.S_IFLNK | 0o700), stat.S_ISREG, False),   # a link
    (_stat(stat.S_IFDIR | 0o700), stat.S_ISDIR, True),
    (_stat(stat.S_IFDIR | 0o700, uid=os.getuid() + 1), stat.S_ISDIR, False),
])
def test_private_means_this_users_and_nobody_elses_to_write(st, kind, safe):
  assert fileio.private(st, kind) is safe
