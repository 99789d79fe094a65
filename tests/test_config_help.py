"""Config discovery: `--show_config` and the variants in `--help`."""

import os
import pathlib
import subprocess
import sys

from kmnist_jax import config_help
from kmnist_jax.config import base as configlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _main(*args):
  return subprocess.run(
      [sys.executable, '-m', 'kmnist_jax.main', *args], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
      text=True, check=False)


def test_every_base_field_has_a_meaning():
  fields = set(configlib.base_config().keys()) | {
      f'{name}.{key}' for name, make in configlib.SLICES.items()
      for key in make().keys()}
  assert fields - set(config_help.FIELDS) == set()
  assert set(config_help.FIELDS) - fields == set()


def test_show_config_prints_the_resolved_fields_and_exits():
  proc = _main('--config', 'configs/seed_cnn.py:proxy',
               '--config.num_epochs=3', '--show_config')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0] == (f'# configs/seed_cnn.py:proxy: {len(lines) - 1} fields; '
                      'override any with --config.FIELD=VALUE')
  by_name = {l.split(' = ')[0]: l for l in lines[1:]}
  assert set(by_name) == set(configlib.base_config().keys())
  assert by_name['num_epochs'].split('#')[0].strip() == 'num_epochs = 3'
  assert by_name['num_epochs'].endswith('# passes over train_split.')
  assert "train_split = 'test[:8000]'" in by_name['train_split']
  assert "model = 'seed_cnn'" in by_name['model']
  assert 'One of: ' in by_name['model'] and 'seed_cnn' in (
      by_name['model'].split('One of: ')[1])
  assert not os.path.exists(ROOT / 'workdirs' / 'show_config')


def test_show_config_without_config_is_one_line():
  proc = _main('--show_config')
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: --show_config needs --config, e.g. --config '
      'configs/default.py:proxy --show_config']


def test_help_names_the_variants_and_show_config():
  proc = _main('--help')
  assert proc.returncode == 1, proc.stderr  # absl's --help exits 1.
  text = ' '.join(proc.stdout.split())
  assert 'configs/<exp>.py:proxy (the offline proxy' in text
  assert 'configs/<exp>.py:smoke (2 train steps' in text
  assert '--show_config' in text
