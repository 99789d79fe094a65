"""The method slices of the config (issue 33): `config.knn`, `config.svm`.

Runs recorded before the slices (flat `knn_k`, `pca_components`, `svm_c`,
`svm_gamma` in every config.json) still evaluate, predict, ensemble and
resume; the old flat flags name their new fields in one line.
"""

import json
import os
import subprocess
import sys

import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import ensemble
from kmnist_jax.methods import harness
from test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What every config.json held before the slices, whatever its model.
OLD_FLAT = {'knn_k': 4, 'pca_components': 60, 'svm_c': 10.0,
            'svm_gamma': 0.02}


def make_old(workdir: str, **flat) -> None:
  """Rewrites `workdir`'s config.json as the flat layout recorded it."""
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    config = json.load(f)
  for name in configlib.SLICES:
    config.pop(name, None)
  config.update({**OLD_FLAT, **flat})
  with open(path, 'w') as f:
    json.dump(config, f)


def knn_config(data_dir, model='knn', **kw):
  c = tiny_config(data_dir, model=model, num_epochs=1)
  c.knn = configlib.knn_config()
  c.knn.update(kw)
  return c


def test_the_slices_hold_each_default_once():
  base = configlib.base_config()
  for old, new in configlib.RENAMED.items():
    assert old not in base
    part, field = new.split('.')
    assert field in configlib.SLICES[part]()
  assert 'knn' not in base and 'svm' not in base


def test_upgrade_moves_flat_fields_into_the_model_slice():
  old = {**configlib.base_config().to_dict(), **OLD_FLAT, 'model': 'pca_knn',
         'pca_components': 20}
  new = configlib.upgrade(old)
  assert new['knn'] == {'k': 4, 'pca_components': 20}
  assert not set(OLD_FLAT) & set(new) and 'svm' not in new
  cnn = configlib.upgrade({**old, 'model': 'seed_cnn'})
  assert 'knn' not in cnn and not set(OLD_FLAT) & set(cnn)
  # A run recorded before a field existed takes its default.
  short = configlib.upgrade({'model': 'seed_cnn', 'dataset': 'kmnist'})
  assert short['matmul_precision'] == 'default'


def test_an_old_knn_workdir_evaluates_ensembles_and_resumes(
    learnable_data_dir, tmp_path):
  w = str(tmp_path / 'pca')
  c = knn_config(learnable_data_dir, 'pca_knn', pca_components=20)
  _, summary = harness.fit(c, w)
  make_old(w, model='pca_knn', pca_components=20)
  assert workdir_lib.load_workdir_config(w).knn.pca_components == 20
  result = harness.evaluate(None, w)
  assert result['accuracy'] == summary['eval']['accuracy']
  # The same config resumes it (refits); another is refused by the new name.
  harness.fit(c, w)
  make_old(w, model='pca_knn', pca_components=20)
  with pytest.raises(UserError,
                     match=r'knn.pca_components: 20 \(saved\) vs 60 \(now\)'):
    harness.fit(knn_config(learnable_data_dir, 'pca_knn'), w)


def test_an_old_network_workdir_evaluates_predicts_and_resumes(
    learnable_data_dir, tmp_path):
  w = str(tmp_path / 'cnn')
  c = tiny_config(learnable_data_dir, num_epochs=1)
  state, summary = harness.fit(c, w)
  make_old(w)
  result = harness.evaluate(None, w)
  assert result['accuracy'] == summary['eval']['accuracy']
  _, again = harness.fit(c, w)  # Resumes: already complete.
  assert again['already_complete']
  make_old(w)
  w_knn = str(tmp_path / 'knn')
  harness.fit(knn_config(learnable_data_dir), w_knn)
  make_old(w_knn, model='knn')
  both = ensemble.evaluate([w, w_knn])
  assert both['num_examples'] == result['num_examples']
  proc = subprocess.run(
      [sys.executable, '-m', 'kmnist_jax.main', '--mode', 'predict',
       '--workdir', w, '--predict_input',
       str(learnable_data_dir / 'kmnist-test-imgs.npz')],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
      text=True, check=False)
  assert proc.returncode == 0, proc.stderr
  assert os.path.exists(os.path.join(w, 'predictions.csv'))
  del state


@pytest.mark.parametrize('flag, new', [('--config.knn_k=5', 'knn.k=5'),
                                       ('--config.svm_gamma=0.1',
                                        'svm.gamma=0.1')])
def test_an_old_flat_flag_names_its_new_field(flag, new, tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'kmnist_jax.main', '--config',
       'configs/knn.py:proxy', flag, '--workdir', str(tmp_path / 'w')],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
      text=True, check=False)
  assert proc.returncode == 2
  name = flag.split('=')[0].removeprefix('--config.')
  assert proc.stderr.strip() == (
      f'error: {flag}: config.{name} is now config.{new.split("=")[0]}; '
      f'use --config.{new}')
  assert not (tmp_path / 'w').exists()


def test_a_method_without_its_slice_is_one_line(learnable_data_dir,
                                                tmp_path):
  c = tiny_config(learnable_data_dir, model='knn', num_epochs=1)
  with pytest.raises(UserError, match=r'needs the config.knn fields'):
    harness.fit(c, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()
