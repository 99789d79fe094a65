"""SIGTERM/SIGINT save a checkpoint and exit cleanly; the rerun continues
and equals an uninterrupted run. A second training on a busy workdir is
refused with one clear line and changes nothing."""

import signal
import subprocess
import sys
import time

from kmnist_jax.inference import evaluate

from faults import conftest as fc


def assert_rerun_equals_reference(args, workdir, reference):
  proc = fc.run_main(args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Resumed from' in proc.stderr
  assert fc.metrics(workdir) == fc.metrics(reference)
  _, _, got, _ = evaluate.restore_for_inference(str(workdir))
  _, _, want, _ = evaluate.restore_for_inference(str(reference))
  fc.assert_same_state(got, want)


def test_sigint_mid_epoch_saves_and_rerun_continues(learnable_data_dir,
                                                    reference, tmp_path):
  """Ctrl-C inside a step; SIGTERM from outside is the next test."""
  workdir = tmp_path / 'w'
  args = fc.train_args(learnable_data_dir, workdir)
  # Step 13 is mid-epoch 2 and no periodic checkpoint (every 4 steps).
  proc = fc.run_fault('step', 13, 0, 'INT', args)
  assert proc.returncode == 130, proc.stderr[-3000:]
  assert 'Stopped by SIGINT; checkpoint saved' in proc.stderr
  assert 'Traceback' not in proc.stderr
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps[-1] in (13, 14), steps  # The signal's own checkpoint.
  _, _, got, step = evaluate.restore_for_inference(str(workdir))
  _, _, want, _ = evaluate.restore_for_inference(str(reference), 12)
  assert step == steps[-1]
  assert int(got.step) == step and int(want.step) == 12
  assert_rerun_equals_reference(args, workdir, reference)


def test_second_training_is_refused_then_external_sigterm(
    learnable_data_dir, reference, tmp_path):
  workdir, release = tmp_path / 'w', tmp_path / 'release'
  args = fc.train_args(learnable_data_dir, workdir)
  # A holds inside its 3rd train step (before the first checkpoint at 4).
  log = tmp_path / 'first.log'
  with open(log, 'w') as err:
    first = subprocess.Popen(
        [sys.executable, str(fc.RUNNER), 'hold', '3', str(release), 'KILL',
         '--', *args], cwd=fc.REPO, env=fc.env(), stderr=err, text=True)
  try:
    deadline = time.time() + 120
    while 'fault: holding' not in log.read_text():
      assert first.poll() is None and time.time() < deadline, log.read_text()
      time.sleep(0.1)
    before = fc.snapshot(workdir)
    second = fc.run_main(args)
    line = fc.assert_one_clear_error(
        second, str(workdir), 'another training is running on this workdir',
        f'pid {first.pid}')
    assert second.returncode == 2, line
    assert fc.snapshot(workdir) == before
    # SIGTERM from outside while A is busy, then let it go on.
    first.send_signal(signal.SIGTERM)
    release.touch()
    first.wait(timeout=120)
  finally:
    release.touch()
    if first.poll() is None:
      first.kill()
      first.wait()
  stderr = log.read_text()
  assert first.returncode == 143, stderr[-3000:]  # Interrupted, resumable.
  assert 'Stopped by SIGTERM; checkpoint saved' in stderr
  assert 'fault: holding' in stderr
  assert_rerun_equals_reference(args, workdir, reference)


def _wait_for(log, text, proc, timeout):
  deadline = time.time() + timeout
  while text not in log.read_text():
    assert proc.poll() is None and time.time() < deadline, log.read_text()
    time.sleep(0.01)
  return time.time()


def test_ctrl_c_is_acknowledged_at_once_and_a_second_aborts(
    learnable_data_dir, reference, tmp_path):
  """The first SIGINT is acknowledged within 1 s even while the main thread
  is busy inside a step; a second one ends the process within 5 s without
  saving, and the last complete checkpoint restores and resumes."""
  workdir, release = tmp_path / 'w', tmp_path / 'release'
  args = fc.train_args(learnable_data_dir, workdir)
  log = tmp_path / 'run.log'
  with open(log, 'w') as err:
    proc = subprocess.Popen(
        [sys.executable, str(fc.RUNNER), 'hold', '13', str(release), 'KILL',
         '--', *args], cwd=fc.REPO, env=fc.env(), stderr=err, text=True)
  try:
    _wait_for(log, 'fault: holding', proc, 120)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    acked = _wait_for(log, 'Ctrl-C: stopping after this step; Ctrl-C again '
                      'to abort without saving', proc, 5)
    assert acked - sent < 1.0, acked - sent
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=5)
    assert time.time() - sent < 5
  finally:
    release.touch()
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  stderr = log.read_text()
  assert proc.returncode == 130, stderr[-3000:]
  assert 'aborted by a second Ctrl-C, without saving' in stderr
  assert 'Traceback' not in stderr and 'checkpoint saved' not in stderr
  _, _, got, step = evaluate.restore_for_inference(str(workdir))
  assert step <= 12 and int(got.step) == step  # Step 13 never saved.
  _, _, want, _ = evaluate.restore_for_inference(str(reference), step)
  fc.assert_same_state(got, want)
  assert_rerun_equals_reference(args, workdir, reference)
