"""Ensembles of workdirs in `--mode eval`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kmnist_jax import configlib
from kmnist_jax import ensemble
from kmnist_jax import train
from kmnist_jax.errors import UserError


def nn_config(data_dir, **kw):
  c = configlib.base_config()
  c.update(dict(model='seed_cnn', data_dir=str(data_dir), train_split='train',
                eval_split='test', num_epochs=1, batch_size=32,
                eval_batch_size=64, write_plots=False, learning_rate=3e-3))
  c.update(kw)
  return c


def test_ensemble_of_cnn_seeds_and_knn(learnable_data_dir, tmp_path):
  ws = [str(tmp_path / f'w{s}') for s in range(2)]
  for s, w in enumerate(ws):
    train.train_and_evaluate(nn_config(learnable_data_dir, seed=s,
                                       tta_shift=1 if s else 0), w)
  w_knn = str(tmp_path / 'knn')
  c = nn_config(learnable_data_dir, model='knn')
  train.train_and_evaluate(c, w_knn)
  images, labels = np.load(learnable_data_dir / 'kmnist-test-imgs.npz')[
      'arr_0'], np.load(learnable_data_dir / 'kmnist-test-labels.npz')['arr_0']
  probs = [ensemble.member_probs(w, images)[0] for w in ws + [w_knn]]
  for p in probs:
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
  # Members agree with their own --mode eval.
  assert np.mean(probs[0].argmax(1) == labels) == pytest.approx(
      train.evaluate(None, ws[0])['accuracy'])
  result = ensemble.evaluate(ws + [w_knn])
  mean = sum(probs) / 3
  assert result['accuracy'] == pytest.approx(np.mean(mean.argmax(1) == labels))
  assert [m['workdir'] for m in result['members']] == ws + [w_knn]
  assert result['num_examples'] == len(labels)
  with open(os.path.join(ws[0], 'ensemble_eval_test.json')) as f:
    assert json.load(f)['accuracy'] == result['accuracy']
  with pytest.raises(UserError, match='at least two'):
    ensemble.evaluate(ws[:1])
  # The command line: --ensemble, repeated or comma-separated.
  out = subprocess.run(
      [sys.executable, '-m', 'kmnist_jax.main', '--mode', 'eval',
       '--workdir', ws[0], '--ensemble', f'{ws[1]},{w_knn}'],
      capture_output=True, text=True, check=False,
      env=dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0'))
  assert out.returncode == 0, out.stderr
  assert f'accuracy {result["accuracy"]:.4f}' in out.stdout
