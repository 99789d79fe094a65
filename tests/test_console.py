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
  # Our own line (plain, no absl prefix) and the error stay; JAX's INFO
  # lines go.
  assert '\nJAX process 0/1, devices:' in '\n' + default
  assert 'main.py' not in default
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
  from kmnist_jax import cli  # pylint: disable=g-import-not-at-top
  from kmnist_jax import main  # pylint: disable=g-import-not-at-top,unused-import

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
  # An in-process main.main() earlier in this worker left its filter on.
  installed = [f for f in logger.filters if f is cli.orphan_read]
  for f in installed:
    logger.removeFilter(f)
  logger.addHandler(handler)
  try:
    orphan()
    assert ['exception was never retrieved' in r.getMessage()
            for r in records] == [True]
    logger.addFilter(cli.orphan_read)
    records.clear()
    orphan()
    logger.error('another asyncio error')
    assert [r.getMessage() for r in records] == ['another asyncio error']
  finally:
    logger.removeHandler(handler)
    logger.removeFilter(cli.orphan_read)
    for f in installed:
      logger.addFilter(f)


SMOKE = ('--config', 'configs/seed_cnn.py:smoke', '--config.num_epochs=2')
BAR = '|' + '█' * 24 + '|'  # A finished bar.


def _train_env():
  return dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0', PYTHONPATH=ROOT)


def _read_pty(fd) -> bytes:
  import select  # pylint: disable=g-import-not-at-top
  out = b''
  while select.select([fd], [], [], 120)[0]:
    try:
      data = os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal.
      break
    if not data:
      break
    out += data
  return out


def test_training_on_a_terminal_shows_bars_and_a_summary(real_data_dir,
                                                         tmp_path):
  import pty  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'w'
  pid, fd = pty.fork()
  if pid == 0:  # The child: stdin, stdout and stderr are the terminal.
    os.chdir(ROOT)
    os.execve(sys.executable, [sys.executable, '-m', 'kmnist_jax.main',
                               *SMOKE, '--workdir', str(workdir)],
              _train_env())
  out = _read_pty(fd).decode('utf-8', 'replace')
  _, status = os.waitpid(pid, 0)
  os.close(fd)
  assert os.waitstatus_to_exitcode(status) == 0, out
  # Bars with rate and ETA, for the epochs and the evals.
  assert f'\repoch 1/2 {BAR} 2/2 [' in out and ' step/s]' in out, out
  assert f'\reval {BAR} 1/1 [' in out and ' batch/s]' in out, out
  lines = [l.split('\r')[-1] for l in out.replace('\x1b[K', '').splitlines()]
  assert 'I1' not in out and 'train.py' not in out  # No absl prefix.
  assert any(l.startswith('epoch 2/2: train loss') for l in lines), lines
  assert any(l.startswith('done: step 4/4 in ') for l in lines), lines
  assert any(l.startswith('  eval test[8000:8064]: final accuracy ')
             and ', best ' in l for l in lines), lines
  assert f'  wrote {workdir}/: checkpoints/, config.json, metrics.jsonl' in (
      out), out


def test_training_without_a_terminal_draws_no_bar_and_ends_complete(
    real_data_dir, tmp_path):
  workdir = tmp_path / 'w'
  cmd = [sys.executable, '-m', 'kmnist_jax.main', *SMOKE,
         '--workdir', str(workdir)]
  first = subprocess.run(cmd, env=_train_env(), cwd=ROOT, capture_output=True,
                         text=True, check=False)
  assert first.returncode == 0, first.stderr
  log = first.stdout + first.stderr
  assert '\r' not in log and '█' not in log and '\x1b' not in log, log
  assert 'step 1/4 (epoch 1/2): ' in log and 'steps/s, ETA ' in log
  assert '\ndone: step 4/4 in ' in log
  # A rerun of the finished run says so, in the same epoch numbering.
  again = subprocess.run(cmd, env=_train_env(), cwd=ROOT, capture_output=True,
                         text=True, check=False)
  assert again.returncode == 0, again.stderr
  assert 'at step 4 (end of epoch 2/2).' in again.stderr
  assert f'already complete: {workdir} has finished all 2 epochs (step 4); ' \
      'nothing to train' in again.stderr
  assert '\nalready complete: step 4/4' in again.stderr
