"""`--mode eval` and `--mode predict` as a user sees them: the same default
checkpoint (the latest), said in their output; no Orbax warnings; on a
read-only workdir, the accuracy and one error line."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Makes every write under KMNIST_JAX_TEST_READ_ONLY fail as on a read-only
# mount (EROFS); a test running as root cannot rely on chmod.
_READ_ONLY = '''\
import builtins, errno, os, tempfile
_ROOT = os.path.realpath(os.environ['KMNIST_JAX_TEST_READ_ONLY'])
def _inside(path):
  try:
    return os.path.realpath(os.fspath(path)).startswith(_ROOT + os.sep)
  except TypeError:
    return False
def _refuse(path):
  raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
_mkstemp, _open, _makedirs = tempfile.mkstemp, builtins.open, os.makedirs
def mkstemp(suffix=None, prefix=None, dir=None, text=False):
  if dir is not None and (_inside(dir) or os.path.realpath(dir) == _ROOT):
    _refuse(os.path.join(dir, (prefix or '') + 'XXXX' + (suffix or '')))
  return _mkstemp(suffix, prefix, dir, text)
def open_(file, mode='r', *args, **kwargs):
  if any(c in mode for c in 'wax+') and _inside(file):
    _refuse(file)
  return _open(file, mode, *args, **kwargs)
def makedirs(name, *args, **kwargs):
  if _inside(name) and not os.path.isdir(name):
    _refuse(name)
  return _makedirs(name, *args, **kwargs)
tempfile.mkstemp, builtins.open, os.makedirs = mkstemp, open_, makedirs
'''


def _env(**extra):
  return {**os.environ, 'KMNIST_JAX_COMPILATION_CACHE': '0',
          'PYTHONPATH': str(ROOT), **extra}


def _main(*args, env=None):
  return subprocess.run([sys.executable, '-m', 'kmnist_jax.main', *args],
                        cwd=ROOT, env=env or _env(), capture_output=True,
                        text=True, check=False)


def _no_orbax_warnings(stderr):
  assert 'Given directory is read only' not in stderr, stderr
  assert 'save_interval_steps' not in stderr, stderr
  assert 'checkpoint_manager.py' not in stderr, stderr
  assert not [l for l in stderr.splitlines() if l[:1] in 'WE' and
              l[1:5].isdigit()], stderr  # No absl warning lines at all.


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 3-epoch smoke run: checkpoints at steps 2, 4 and 6."""
  data = pathlib.Path(os.environ.get('KMNIST_JAX_DATA_DIR', '/nonexistent'))
  if not (data / 'kmnist-test-imgs.npz').is_file():
    pytest.skip('real KMNIST files not available: set KMNIST_JAX_DATA_DIR')
  workdir = tmp_path_factory.mktemp('eval_console') / 'w'
  proc = _main('--config', 'configs/seed_cnn.py:smoke',
               '--config.num_epochs=3', '--workdir', str(workdir))
  assert proc.returncode == 0, proc.stderr
  return workdir


def test_eval_and_predict_use_the_same_default_checkpoint(
    trained, real_data_dir, tmp_path):
  ev = _main('--mode', 'eval', '--workdir', str(trained))
  assert ev.returncode == 0, ev.stderr
  _no_orbax_warnings(ev.stderr)
  result = json.loads((trained / 'eval_test_from8000_to8064.json').read_text())
  assert result['checkpoint_step'] == 6  # The latest.
  assert ev.stdout.splitlines()[0] == (
      'kmnist test[8000:8064] (checkpoint step 6, the latest, 64 examples): '
      f'accuracy {result["accuracy"]:.4f}, balanced accuracy '
      f'{result["balanced_accuracy"]:.4f}')
  # Predict the eval split's images, no --checkpoint_step.
  with np.load(real_data_dir / 'kmnist-test-imgs.npz') as f:
    np.save(tmp_path / 'x.npy', f['arr_0'][8000:8064])
  with np.load(real_data_dir / 'kmnist-test-labels.npz') as f:
    labels = f['arr_0'][8000:8064]
  out = tmp_path / 'p.csv'
  pr = _main('--mode', 'predict', '--workdir', str(trained), '--predict_input',
             str(tmp_path / 'x.npy'), '--predict_output', str(out))
  assert pr.returncode == 0, pr.stderr
  _no_orbax_warnings(pr.stderr)
  assert f'wrote {out} (64 predictions, checkpoint step 6, the latest)' in (
      pr.stdout.splitlines())
  with open(out, encoding='utf-8') as f:
    top1 = np.array([int(r['top1_index']) for r in csv.DictReader(f)])
  assert np.mean(top1 == labels) == result['accuracy']


def test_eval_of_a_read_only_workdir_prints_the_accuracy_and_one_error(
    trained, tmp_path):
  guard = tmp_path / 'guard'
  guard.mkdir()
  (guard / 'sitecustomize.py').write_text(_READ_ONLY)
  for name in ('eval_test_from8000_to8064.json',
               'probabilities_test_from8000_to8064.npz'):
    if (trained / name).exists():
      (trained / name).unlink()
  before = sorted(p.name for p in trained.iterdir())
  proc = _main('--mode', 'eval', '--workdir', str(trained), env=_env(
      PYTHONPATH=f'{guard}{os.pathsep}{ROOT}',
      KMNIST_JAX_TEST_READ_ONLY=str(trained)))
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  _no_orbax_warnings(proc.stderr)
  assert proc.stdout.startswith('kmnist test[8000:8064] (checkpoint step 6, '
                                'the latest, 64 examples): accuracy 0.'), (
                                    proc.stdout)
  assert 'wrote' not in proc.stdout
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  assert errors[0].startswith(f'error: {trained}: read-only file system; ')
  assert errors[0].endswith('; the result above is not saved'), errors
  assert sorted(p.name for p in trained.iterdir()) == before


def test_an_ensemble_scores_the_latest_checkpoint_of_each(trained, tmp_path):
  other = tmp_path / 'other'
  proc = _main('--config', 'configs/seed_cnn.py:smoke',
               '--config.num_epochs=2', '--workdir', str(other))
  assert proc.returncode == 0, proc.stderr
  ev = _main('--mode', 'eval', '--workdir', str(trained), '--ensemble',
             str(other))
  assert ev.returncode == 0, ev.stderr
  _no_orbax_warnings(ev.stderr)
  assert ev.stdout.startswith('kmnist test[8000:8064] (checkpoint steps 6, '
                              '4, the latest of each, 64 examples): '), (
                                  ev.stdout)
