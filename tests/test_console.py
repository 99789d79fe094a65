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


def test_orphaned_read_errors_after_a_failed_restore_are_not_printed():
  """asyncio reports a failed future nobody awaited (Orbax's other reads of
  a checkpoint whose restore already failed) with a traceback; the CLI's
  filter drops that report and nothing else."""
  import asyncio  # pylint: disable=g-import-not-at-top
  import gc  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  from kmnist_jax import main  # pylint: disable=g-import-not-at-top

  def orphan():
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    future.set_exception(ValueError('Error reading byte range'))
    del future
    gc.collect()
    loop.close()

  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logger = logging.getLogger('asyncio')
  logger.addHandler(handler)
  try:
    orphan()
    assert ['exception was never retrieved' in r.getMessage()
            for r in records] == [True]
    logger.addFilter(main._orphan_read)  # pylint: disable=protected-access
    records.clear()
    orphan()
    logger.error('another asyncio error')
    assert [r.getMessage() for r in records] == ['another asyncio error']
  finally:
    logger.removeHandler(handler)
    logger.removeFilter(main._orphan_read)  # pylint: disable=protected-access
