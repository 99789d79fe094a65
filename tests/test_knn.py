"""Exact k-NN baselines: against a brute-force reference, scikit-learn's
rules (distance weights, zero distances, vote ties), and the workdir API."""

import json
import os

import numpy as np
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.baselines import knn
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness


def reference_predict(train_x, train_y, test_x, k, num_classes):
  """Independent float64 brute force with scikit-learn's voting rules."""
  preds = []
  for q in test_x.astype(np.float64):
    d2 = ((train_x.astype(np.float64) - q) ** 2).sum(1)
    idx = np.argsort(d2, kind='stable')[:k]
    dist = np.sqrt(d2[idx])
    if (dist == 0).any():
      w = (dist == 0).astype(float)
    else:
      w = 1.0 / dist
    votes = np.zeros(num_classes)
    for j, i in enumerate(idx):
      votes[train_y[i]] += w[j]
    best, winner = 0.0, 0
    for c in range(num_classes):  # Strictly greater: ties to smaller class.
      if votes[c] > best:
        best, winner = votes[c], c
    preds.append(winner)
  return np.array(preds)


def random_images(n, seed):
  rng = np.random.default_rng(seed)
  # Low-rank structure so neighbours are meaningful, plus noise.
  base = rng.integers(0, 256, (8, 28, 28))
  mix = rng.dirichlet(np.ones(8), n)
  x = np.einsum('nk,khw->nhw', mix, base) + rng.normal(0, 20, (n, 28, 28))
  return np.clip(x, 0, 255).astype(np.uint8)


@pytest.mark.parametrize('method', ['knn', 'pca_knn'])
def test_matches_reference(method):
  xt, xq = random_images(300, 0), random_images(80, 1)
  yt = np.random.default_rng(2).integers(0, 5, 300)
  xq[:5] = xt[:5]  # Zero distances.
  fitted = knn.fit_arrays(method, xt, yt, 5, k=4, n_components=10)
  pred = knn.predict(fitted, xq)
  feats_t = knn.features(fitted, xt)
  feats_q = knn.features(fitted, xq)
  np.testing.assert_array_equal(pred, reference_predict(feats_t, yt, feats_q,
                                                        4, 5))
  np.testing.assert_array_equal(pred[:5], yt[:5])


def test_zero_distance_neighbours_outvote_closer_ones():
  xt = np.zeros((5, 28, 28), np.uint8)
  xt[1:, 0, 0] = 1  # Four points at distance 1 from the origin.
  yt = np.array([3, 1, 1, 1, 1])
  fitted = knn.fit_arrays('knn', xt, yt, 4)
  assert knn.predict(fitted, xt[:1])[0] == 3
  np.testing.assert_array_equal(knn.predict_proba(fitted, xt[:1])[0],
                                [0, 0, 0, 1])


def test_vote_ties_go_to_the_smaller_class():
  xt = np.zeros((4, 28, 28), np.uint8)
  xt[0, 0, 0] = xt[1, 0, 1] = xt[2, 0, 2] = xt[3, 0, 3] = 10
  yt = np.array([2, 1, 2, 1])  # Equal distances: votes 2 vs 2.
  fitted = knn.fit_arrays('knn', xt, yt, 3)
  q = np.zeros((1, 28, 28), np.uint8)
  assert knn.predict(fitted, q)[0] == 1


def test_distance_ties_go_to_the_lower_index_and_fallback_is_exact():
  # 40 training points at the same distance from the query: the candidate
  # search cannot separate them, the exact fallback must pick indices 0..3.
  xt = np.zeros((40, 28, 28), np.uint8)
  for i in range(40):
    xt[i, i // 28, i % 28] = 7
  yt = np.arange(40) % 4
  fitted = knn.fit_arrays('knn', xt, yt, 4)
  d2, idx = knn.kneighbors(fitted, knn.features(fitted, np.zeros((1, 28, 28),
                                                                 np.uint8)))
  np.testing.assert_array_equal(idx[0], [0, 1, 2, 3])
  np.testing.assert_array_equal(d2[0], [49.0] * 4)


def test_pca_is_the_exact_top_subspace():
  x = random_images(200, 3).reshape(200, -1).astype(np.float64)
  mean, comps = knn.fit_pca(x, 6)
  np.testing.assert_allclose(mean, x.mean(0))
  np.testing.assert_allclose(comps @ comps.T, np.eye(6), atol=1e-10)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  # Same subspace as the SVD's top 6 right singular vectors.
  proj = vt[:6].T @ vt[:6]
  np.testing.assert_allclose(comps.T @ comps, proj, atol=1e-8)
  assert s[5] > s[6]


def test_against_scikit_learn():
  neighbors = pytest.importorskip('sklearn.neighbors')
  decomposition = pytest.importorskip('sklearn.decomposition')
  xt, xq = random_images(500, 4), random_images(150, 5)
  yt = np.random.default_rng(6).integers(0, 10, 500)
  clf = neighbors.KNeighborsClassifier(n_neighbors=4, weights='distance')
  clf.fit(xt.reshape(500, -1), yt)
  fitted = knn.fit_arrays('knn', xt, yt, 10)
  np.testing.assert_array_equal(knn.predict(fitted, xq),
                                clf.predict(xq.reshape(150, -1)))
  pca = decomposition.PCA(n_components=20, svd_solver='full')
  a = pca.fit_transform(xt.reshape(500, -1))
  clf.fit(a, yt)
  fitted = knn.fit_arrays('pca_knn', xt, yt, 10, n_components=20)
  np.testing.assert_array_equal(
      knn.predict(fitted, xq), clf.predict(pca.transform(xq.reshape(150, -1))))


def knn_config(method, data_dir, **kw):
  c = configlib.load_config_file(
      os.path.join(os.path.dirname(__file__), '..', 'configs',
                   f'{method}.py'), 'proxy')
  c.data_dir = str(data_dir)
  c.knn.update({k: kw.pop(k) for k in ('k', 'pca_components') if k in kw})
  c.update(kw)
  return c


def test_proxy_accuracies_on_real_files(real_data_dir, tmp_path):
  """The published-script numbers of the offline proxy, exact: 1856 and
  1891 of 2000 (scikit-learn 1.9 gives the same predictions)."""
  for method, expected in (('knn', 0.928), ('pca_knn', 0.9455)):
    state, m = harness.fit(knn_config(method, real_data_dir),
                                      str(tmp_path / method))
    assert state is None
    assert m['eval']['accuracy'] == expected
    assert m['eval']['num_examples'] == 2000


def test_workdir_train_eval_and_changed_data(learnable_data_dir, tmp_path):
  w = str(tmp_path / 'w')
  c = knn_config('pca_knn', learnable_data_dir, train_split='train',
                 eval_split='test', pca_components=20)
  state, m = harness.fit(c, w)
  assert state is None and m['steps_per_epoch'] == 0
  assert m['eval']['accuracy'] > 0.9  # The learnable data is easy.
  recs = [json.loads(l) for l in open(os.path.join(w, 'metrics.jsonl'))]
  assert [r['split'] for r in recs] == ['eval']
  assert recs[0]['accuracy'] == m['eval']['accuracy']
  result = harness.evaluate(None, w)
  assert result['accuracy'] == m['eval']['accuracy']
  assert os.path.exists(os.path.join(w, 'eval_test.json'))
  with np.load(os.path.join(w, 'probabilities_test.npz')) as f:
    assert f['probabilities'].shape == (200, 10)
    np.testing.assert_array_equal(f['indices'], np.arange(200))
    assert np.mean(f['probabilities'].argmax(1) == f['labels']) == (
        result['accuracy'])
  # Same numbers twice: deterministic.
  _, m2 = harness.fit(c, str(tmp_path / 'w2'))
  assert m2['eval'] == m['eval']
  # Changed training files are refused at eval.
  imgs = np.load(learnable_data_dir / 'kmnist-train-imgs.npz')['arr_0']
  changed = tmp_path / 'changed'
  changed.mkdir()
  for f in os.listdir(learnable_data_dir):
    os.symlink(learnable_data_dir / f, changed / f)
  os.remove(changed / 'kmnist-train-imgs.npz')
  np.savez(changed / 'kmnist-train-imgs.npz', 255 - imgs)
  c2 = knn_config('pca_knn', changed, train_split='train', eval_split='test',
                  pca_components=20)
  with pytest.raises(UserError, match='training files changed'):
    harness.evaluate(c2, w)


def test_config_errors(tmp_path):
  c = knn_config('knn', tmp_path, k=0)
  with pytest.raises(UserError, match=r'knn\.k'):
    harness.fit(c, str(tmp_path / 'w'))
  c = knn_config('pca_knn', tmp_path, pca_components=1000)
  with pytest.raises(UserError, match=r'knn\.pca_components'):
    harness.fit(c, str(tmp_path / 'w'))
