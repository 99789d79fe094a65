"""The method protocol (issue 33): a new method is one module and one
registry line; the harness trains, scores and ensembles it as any other."""

import json
import os
import time
import types

import numpy as np
import pytest

from kmnist_jax import main
from kmnist_jax.baselines import scoring
from kmnist_jax.config import base as configlib
from kmnist_jax.core.errors import UserError
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.inference import results
from kmnist_jax.methods import ensemble
from kmnist_jax.methods import registry

PRIOR_FILE = 'prior.npy'


def _toy_method():
  """A toy method as a module would define it: every image gets the
  training split's class frequencies."""

  def check_config(config):
    if config.num_epochs != 1:
      raise UserError('class_prior: expected config.num_epochs=1')

  def fit(config, workdir, compiler_options=None):
    del compiler_options
    _, labels = data_lib.load_split(config, config.train_split)
    num_classes = data_lib.get_info(config.dataset).num_classes
    prior = np.bincount(labels, minlength=num_classes) / len(labels)
    np.save(os.path.join(workdir, PRIOR_FILE), prior)
    return None, scoring.score_splits(
        config, workdir, lambda images: np.tile(prior, (len(images), 1)),
        time.time())

  def probabilities(config, workdir, images, checkpoint_step=-1):
    del config, checkpoint_step
    prior = np.load(os.path.join(workdir, PRIOR_FILE))
    return results.Scores(np.tile(prior, (len(images), 1)), 0)

  return types.SimpleNamespace(NAMES=('class_prior',),
                               check_config=check_config, fit=fit,
                               probabilities=probabilities)


@pytest.fixture
def toy(monkeypatch):
  """The toy method, registered for this test only: its registry line."""
  monkeypatch.setattr(registry, '_METHODS', dict(registry._METHODS))  # pylint: disable=protected-access
  return registry.register(_toy_method())


def _config(data_dir, **kw):
  c = configlib.base_config()
  c.update(model='class_prior', data_dir=str(data_dir), train_split='train',
           eval_split='test', num_epochs=1, write_plots=False)
  c.update(kw)
  return c


def test_a_new_method_trains_evaluates_and_ensembles(toy, learnable_data_dir,
                                                     tmp_path):
  assert registry.get('class_prior') is toy and not toy.trains
  w = str(tmp_path / 'prior')
  state, summary = main.train_and_evaluate(_config(learnable_data_dir), w)
  assert state is None
  labels = np.load(learnable_data_dir / 'kmnist-test-labels.npz')['arr_0']
  majority = np.bincount(np.load(
      learnable_data_dir / 'kmnist-train-labels.npz')['arr_0']).argmax()
  assert summary['eval']['accuracy'] == np.mean(labels == majority)
  # The harness recorded the config and wrote the records.
  with open(os.path.join(w, 'config.json')) as f:
    assert json.load(f)['model'] == 'class_prior'
  with open(os.path.join(w, 'metrics.jsonl')) as f:
    assert [json.loads(l)['split'] for l in f] == ['eval']
  # --mode eval: the same scores, written as every method's.
  result = main.evaluate(None, w)
  assert result['accuracy'] == summary['eval']['accuracy']
  assert result['checkpoint_step'] == 0
  assert os.path.exists(os.path.join(w, 'probabilities_test.npz'))
  # An ensemble with a k-NN fit.
  w_knn = str(tmp_path / 'knn')
  main.train_and_evaluate(_config(learnable_data_dir, model='knn',
                                  knn=configlib.knn_config()), w_knn)
  both = ensemble.evaluate([w, w_knn])
  assert [m['checkpoint_step'] for m in both['members']] == [0, 0]
  # The harness refuses a workdir of another run, for this method too.
  with pytest.raises(UserError, match='different config'):
    main.train_and_evaluate(_config(learnable_data_dir, seed=1), w_knn)
  # Its own check runs before the workdir is touched.
  with pytest.raises(UserError, match='num_epochs=1'):
    main.train_and_evaluate(_config(learnable_data_dir, num_epochs=2),
                            str(tmp_path / 'never'))
  assert not (tmp_path / 'never').exists()


def test_an_unknown_method_lists_the_valid_ones():
  with pytest.raises(UserError) as e:
    registry.get('resnet9')
  assert str(e.value).startswith("config.model: unknown model 'resnet9'; "
                                 'valid: ')
  for name in ('keras_cnn', 'knn', 'pca_knn', 'svm', 'resnet_preact20'):
    assert name in str(e.value)


def test_a_name_is_registered_once(toy):
  del toy
  with pytest.raises(ValueError, match='class_prior'):
    registry.register(_toy_method())


def test_every_method_provides_the_protocol():
  for name in registry.names():
    method = registry.get(name)
    assert name in method.names
    for fn in (method.check_config, method.fit, method.probabilities,
               method.checkpoint_step):
      assert callable(fn)
  assert registry.get('keras_cnn').trains and not registry.get('svm').trains
