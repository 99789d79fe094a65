"""The CLI's console: warnings and kmnist_jax's progress; --verbosity the rest."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAX_INFO = "Unable to initialize backend 'tpu'"  # On a machine without a TPU.


def _cli(workdir, *flags):
  env = dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0', JAX_PLATFORMS='',
             PYTHONPATH=ROOT)
  proc = subprocess.run(
      [sys.executable, '-m', 'kmnist_jax.main', '--mode', 'eval',
       '--workdir', str(workdir), *flags],
      env=env, cwd=ROOT, capture_output=True, text=True, check=False)
  assert proc.returncode == 2, proc.stderr
  return proc.stderr


def test_default_console_shows_our_lines_not_jax_info(tmp_path):
  verbose = _cli(tmp_path, '--verbosity=0')
  if JAX_INFO not in verbose:
    pytest.skip('JAX logs no backend it could not start here (a TPU host)')
  default = _cli(tmp_path)
  # Our own progress line and the error stay; JAX's INFO lines go.
  assert 'main.py' in default and 'JAX process 0/1, devices:' in default
  assert f'error: {tmp_path}/config.json: missing' in default
  assert 'Unable to initialize backend' not in default
  assert 'xla_bridge.py' not in default
  # --verbosity brings them back, with everything else.
  assert 'JAX process 0/1, devices:' in verbose
  assert f'error: {tmp_path}/config.json: missing' in verbose
