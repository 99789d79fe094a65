"""Helpers for the fault-injection tests: CLI runs and a reference run."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
RUNNER = pathlib.Path(__file__).resolve().with_name('fault_runner.py')

# seed_cnn on 320 learnable examples: 10 steps per epoch, 80 steps, a
# checkpoint every 4 steps and at each epoch end, 4 eval batches per epoch.
NUM_EPOCHS = 8
STEPS_PER_EPOCH = 10
CHECKPOINT_EVERY = 4
EVAL_BATCHES = 4


CACHE = {'dir': '0'}


@pytest.fixture(scope='session', autouse=True)
def _compilation_cache(tmp_path_factory):
  """One JAX compilation cache per session (per xdist worker): after the
  first run, each subprocess starts in ~3 s instead of compiling again."""
  if CACHE['dir'] == '0':
    CACHE['dir'] = str(tmp_path_factory.mktemp('jax_cache'))


def env() -> dict:
  """Subprocess environment: a fresh per-session compilation cache, the repo
  importable, downloads pointed at a closed local port."""
  return dict(os.environ, KMNIST_JAX_COMPILATION_CACHE=CACHE['dir'],
              PYTHONPATH=str(REPO), KMNIST_JAX_MIRROR='http://127.0.0.1:9/',
              KMNIST_JAX_MIRROR_ONLY='1')


def train_args(data_dir, workdir, **overrides) -> list[str]:
  fields = dict(data_dir=str(data_dir), train_split='train',
                eval_split='test', num_epochs=NUM_EPOCHS, batch_size=32,
                eval_batch_size=64,
                checkpoint_every_steps=CHECKPOINT_EVERY,
                log_every_steps=5, write_plots=False, learning_rate=3e-3)
  fields.update(overrides)
  return ['--config', str(REPO / 'configs' / 'seed_cnn.py'),
          f'--workdir={workdir}'] + [f'--config.{k}={v}'
                                     for k, v in fields.items()]


def run_main(args, timeout=180, **env_vars) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'kmnist_jax.main', *args],
                        cwd=REPO, env=dict(env(), **env_vars),
                        capture_output=True, text=True, timeout=timeout)


def run_fault(kind, n, delay, signame, args,
              timeout=180) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, str(RUNNER), kind, str(n), str(delay), signame, '--',
       *args], cwd=REPO, env=env(), capture_output=True, text=True,
      timeout=timeout)


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(
      (state.step, state.params, state.batch_stats, state.opt_state,
       state.loss_sum, state.correct_sum, state.count))]


def metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return [{k: v for k, v in json.loads(line).items() if k != 'wall_time'}
          for line in path.read_text().splitlines() if line.strip()]


def assert_same_state(a, b, context=''):
  la, lb = leaves(a), leaves(b)
  assert len(la) == len(lb), context
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y, err_msg=context)


@pytest.fixture(scope='session')
def reference(learnable_data_dir, tmp_path_factory) -> pathlib.Path:
  """An uninterrupted run of `train_args`, keeping every checkpoint."""
  workdir = tmp_path_factory.mktemp('faults') / 'reference'
  proc = run_main(train_args(learnable_data_dir, workdir,
                             keep_checkpoints=1000))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def snapshot(*roots) -> dict:
  """{path: (size, mtime_ns, sha256)} of every file under `roots`.

  Skips `.lock`: each training run rewrites its workdir's lock file with
  its pid, which is bookkeeping, not data.
  """
  out = {}
  for root in roots:
    root = pathlib.Path(root)
    paths = [root] if root.is_file() else sorted(root.rglob('*'))
    for path in paths:
      if path.is_file() and path.name != '.lock':
        stat = path.stat()
        out[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(
            path.read_bytes()).hexdigest())
  return out


def error_lines(stderr: str) -> list[str]:
  """The lines a user reads as the error (absl/JAX log lines excluded)."""
  return [l for l in stderr.splitlines() if l.startswith('error:')]


def assert_one_clear_error(proc, *needles):
  """Non-zero exit, exactly one `error:` line holding `needles`, no
  traceback."""
  assert proc.returncode not in (0, None), proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = error_lines(proc.stderr)
  assert len(lines) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]
