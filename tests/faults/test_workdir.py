"""A workdir that cannot be used gets one clear line before any work.

Tests run as root, for whom chmod does not make a folder read-only; a
missing parent, a parent that is a regular file (ENOTDIR) and a workdir that
is a file are checked through the CLI, an unwritable workdir in-process
with `os.access` patched (what a read-only mount or a non-root user sees).
"""

import os

import pytest

from kmnist_jax import configlib
from kmnist_jax import train
from kmnist_jax.errors import UserError

from faults import conftest as fc


@pytest.mark.parametrize('make, needles', [
    (lambda t: t / 'missing' / 'w', ['missing', 'does not exist']),
    (lambda t: (t / 'file').write_text('x') and t / 'file' / 'w',
     ['file', 'is a file; expected a folder']),
    (lambda t: (t / 'file').write_text('keep me') and t / 'file',
     ['file', 'is a file; expected a folder']),
], ids=['missing_parent', 'parent_is_a_file', 'workdir_is_a_file'])
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
    train.train_and_evaluate(config, str(workdir))
  assert os.listdir(workdir) == []
