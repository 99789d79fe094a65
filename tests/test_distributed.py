"""Data parallelism over simulated devices and real processes (issue 7).

The device count is fixed when JAX starts, so the 4-device and 2-process
trainings run as `kmnist_jax.main` subprocesses, while this (1-device)
process trains the same config as the reference; the checks read the
workdirs.

They train with SGD: the convolution biases of seed_cnn feed a BatchNorm that
cancels them, so their gradient is rounding noise, which Adam scales up to
full-size steps and would make any two reduction orders disagree there.

Two reduction orders also make the trainings differ at a max pooling whose
two largest inputs are within rounding of each other: the gradient goes to
the one that rounds larger. Over 20 steps that happens a few times, each
moving a few kernel entries by ~2e-5 (jax 0.12.1 reduces across processes
in another order than 0.12.0.1; the flat 6x6 patch of `make_learnable_dir`
made such ties by the thousand: textured=True). So the states are compared
to STATE_TOL; the train losses, which such a tie hardly moves, to TOL.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from kmnist_jax.core import distributed
from kmnist_jax.inference import evaluate
from kmnist_jax.train import loop as train
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness
from test_train import damage, leaves, make_learnable_dir, read_jsonl
from test_train import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TOL = dict(rtol=1e-5, atol=1e-5)
STATE_TOL = dict(rtol=1e-5, atol=1e-4)  # Rounding, and a few max-pool ties.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# The runs' config, on top of configs/seed_cnn.py or test_train.tiny_config.
CONFIG = dict(train_split='train', eval_split='test', num_epochs=2,
              batch_size=32, eval_batch_size=100, optimizer='sgd',
              learning_rate=0.01, log_every_steps=5, write_plots=False)


def _launch(workdir, devices, *extra):
  args = [sys.executable, '-m', 'kmnist_jax.main',
          '--config', str(REPO / 'configs' / 'seed_cnn.py'),
          f'--config.data_dir={workdir.parent / "data"}',
          *[f'--config.{k}={v}' for k, v in CONFIG.items()],
          f'--workdir={workdir}', *extra]
  env = dict(os.environ, JAX_PLATFORMS='cpu', KMNIST_JAX_COMPILATION_CACHE='0',
             PYTHONFAULTHANDLER='1',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _collect(procs, timeout=300) -> list[tuple[int, str]]:
  """(returncode, stderr) of each process, reading their pipes as they run.

  Past `timeout` the ones still running get SIGABRT (their faulthandler
  prints every thread's stack) and the test fails with those stacks.
  """
  deadline = time.monotonic() + timeout
  results, hung = [], []
  for i, p in enumerate(procs):
    try:
      err = p.communicate(timeout=max(1, deadline - time.monotonic()))[1]
    except subprocess.TimeoutExpired:
      hung.append(i)
      continue
    results.append((p.returncode, err))
  if hung:
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGABRT)
    tails = []
    for i in hung:
      try:
        err = procs[i].communicate(timeout=30)[1]
      except subprocess.TimeoutExpired:
        procs[i].kill()
        err = procs[i].communicate()[1]
      tails.append(f'--- process {i} of {len(procs)} ---\n{err[-6000:]}')
    pytest.fail(f'still running after {timeout} s:\n' + '\n'.join(tails))
  return results


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """name -> (workdir, [(returncode, stderr) per process])."""
  root = tmp_path_factory.mktemp('dist')
  make_learnable_dir(root / 'data', textured=True)  # No flat patch.
  port = _free_port()
  two = [f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2']
  procs = {
      'four': [_launch(root / 'four', 4)],
      # 2 processes x 2 devices: a 4-device mesh, 16 examples per process.
      'two_procs': [_launch(root / 'two_procs', 2, *two, f'--process_id={i}')
                    for i in range(2)],
      'bad_batch': [_launch(root / 'bad_batch', 4, '--config.batch_size=30')],
  }
  out = {}
  try:
    harness.fit(tiny_config(root / 'data', **CONFIG),
                             str(root / 'one'))
    out['one'] = (root / 'one', [])
    for name, ps in procs.items():
      out[name] = (root / name, _collect(ps))
  finally:
    for ps in procs.values():
      for p in ps:
        if p.poll() is None:
          p.kill()
  return out


def _finished(runs, name):
  workdir, results = runs[name]
  for rc, err in results:
    assert rc == 0, err[-3000:]
  return workdir


def _train_records(workdir):
  return [r for r in read_jsonl(workdir / 'metrics.jsonl')
          if r['split'] == 'train']


def _assert_same_training(a, b):
  ra, rb = _train_records(a), _train_records(b)
  assert [(r['step'], r['epoch']) for r in ra] == [(10, 1), (20, 2)]
  assert [(r['step'], r['epoch']) for r in rb] == [(10, 1), (20, 2)]
  np.testing.assert_allclose([r['loss'] for r in ra],
                             [r['loss'] for r in rb], **TOL)
  _, _, sa, step_a = evaluate.restore_for_inference(str(a))
  _, _, sb, step_b = evaluate.restore_for_inference(str(b))
  assert step_a == step_b == 20
  for x, y in zip(leaves(sa), leaves(sb)):
    np.testing.assert_allclose(x, y, **STATE_TOL)


def test_four_devices_match_one_device(runs):
  _assert_same_training(_finished(runs, 'one'), _finished(runs, 'four'))


def test_two_processes_match_one_process(runs):
  workdir = _finished(runs, 'two_procs')
  _assert_same_training(_finished(runs, 'one'), workdir)
  # Only process 0 wrote logs and files.
  assert len(os.listdir(workdir / 'tensorboard')) == 1
  assert not [f for f in os.listdir(workdir) if '.tmp' in f]
  (_, err0), (_, err1) = runs['two_procs'][1]
  assert '\nepoch 2/2: train loss' in '\n' + err0  # Plain lines.
  assert 'epoch 2/2: train loss' not in err1


def test_checkpoint_saved_on_four_devices_evaluates_the_same_on_one(runs):
  workdir = _finished(runs, 'four')
  final = read_jsonl(workdir / 'metrics.jsonl')[-1]
  assert final['split'] == 'eval' and final['step'] == 20
  result = harness.evaluate(None, str(workdir))  # This process: 1 device.
  assert jax.device_count() == 1
  assert result['checkpoint_step'] == 20
  assert result['accuracy'] == final['accuracy']
  assert result['loss'] == pytest.approx(final['loss'], rel=1e-5)


def test_batch_size_must_divide_by_device_count(runs):
  workdir, [(rc, err)] = runs['bad_batch']
  assert rc == 2
  assert ('error: config.batch_size=30: must be a multiple of the 4 devices '
          '(1 process(es))') in err
  assert not (workdir / 'checkpoints').exists()


def test_bfloat16_compute_runs_and_learns(tmp_path):
  data_dir = make_learnable_dir(tmp_path / 'data')
  workdir = str(tmp_path / 'w')
  state, m = harness.fit(
      tiny_config(data_dir, num_epochs=2, compute_dtype='bfloat16'), workdir)
  assert m['eval']['accuracy'] > 0.8, m['eval']  # Chance is 0.1.
  assert {str(x.dtype) for x in jax.tree.leaves(state.params)} == {'float32'}
  _, graphdef, restored, _ = evaluate.restore_for_inference(workdir)
  model = nnx.merge(graphdef, restored.params, restored.batch_stats)
  assert model.conv1.dtype == jax.numpy.bfloat16
  result = harness.evaluate(None, workdir)
  assert result['accuracy'] == m['eval']['accuracy']


def test_compute_dtype_is_checked(tmp_path):
  with pytest.raises(UserError, match="compute_dtype='float16': expected one "
                     'of float32, bfloat16'):
    harness.fit(
        tiny_config(tmp_path, compute_dtype='float16'), str(tmp_path / 'w'))


def test_cluster_detection():
  slurm = {'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '8', 'SLURM_PROCID': '3',
           'SLURM_STEP_NODELIST': 'node[01-02]'}
  assert distributed.detect_cluster(slurm) == 'SLURM'
  # The batch script itself (no step) and one-task steps are single process.
  assert distributed.detect_cluster(
      {k: v for k, v in slurm.items() if k != 'SLURM_STEP_NODELIST'}) == ''
  assert distributed.detect_cluster(dict(slurm, SLURM_NTASKS='1')) == ''
  assert distributed.detect_cluster({'OMPI_COMM_WORLD_SIZE': '2'}) == 'Open MPI'
  assert distributed.detect_cluster({}) == ''


@pytest.mark.parametrize('kwargs,match', [
    (dict(coordinator_address='127.0.0.1:1234'),
     'also needs --num_processes, --process_id'),
    (dict(coordinator_address='127.0.0.1:1234', num_processes=2,
          process_id=2), '--process_id=2: expected 0 <= id < '),
    (dict(coordinator_address='localhost', num_processes=2, process_id=0),
     'expected host:port'),
    (dict(coordinator_address='localhost:http', num_processes=2,
          process_id=0), 'expected host:port of process 0, port 1..65535'),
    (dict(coordinator_address=':1234', num_processes=2, process_id=0),
     'expected host:port'),
    (dict(coordinator_address='localhost:70000', num_processes=2,
          process_id=0), 'port 1..65535'),
    (dict(mode='off', num_processes=2), 'contradicts --num_processes'),
    (dict(mode='sometimes'), 'expected one of auto, on, off'),
])
def test_initialize_flag_errors(kwargs, match, monkeypatch):
  for var in ('SLURM_STEP_NODELIST', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  with pytest.raises(UserError, match=match):
    distributed.initialize(**kwargs)


def test_single_process_needs_no_initialize(monkeypatch):
  for var in ('SLURM_STEP_NODELIST', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  assert distributed.initialize('auto') is False
  assert distributed.initialize('off') is False
  assert distributed.is_main() and not distributed.any_process(False)


def _wait_ok(procs) -> list[str]:
  """Waits for the processes; each must exit 0. Returns their stderr."""
  try:
    results = _collect(procs)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for rc, err in results:
    assert rc == 0, err[-3000:]
  return [err for _, err in results]


def test_knn_with_two_processes_locks_and_writes_once(tmp_path):
  """The k-NN fit takes the workdir lock on process 0 only, and only
  process 0 writes its files, as training does (two processes on one
  workdir used to fight over the lock)."""
  make_learnable_dir(tmp_path / 'data')
  workdir = tmp_path / 'knn'
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', KMNIST_JAX_COMPILATION_CACHE='0',
             PYTHONFAULTHANDLER='1')
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'kmnist_jax.main',
       '--config', str(REPO / 'configs' / 'knn.py'),
       f'--config.data_dir={tmp_path / "data"}', '--config.train_split=train',
       '--config.eval_split=test', f'--workdir={workdir}',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}'], env=env, cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  _wait_ok(procs)
  records = read_jsonl(workdir / 'metrics.jsonl')
  assert [(r['split'], r['step']) for r in records] == [('eval', 0)]
  assert records[0]['accuracy'] > 0.9  # The learnable data is easy.
  assert len(os.listdir(workdir / 'tensorboard')) == 1
  assert sorted(os.listdir(workdir)) == [
      '.lock', 'config.json', 'knn_model.npz', 'metrics.jsonl', 'tensorboard']


def test_two_processes_fall_back_past_an_unreadable_checkpoint(runs):
  """Both processes resume from the same, older step and set the damaged
  one aside once; the run then ends as an uninterrupted one."""
  done = _finished(runs, 'two_procs')
  workdir = done.parent / 'two_procs_damaged'
  shutil.copytree(done, workdir)
  ckpts = workdir / 'checkpoints'
  assert sorted(os.listdir(ckpts)) == ['10', '20']
  damage(ckpts / '20')
  port = _free_port()
  procs = [_launch(workdir, 2, f'--coordinator_address=127.0.0.1:{port}',
                   '--num_processes=2', f'--process_id={i}')
           for i in range(2)]
  errs = _wait_ok(procs)
  assert 'Resuming from step 10: the newer checkpoint(s) 20 were ' \
         'unreadable' in errs[0]
  assert sorted(os.listdir(workdir / 'unreadable_checkpoints')) == ['20']
  _assert_same_training(_finished(runs, 'one'), workdir)


def test_one_checkpoint_evaluates_alike_on_one_two_and_four_devices(runs,
                                                                    tmp_path):
  """The eval of one checkpoint does not depend on the device count (up to
  float32 summation order). Trainings on 1 and 4 devices differ by float
  rounding only (gradient and BatchNorm sums reduced in another order),
  which 20 SGD steps carry into the eval loss at 1e-4: that is the training,
  not the eval."""
  source = _finished(runs, 'four')
  losses = {}
  for devices in (1, 2, 4):
    workdir = tmp_path / f'eval{devices}'
    shutil.copytree(source, workdir)
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               KMNIST_JAX_COMPILATION_CACHE='0',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    proc = subprocess.run(
        [sys.executable, '-m', 'kmnist_jax.main', '--mode', 'eval',
         f'--workdir={workdir}'], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result, = [json.loads(p.read_text()) for p in workdir.glob('eval_*.json')]
    assert result['checkpoint_step'] == 20
    losses[devices] = result['loss']
  assert losses[1] == pytest.approx(losses[2], rel=1e-5, abs=1e-5)
  assert losses[1] == pytest.approx(losses[4], rel=1e-5, abs=1e-5)
