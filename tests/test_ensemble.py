"""Ensembles of workdirs in `--mode eval`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.methods import ensemble
from kmnist_jax.inference import evaluate
from kmnist_jax.baselines import knn
from kmnist_jax.train import steps
from kmnist_jax.train import loop as train
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness


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
    harness.fit(nn_config(learnable_data_dir, seed=s,
                                       tta_shift=1 if s else 0), w)
  w_knn = str(tmp_path / 'knn')
  c = nn_config(learnable_data_dir, model='knn', knn=configlib.knn_config())
  harness.fit(c, w_knn)
  labels = np.load(learnable_data_dir / 'kmnist-test-labels.npz')['arr_0']
  config = nn_config(learnable_data_dir)
  members = [ensemble.member_probs(w, config) for w in ws + [w_knn]]
  probs = [p for p, _, _ in members]
  for p, member_labels, _ in members:
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(member_labels, labels)
  # Members agree with their own --mode eval, whose probabilities they are.
  result0 = harness.evaluate(None, ws[0])
  assert np.mean(probs[0].argmax(1) == labels) == result0['accuracy']
  with np.load(os.path.join(ws[0], 'probabilities_test.npz')) as f:
    np.testing.assert_array_equal(f['probabilities'], probs[0])
  result = ensemble.evaluate(ws + [w_knn])
  mean = sum(np.asarray(p, np.float64) for p in probs) / 3
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


def test_ensemble_reads_current_probabilities_and_recomputes_stale_ones(
    learnable_data_dir, tmp_path, monkeypatch):
  ws = [str(tmp_path / f'w{s}') for s in range(2)]
  for s, w in enumerate(ws):
    harness.fit(nn_config(learnable_data_dir, seed=s), w)
    harness.evaluate(None, w)
  first = ensemble.evaluate(ws)

  def no_inference(*args, **kwargs):
    raise AssertionError('recomputed current probabilities')

  with monkeypatch.context() as m:
    m.setattr(steps, 'infer', no_inference)
    assert ensemble.evaluate(ws) == first
  # Another checkpoint step, and a file of another split, are recomputed.
  path = os.path.join(ws[1], 'probabilities_test.npz')
  harness.fit(nn_config(learnable_data_dir, seed=1,
                                     num_epochs=2), ws[1])
  old = os.stat(path).st_mtime_ns
  second = ensemble.evaluate(ws)
  assert second['checkpoint_step'] == [10, 20]
  assert os.stat(path).st_mtime_ns != old
  with np.load(path) as f:
    assert json.loads(str(f['meta']))['checkpoint_step'] == 20
