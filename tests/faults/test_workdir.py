"""A workdir is created with its parents, or gets one clear line before any
work; a workdir of another run is refused and left as it was.

Tests run as root, for whom chmod does not make a folder read-only; a
parent or grandparent that is a regular file (ENOTDIR) and a workdir that
is a file are checked through the CLI, an unwritable workdir or parent
in-process with `os.access` / `os.makedirs` patched (what a read-only mount
or a non-root user sees). tests/test_first_run.py runs the README's first
command, whose workdir's parent does not exist.
"""

import json
import os
import pathlib
import shutil

import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax import main
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core.errors import UserError

from faults import conftest as fc


@pytest.mark.parametrize('make, needles', [
    (lambda t: (t / 'file').write_text('x') and t / 'file' / 'sub' / 'w',
     ['parent', 'file is a file; expected a folder']),
    (lambda t: (t / 'file').write_text('x') and t / 'file' / 'w',
     ['parent', 'file is a file; expected a folder']),
    (lambda t: (t / 'file').write_text('keep me') and t / 'file',
     ['file', 'is a file; expected a folder']),
], ids=['grandparent_is_a_file', 'parent_is_a_file', 'workdir_is_a_file'])
def test_unusable_workdir_fails_before_training(learnable_data_dir, tmp_path,
                                                make, needles):
  workdir = make(tmp_path)
  before = fc.snapshot(tmp_path, learnable_data_dir)
  proc = fc.run_main(fc.train_args(learnable_data_dir, workdir))
  fc.assert_one_clear_error(proc, '--workdir', *needles)
  assert fc.snapshot(tmp_path, learnable_data_dir) == before
  assert 'train.py' not in proc.stderr  # No step or epoch was logged.


def test_unwritable_workdir(monkeypatch, learnable_data_dir, tmp_path):
  workdir = tmp_path / 'w'
  workdir.mkdir()
  access = os.access
  monkeypatch.setattr(os, 'access', lambda p, mode: False if str(p) == str(
      workdir) and mode == os.W_OK else access(p, mode))
  config = configlib.base_config()
  config.update(model='seed_cnn', data_dir=str(learnable_data_dir),
                train_split='train', eval_split='test', num_epochs=1,
                batch_size=32, write_plots=False)
  with pytest.raises(UserError, match=f'--workdir {workdir}: not writable'):
    main.train_and_evaluate(config, str(workdir))
  assert os.listdir(workdir) == []


def test_missing_parents_are_created(tmp_path):
  workdir = tmp_path / 'a' / 'b' / 'w'
  workdir_lib.prepare_workdir(str(workdir))
  assert workdir.is_dir() and os.listdir(workdir) == []
  workdir_lib.prepare_workdir(str(workdir))  # Existing: fine.


def test_uncreatable_parent(monkeypatch, tmp_path):
  def makedirs(path, *args, **kwargs):
    raise PermissionError(13, 'Permission denied', str(tmp_path / 'ro'))
  monkeypatch.setattr(os, 'makedirs', makedirs)
  workdir = str(tmp_path / 'ro' / 'w')
  with pytest.raises(UserError) as e:
    workdir_lib.prepare_workdir(workdir)
  assert str(e.value) == (f'--workdir {workdir}: cannot create it '
                          '(Permission denied)')
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# A workdir holding a different run.


def tree(root) -> dict:
  """{relative path: bytes (files) or None (folders)} of everything under
  `root`, the lock file included, with each file's mtime."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
          if p.is_file() else None for p in sorted(root.rglob('*'))}


def cnn_config(data_dir, **overrides):
  c = configlib.base_config()
  c.update(model='seed_cnn', data_dir=str(data_dir), train_split='train[:64]',
           eval_split='test', num_epochs=1, batch_size=32, eval_batch_size=64,
           write_plots=False)
  c.update(overrides)
  return c


def knn_config(data_dir, method='knn', **overrides):
  c = configlib.base_config()
  c.update(model=method, data_dir=str(data_dir), train_split='train',
           eval_split='test', num_epochs=1, write_plots=False)
  c.knn = configlib.knn_config()
  c.knn.pca_components = 20
  c.knn.update({k: overrides.pop(k) for k in ('k',) if k in overrides})
  c.update(overrides)
  return c


@pytest.fixture(scope='module')
def runs(learnable_data_dir, tmp_path_factory):
  """Workdirs of finished runs: a CNN, a k-NN, and a CNN that died after
  writing its epoch's metrics but before its first checkpoint."""
  root = tmp_path_factory.mktemp('runs')
  main.train_and_evaluate(cnn_config(learnable_data_dir), str(root / 'cnn'))
  main.train_and_evaluate(knn_config(learnable_data_dir), str(root / 'knn'))
  main.train_and_evaluate(cnn_config(learnable_data_dir), str(root / 'died'))
  for step in os.listdir(root / 'died' / 'checkpoints'):
    shutil.rmtree(root / 'died' / 'checkpoints' / step)
  assert (root / 'died' / 'metrics.jsonl').read_text()
  return root


@pytest.mark.parametrize('kind, config, needle', [
    ('cnn', lambda d: knn_config(d), "model: 'seed_cnn' (saved) vs 'knn'"),
    ('knn', lambda d: cnn_config(d), "model: 'knn' (saved) vs 'seed_cnn'"),
    ('knn', lambda d: knn_config(d, 'pca_knn'),
     "model: 'knn' (saved) vs 'pca_knn'"),
    ('knn', lambda d: knn_config(d, k=3), 'knn.k: 4 (saved) vs 3 (now)'),
    ('died', lambda d: cnn_config(d, learning_rate=0.5),
     'learning_rate: 0.001 (saved) vs 0.5 (now)'),
    ('died', lambda d: knn_config(d), "model: 'seed_cnn' (saved) vs 'knn'"),
], ids=['knn_into_cnn', 'cnn_into_knn', 'pca_knn_into_knn', 'knn_k_into_knn',
        'cnn_into_died_cnn', 'knn_into_died_cnn'])
def test_a_different_run_is_refused_untouched(runs, learnable_data_dir,
                                              tmp_path, kind, config, needle):
  workdir = tmp_path / kind
  shutil.copytree(runs / kind, workdir)
  before = tree(workdir)
  with pytest.raises(UserError) as e:
    main.train_and_evaluate(config(learnable_data_dir), str(workdir))
  line = str(e.value)
  what = {'cnn': 'checkpoints', 'knn': 'a k-NN fit', 'died': 'a run'}[kind]
  assert '\n' not in line
  assert line.startswith(f'{workdir} holds {what} of a different config ('
                         f'{workdir}/config.json): '), line
  assert needle in line and line.endswith(
      'Use a new --workdir, or the same config to resume'), line
  assert tree(workdir) == before


def test_the_same_config_reruns(runs, learnable_data_dir, tmp_path):
  # k-NN: fits again (any resumable field may change).
  workdir = tmp_path / 'knn'
  shutil.copytree(runs / 'knn', workdir)
  metrics = (workdir / 'metrics.jsonl').read_text()
  _, m = main.train_and_evaluate(knn_config(learnable_data_dir,
                                             test_split='test[:100]'),
                                  str(workdir))
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(l)['split'] for l in lines] == ['eval', 'test']
  assert json.loads(lines[0])['accuracy'] == json.loads(metrics)['accuracy']
  assert m['test']['num_examples'] == 100
  # A CNN that died before its first checkpoint starts afresh and computes
  # what a run into a fresh workdir computes.
  workdir = tmp_path / 'died'
  shutil.copytree(runs / 'died', workdir)
  main.train_and_evaluate(cnn_config(learnable_data_dir), str(workdir))
  strip = lambda p: [{k: v for k, v in json.loads(l).items()
                      if k != 'wall_time'} for l in open(p)]
  assert strip(workdir / 'metrics.jsonl') == strip(
      runs / 'cnn' / 'metrics.jsonl')
  assert os.listdir(workdir / 'checkpoints') == ['2']
