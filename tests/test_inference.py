"""One inference path (issue 19): `--mode eval`, `--mode predict`, ensembles
and the eval plots all score with `steps.infer`, test-time augmentation
included."""

import json
import os

import numpy as np
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.data import datasets as data
from kmnist_jax.inference import evaluate
from kmnist_jax.inference import predict
from kmnist_jax.train import steps
from kmnist_jax.train import loop as train
from kmnist_jax.methods import harness


@pytest.fixture(scope='module')
def tta_workdir(learnable_data_dir, tmp_path_factory):
  """seed_cnn with tta_shift=1, one epoch on the learnable synthetic data,
  evaluated on test[20:] (180 examples, 3 batches of 64, the last padded)."""
  config = configlib.base_config()
  config.update(dict(
      model='seed_cnn', data_dir=str(learnable_data_dir), train_split='train',
      eval_split='test[20:]', num_epochs=1, batch_size=32, eval_batch_size=64,
      tta_shift=1, write_plots=False, learning_rate=3e-3))
  workdir = str(tmp_path_factory.mktemp('tta') / 'w')
  harness.fit(config, workdir)
  return workdir


def test_predict_top1_equals_eval_accuracy_with_tta(tta_workdir,
                                                    learnable_data_dir):
  result = harness.evaluate(None, tta_workdir)
  images, labels = data.load('kmnist', 'test[20:]', str(learnable_data_dir))
  # The same default checkpoint, without checkpoint_step.
  predictor = predict.Predictor.from_workdir(tta_workdir)
  assert predictor.step == result['checkpoint_step']
  table = predictor.predict(list(images))
  top1 = table['top1_index'].to_numpy()
  assert np.mean(top1 == labels) == result['accuracy']
  # The same probabilities, bit for bit, as eval wrote.
  with np.load(os.path.join(tta_workdir, 'probabilities_test_from20.npz')) as f:
    np.testing.assert_array_equal(predictor.probabilities(images),
                                  f['probabilities'])
    np.testing.assert_array_equal(top1, f['probabilities'].argmax(1))


def test_tta_changes_the_probabilities(tta_workdir, learnable_data_dir):
  """The TTA config's eval is not the plain forward pass (the old predict)."""
  config, graphdef, state, _ = evaluate.restore_for_inference(tta_workdir)
  images, _ = data.load('kmnist', 'test[20:]', str(learnable_data_dir))
  plain = steps.infer(steps.make_infer_fn(graphdef, 0), state, images, 64)
  tta = steps.infer(steps.make_infer_fn(graphdef, config.tta_shift), state,
                    images, 64)
  assert np.abs(plain - tta).max() > 1e-3


def test_probabilities_file(tta_workdir):
  result = harness.evaluate(None, tta_workdir)
  with np.load(os.path.join(tta_workdir, 'probabilities_test_from20.npz')) as f:
    probs, labels, indices = f['probabilities'], f['labels'], f['indices']
    meta = json.loads(str(f['meta']))
  assert probs.shape == (180, 10) and probs.dtype == np.float32
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(indices, np.arange(20, 200))
  assert labels.dtype == np.int64 and len(labels) == 180
  confusion = np.zeros((10, 10), np.int64)
  np.add.at(confusion, (labels, probs.argmax(1)), 1)
  assert confusion.tolist() == result['confusion_matrix']
  assert meta['split'] == 'test[20:]' and meta['tta_shift'] == 1
  assert meta['checkpoint_step'] == result['checkpoint_step'] == 10
