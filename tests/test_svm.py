"""The RBF SVM baseline (kmnist_jax.baselines.svm): libsvm's votes against
scikit-learn, the missing-scikit-learn error, config errors and the workdir
API (fit, --mode eval, ensembles)."""

import json
import os
import sys

import numpy as np
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.methods import ensemble
from kmnist_jax.baselines import knn
from kmnist_jax import main
from kmnist_jax.baselines import svm
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness

sk_svm = pytest.importorskip('sklearn.svm')

REPO = os.path.join(os.path.dirname(__file__), '..')


def random_images(n, seed):
  """Low-rank images plus noise, so that classes overlap a little."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (6, 28, 28))
  mix = rng.dirichlet(np.ones(6), n)
  x = np.einsum('nk,khw->nhw', mix, base) + rng.normal(0, 25, (n, 28, 28))
  return np.clip(x, 0, 255).astype(np.uint8)


def sklearn_svc(xt, yt, c, gamma):
  clf = sk_svm.SVC(kernel='rbf', C=c, gamma=gamma)
  return clf.fit(xt.reshape(len(xt), -1) / 255.0, yt)


@pytest.mark.parametrize('classes', [(0, 1, 2, 3, 4), (3, 7), (0, 2, 3, 5)])
def test_votes_and_predictions_are_libsvms(classes):
  xt, xq = random_images(240, 0), random_images(120, 1)
  yt = np.random.default_rng(2).choice(classes, 240)
  clf = sklearn_svc(xt, yt, 10.0, 0.02)
  machine = svm.fit_arrays(xt, yt, 10, 10.0, 0.02)
  np.testing.assert_array_equal(machine.classes, sorted(classes))
  assert len(machine.support_vectors) == len(clf.support_vectors_)
  flat = xq.reshape(len(xq), -1) / 255.0
  np.testing.assert_array_equal(svm.predict(machine, xq), clf.predict(flat))
  votes = svm.votes(machine, svm.features(xq))
  assert votes.shape == (120, 10)
  k = len(classes)
  np.testing.assert_array_equal(votes.sum(1), k * (k - 1) // 2)
  absent = [c for c in range(10) if c not in classes]
  assert not votes[:, absent].any()
  if k > 2:
    # scikit-learn's 'ovr' decision: votes plus a confidence in (-1/3, 1/3).
    np.testing.assert_array_equal(
        votes[:, list(machine.classes)], np.rint(clf.decision_function(flat)))
  probs = svm.predict_proba(machine, xq)
  np.testing.assert_allclose(probs.sum(1), 1.0)


def test_vote_ties_go_to_the_smaller_class():
  # Three classes, one support vector each: pair decisions are fixed by
  # the intercepts, 0 beats 1, 1 beats 2, 2 beats 0: a three-way tie.
  m = svm.Machine(gamma=1.0, num_classes=4, classes=np.array([1, 2, 3]),
                  support_vectors=np.zeros((3, 784)),
                  n_support=np.array([1, 1, 1]),
                  dual_coef=np.zeros((2, 3)),
                  intercept=np.array([1.0, -1.0, 1.0]))
  votes = svm.votes(m, np.zeros((2, 784)))
  np.testing.assert_array_equal(votes, [[0, 1, 1, 1]] * 2)
  assert list(svm.predict(m, np.zeros((2, 28, 28), np.uint8))) == [1, 1]


def test_save_and_load_round_trip(tmp_path):
  xt = random_images(60, 3)
  yt = np.arange(60) % 3
  machine = svm.fit_arrays(xt, yt, 10, 5.0, 0.05)
  path = str(tmp_path / svm.MODEL_FILE)
  svm.save(machine, path)
  loaded = svm.load(path)
  for field in ('classes', 'support_vectors', 'n_support', 'dual_coef',
                'intercept'):
    np.testing.assert_array_equal(getattr(loaded, field),
                                  getattr(machine, field))
  assert (loaded.gamma, loaded.num_classes) == (0.05, 10)
  with pytest.raises(UserError, match=r'missing; run --mode train'):
    svm.load(str(tmp_path / 'none.npz'))
  (tmp_path / 'bad.npz').write_bytes(b'not an npz')
  with pytest.raises(UserError, match=r'bad.npz: not a saved SVM'):
    svm.load(str(tmp_path / 'bad.npz'))


def svm_config(data_dir, **kw):
  c = configlib.load_config_file(os.path.join(REPO, 'configs', 'svm.py'),
                                 'proxy')
  c.data_dir = str(data_dir)
  c.svm.update({k: kw.pop(k) for k in ('c', 'gamma') if k in kw})
  c.update(kw)
  return c


def test_missing_scikit_learn_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'sklearn', None)
  monkeypatch.setitem(sys.modules, 'sklearn.svm', None)
  w = tmp_path / 'w'
  with pytest.raises(UserError) as e:
    harness.fit(svm_config(tmp_path), str(w))
  assert str(e.value) == ("config.model='svm' needs scikit-learn: pip "
                          "install 'kmnist-jax[svm]'")
  assert not w.exists()


@pytest.mark.parametrize('field,value', [('c', 0.0), ('gamma', -1.0),
                                         ('gamma', float('nan'))])
def test_config_errors(tmp_path, field, value):
  c = svm_config(tmp_path)
  c.svm[field] = value
  with pytest.raises(UserError,
                     match=rf'^config.svm.{field}=.*: expected a positive '
                     'number$'):
    harness.fit(c, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_one_class_is_refused():
  with pytest.raises(UserError, match=r'^SVM: the training split has 1 '
                     r'class; expected at least 2$'):
    svm.fit_arrays(random_images(5, 0), np.zeros(5, int), 10, 1.0, 0.1)


def test_workdir_fit_eval_and_ensemble(learnable_data_dir, tmp_path, capsys):
  w = str(tmp_path / 'w')
  c = svm_config(learnable_data_dir, train_split='train', eval_split='test')
  state, m = main.train_and_evaluate(c, w)
  assert state is None and m['steps_per_epoch'] == 0
  assert m['eval']['accuracy'] > 0.9  # The learnable data is easy.
  assert m['train']['num_support_vectors'] > 0
  recs = [json.loads(l) for l in open(os.path.join(w, 'metrics.jsonl'))]
  assert [r['split'] for r in recs] == ['eval']
  assert recs[0]['accuracy'] == m['eval']['accuracy']
  assert recs[0]['num_support_vectors'] == m['train']['num_support_vectors']
  assert sorted(os.listdir(w)) == ['.lock', 'config.json', 'metrics.jsonl',
                                   svm.MODEL_FILE, 'tensorboard']
  # --mode eval scores with the saved machine, not a refit.
  result = main.evaluate(None, w)
  assert result['accuracy'] == m['eval']['accuracy']
  assert result['checkpoint_step'] == 0
  with np.load(os.path.join(w, 'probabilities_test.npz')) as f:
    assert f['probabilities'].shape == (200, 10)
    assert np.mean(f['probabilities'].argmax(1) == f['labels']) == (
        result['accuracy'])
  # A workdir of another config is refused, naming the SVM fit.
  with pytest.raises(UserError, match=r'holds an SVM fit of a different '
                     r'config .*svm.c: 10.0 \(saved\) vs 1.0 \(now\)'):
    harness.fit(svm_config(learnable_data_dir, c=1.0,
                                      train_split='train', eval_split='test'),
                           w)
  # An ensemble with a k-NN member reads both members' vote fractions.
  w_knn = str(tmp_path / 'knn')
  ck = configlib.load_config_file(os.path.join(REPO, 'configs', 'knn.py'))
  ck.update(data_dir=str(learnable_data_dir), train_split='train',
            eval_split='test')
  harness.fit(ck, w_knn)
  out = ensemble.evaluate([w, w_knn])
  assert [x['workdir'] for x in out['members']] == [w, w_knn]
  assert out['members'][0]['accuracy'] == result['accuracy']
  assert out['checkpoint_step'] == [0, 0]
  assert workdir_lib.load_workdir_config(w).model == 'svm'
