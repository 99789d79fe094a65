"""A fresh clone with no data and no network: one line naming every missing
file, the data-folder route and the offline proxy."""

import os
import pathlib
import subprocess
import sys

from kmnist_jax.config import base as configlib
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.data import check as datacheck

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ['kmnist-train-imgs.npz', 'kmnist-train-labels.npz']
TEST = ['kmnist-test-imgs.npz', 'kmnist-test-labels.npz']


def _offline_run(tmp_path, config):
  env = {k: v for k, v in os.environ.items() if not k.startswith('KMNIST_JAX_')}
  env.update(PYTHONPATH=str(ROOT), KMNIST_JAX_COMPILATION_CACHE='0',
             KMNIST_JAX_DATA_DIR=str(tmp_path / 'data'),
             KMNIST_JAX_MIRROR='http://127.0.0.1:9/',  # Closed: no network.
             KMNIST_JAX_MIRROR_ONLY='1')
  return subprocess.run(
      [sys.executable, '-m', 'kmnist_jax.main', '--config', config,
       '--workdir', str(tmp_path / 'w')], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300, check=False)


def test_the_missing_files_of_every_split_are_found_at_once(tmp_path):
  c = configlib.base_config()
  assert datacheck.needed_splits(c) == ['train', 'test']
  info = data_lib.get_info('kmnist')
  assert [f.name for f in datacheck.missing_files(
      info, ['train', 'test'], tmp_path)] == TRAIN + TEST
  (tmp_path / TEST[0]).write_bytes(b'x')
  assert [f.name for f in datacheck.missing_files(
      info, ['train', 'test'], tmp_path)] == TRAIN + TEST[1:]


def test_no_data_no_network_is_one_line_naming_every_file(tmp_path):
  proc = _offline_run(tmp_path, 'configs/seed_cnn.py')
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  line = errors[0]
  assert line.startswith(f'error: missing data: {", ".join(TRAIN + TEST)} '
                         f'not in {tmp_path / "data"} and cannot be '
                         'downloaded ('), line
  assert 'set KMNIST_JAX_DATA_DIR to a folder holding them' in line
  assert ('train the offline proxy, the same --config with :proxy (e.g. '
          f'configs/default.py:proxy), which needs only {", ".join(TEST)}'
          ) in line
