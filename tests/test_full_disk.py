"""Issue 35 item 7: a full disk is one line, anywhere the program writes.

Each case runs the CLI on a workdir in a small tmpfs (root only; skipped
otherwise), fills it, and asserts exit 2, one `error:` line naming the
folder, no traceback, and no earlier file changed; once space is freed, the
interrupted training resumes bit-exactly.
"""

import os
import shutil
import subprocess

import jax
import numpy as np
import pytest

from kmnist_jax.inference import evaluate

from faults import conftest as fc

pytestmark = pytest.mark.filterwarnings('ignore::kmnist_jax.data.datasets.DataWarning')

_SIZE = 3 << 20


@pytest.fixture
def disk(tmp_path):
  """A 3 MiB tmpfs, unmounted at the end."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', f'size={_SIZE}', 'tmpfs', str(mount)],
      capture_output=True, check=False).returncode != 0:
    pytest.skip('cannot mount a tmpfs here (needs root)')
  yield mount
  subprocess.run(['umount', '-l', str(mount)], check=False)


def _fill(mount, leave: int = 0):
  """Fills `mount` up to `leave` free bytes."""
  st = os.statvfs(mount)
  size = max(st.f_bavail * st.f_frsize - leave, 0)
  with open(mount / 'fill', 'wb') as f:
    while size > 0:
      chunk = min(size, 1 << 20)
      try:
        f.write(b'\0' * chunk)
        f.flush()
      except OSError:
        break
      size -= chunk


def _args(data_dir, workdir, **fields):
  return fc.train_args(data_dir, workdir, **{
      'num_epochs': 2, 'checkpoint_every_steps': 4, **fields})


@pytest.fixture(scope='module')
def reference(tmp_path_factory, learnable_data_dir):
  workdir = tmp_path_factory.mktemp('full_disk') / 'reference'
  proc = fc.run_main(_args(learnable_data_dir, workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_fresh_workdir_on_a_full_disk(disk, learnable_data_dir):
  _fill(disk)
  proc = fc.run_main(_args(learnable_data_dir, disk / 'w'))
  fc.assert_one_clear_error(proc, f'{disk}/w: no space left on the device; '
                            'free some space and rerun the same command')
  assert proc.returncode == 2


def test_checkpoint_save_on_a_full_disk_then_resume_bit_exactly(
    disk, learnable_data_dir, reference):
  step = reference / 'checkpoints' / '20'
  size = sum(p.stat().st_blocks * 512 for p in step.rglob('*'))
  # Room for one save, never two: checkpoints 4 to 20 differ by about 10%
  # in size (their compressed chunks), and the workdir's other files take
  # about 16 KB; 1.5x the last one let two saves through when the first
  # ones came out smaller.
  _fill(disk, leave=int(1.2 * size) + (32 << 10))
  workdir = disk / 'w'
  proc = fc.run_main(_args(learnable_data_dir, workdir))
  fc.assert_one_clear_error(proc, f'{workdir}: no space left on the device')
  assert proc.returncode == 2 and proc.stderr.count('\n') < 40
  assert sorted(n for n in os.listdir(workdir / 'checkpoints')
                if n.isdigit()) == ['4']
  os.remove(disk / 'fill')
  proc = fc.run_main(_args(learnable_data_dir, workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert fc.metrics(workdir) == fc.metrics(reference)
  _, _, state, step = evaluate.restore_for_inference(str(workdir))
  _, _, expected, _ = evaluate.restore_for_inference(str(reference))
  assert step == 20
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('mode', ['eval', 'predict'])
def test_eval_and_predict_on_a_full_disk(disk, reference, tmp_path, mode):
  workdir = disk / 'w'
  shutil.copytree(reference, workdir)
  for p in workdir.glob('*_test.*'):
    p.unlink()
  image = tmp_path / 'in.npy'
  np.save(image, np.zeros((2, 28, 28), np.uint8))
  _fill(disk)
  before = fc.snapshot(workdir)
  args = [f'--workdir={workdir}', f'--mode={mode}']
  if mode == 'predict':
    args.append(f'--predict_input={image}')
  proc = fc.run_main(args)
  line = fc.assert_one_clear_error(proc, str(workdir))
  assert 'No space left on device' in line or 'no space left' in line
  assert fc.snapshot(workdir) == before


def test_eval_in_a_read_only_folder(disk, reference):
  workdir = disk / 'w'
  shutil.copytree(reference, workdir)
  for p in workdir.glob('*_test.*'):
    p.unlink()
  subprocess.run(['mount', '-o', 'remount,ro', str(disk)], check=True)
  proc = fc.run_main([f'--workdir={workdir}', '--mode=eval'])
  fc.assert_one_clear_error(proc, f'{workdir}: read-only file system; use a '
                            'writable folder')
  assert proc.returncode == 2
