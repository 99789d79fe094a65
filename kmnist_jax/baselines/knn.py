"""Exact k-nearest-neighbour baselines of the rois-codh benchmark table.

* `knn`: the rois-codh script, scikit-learn's
  `KNeighborsClassifier(n_neighbors=4, weights='distance')` on the raw
  pixels (Euclidean distance).
* `pca_knn`: rois-codh issues #10 / #13: PCA to 60 components fitted on the
  training split (centred on the training mean, exact eigendecomposition of
  the covariance in float64), then the same 4-NN.

Exactness: the distance matmuls run batched on the device in float32 (at
HIGHEST precision) and pick `k + MARGIN` candidates per query; the candidates
are re-ranked on the host in float64 (exact integers for raw pixels). A row
whose k-th exact distance is not below the candidate cut-off minus a
rigorous float32 error bound is recomputed in full on the host, so the result
equals the float64 k-NN. Ties in distance go to the lower training index.
Votes follow scikit-learn: weight 1/distance; if any neighbour is at
distance 0, those neighbours weigh 1 and the others 0; the class with the
largest summed weight wins, ties to the smaller class index.

Config fields: `model` ('knn' or 'pca_knn'), and the slice `config.knn`
(`configlib.knn_config`): `knn.k`, `knn.pca_components`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from kmnist_jax.baselines import scoring
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core import console
from kmnist_jax.core import distributed
from kmnist_jax.core import fileio
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.core.errors import UserError, one_line
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.inference import results

NAMES = ('knn', 'pca_knn')
MARGIN = 12
MODEL_FILE = 'knn_model.npz'
_EPS32 = float(np.finfo(np.float32).eps)


@dataclasses.dataclass
class Fitted:
  """A fitted k-NN: training features on host (float64) and device."""
  method: str
  k: int
  num_classes: int
  labels: np.ndarray  # (N,) int
  features: np.ndarray  # (N, D) float64
  mean: np.ndarray  # (784,) float64; zeros for knn
  components: np.ndarray  # (D, 784) float64; empty for knn
  device_features: jax.Array  # (N, D) float32
  device_sq_norms: jax.Array  # (N,) float32
  max_norm: float


def check_config(config) -> None:
  """The k-NN's fields, before the workdir is touched."""
  if config.model not in NAMES:
    raise UserError(f'config.model={config.model!r}: expected one of '
                    f'{", ".join(NAMES)}')
  if 'knn' not in config:
    raise UserError(f'config.model={config.model!r} needs the config.knn '
                    'fields (k, pca_components); expected a config built '
                    'like configs/knn.py: config.knn = configlib.knn_config()')
  data_lib.get_info(config.dataset)


def _flat(images: np.ndarray) -> np.ndarray:
  return np.asarray(images).reshape(len(images), -1).astype(np.float64)


def fit_pca(x: np.ndarray, n_components: int):
  """(mean, components (n_components, D)) of float64 rows `x`, exactly."""
  mean = x.mean(axis=0)
  xc = x - mean
  evals, evecs = np.linalg.eigh(xc.T @ xc)
  order = np.argsort(evals, kind='stable')[::-1][:n_components]
  return mean, np.ascontiguousarray(evecs[:, order].T)


def features(fitted_or_method, images: np.ndarray, mean=None, components=None):
  """float64 features of uint8 images: raw pixels, or their PCA projection."""
  if isinstance(fitted_or_method, Fitted):
    method = fitted_or_method.method
    mean, components = fitted_or_method.mean, fitted_or_method.components
  else:
    method = fitted_or_method
  x = _flat(images)
  return (x - mean) @ components.T if method == 'pca_knn' else x


def fit_arrays(method: str, images: np.ndarray, labels: np.ndarray,
               num_classes: int, k: int = 4, n_components: int = 60,
               mean=None, components=None) -> Fitted:
  """Fits `method` on uint8 (N, 28, 28) images; reuses a given PCA."""
  if len(images) < k:
    raise UserError(f'k-NN needs at least knn.k={k} training examples, got '
                    f'{len(images)}')
  x = _flat(images)
  if method == 'pca_knn':
    if mean is None:
      mean, components = fit_pca(x, n_components)
    feats = (x - mean) @ components.T
  else:
    mean, components = np.zeros(x.shape[1]), np.zeros((0, x.shape[1]))
    feats = x
  dev = jnp.asarray(feats, jnp.float32)
  return Fitted(method, k, num_classes, np.asarray(labels, np.int64), feats,
                mean, components, dev, jnp.sum(dev * dev, axis=1),
                float(np.sqrt((feats * feats).sum(1).max())))


@functools.partial(jax.jit, static_argnums=(3,))
def _candidates(queries, train, train_sq, num):
  """float32 squared distances (Q, num) and indices of the `num` nearest."""
  dots = jnp.matmul(queries, train.T, precision=jax.lax.Precision.HIGHEST)
  d2 = jnp.sum(queries * queries, 1, keepdims=True) - 2.0 * dots + train_sq
  neg, idx = jax.lax.top_k(-d2, num)
  return -neg, idx


def _exact_rows(q: np.ndarray, train: np.ndarray, k: int):
  """Exact float64 (d2, idx) of the k nearest, ties to the lower index."""
  d2 = ((train[None] - q[:, None]) ** 2).sum(-1) if len(q) else np.zeros(
      (0, len(train)))
  idx = np.argsort(d2, axis=1, kind='stable')[:, :k]
  return np.take_along_axis(d2, idx, 1), idx


def kneighbors(fitted: Fitted, queries: np.ndarray, batch_size: int = 0):
  """(squared distances, indices), each (Q, k), of float64 query features,
  sorted by distance then index; exactly the float64 k-NN."""
  n, k = len(fitted.features), fitted.k
  num = min(n, k + MARGIN)
  batch_size = batch_size or int(max(1, min(1024, (1 << 26) // max(n, 1))))
  out_d, out_i = [], []
  dims = fitted.features.shape[1]
  bar = console.Bar(-(-len(queries) // batch_size), 'k-NN', unit='batch')
  for start in range(0, len(queries), batch_size):
    q = queries[start:start + batch_size]
    pad = np.zeros((batch_size - len(q), dims))
    approx, cand = jax.device_get(_candidates(
        jnp.asarray(np.concatenate([q, pad]), jnp.float32),
        fitted.device_features, fitted.device_sq_norms, num))
    approx, cand = approx[:len(q)], np.asarray(cand[:len(q)], np.int64)
    diff = fitted.features[cand] - q[:, None]
    d2 = np.einsum('qcd,qcd->qc', diff, diff)
    order = np.lexsort((cand, d2), axis=1)[:, :k]
    d2k = np.take_along_axis(d2, order, 1)
    idx = np.take_along_axis(cand, order, 1)
    if num < n:
      # Every non-candidate has float32 value >= approx[:, -1]; its exact
      # value is at least that minus the float32 error bound.
      qn = np.sqrt((q * q).sum(1))
      bound = (dims + 3) * _EPS32 * 1.01 * (qn + fitted.max_norm) ** 2
      unsafe = ~(d2k[:, -1] < approx[:, -1].astype(np.float64) - bound)
      if unsafe.any():
        d2k[unsafe], idx[unsafe] = _exact_rows(q[unsafe], fitted.features, k)
    out_d.append(d2k)
    out_i.append(idx)
    bar.update()
  bar.close()
  if not out_d:
    return np.zeros((0, k)), np.zeros((0, k), np.int64)
  return np.concatenate(out_d), np.concatenate(out_i)


def vote(d2: np.ndarray, neighbor_labels: np.ndarray, num_classes: int):
  """scikit-learn's weights='distance' votes: (Q, num_classes) float64."""
  with np.errstate(divide='ignore'):
    w = 1.0 / np.sqrt(d2)
  inf = np.isinf(w)
  rows = inf.any(axis=1)
  w[rows] = inf[rows]
  return np.stack([np.where(neighbor_labels == c, w, 0.0).sum(axis=1)
                   for c in range(num_classes)], axis=1)


def predict_proba(fitted: Fitted, images: np.ndarray) -> np.ndarray:
  """Normalised votes (Q, num_classes), as scikit-learn's predict_proba."""
  d2, idx = kneighbors(fitted, features(fitted, images))
  votes = vote(d2, fitted.labels[idx], fitted.num_classes)
  total = votes.sum(axis=1, keepdims=True)
  return votes / np.where(total == 0, 1.0, total)


def predict(fitted: Fitted, images: np.ndarray) -> np.ndarray:
  """Class per image; ties in the vote go to the smaller class index."""
  return np.argmax(predict_proba(fitted, images), axis=1)


def evaluate_arrays(fitted: Fitted, images, labels) -> dict:
  """Metrics as `steps.evaluate_arrays`; loss is the log loss of the
  normalised votes, clipped at 1e-15 as scikit-learn's log_loss."""
  return metrics_lib.from_probabilities(predict_proba(fitted, images), labels,
                                        fitted.num_classes)


def _fit_from_config(config, pca=None) -> Fitted:
  info = data_lib.get_info(config.dataset)
  images, labels = data_lib.load_split(config, config.train_split)
  mean, components = pca if pca is not None else (None, None)
  return fit_arrays(config.model, images, labels, info.num_classes,
                    config.knn.k, config.knn.pca_components,
                    mean, components)


def fit(config, workdir: str, compiler_options: dict | None = None):
  """The method's fit (`methods.registry`): fits on `train_split`, saves
  `knn_model.npz` (the PCA and the md5 of the training files, process 0)
  for `--mode eval`, and scores `eval_split` (and `test_split`). Returns
  (None, summary)."""
  del compiler_options  # One small jit, compiled with XLA's defaults.
  t0 = time.time()
  fitted = _fit_from_config(config)
  checksums = data_lib.file_checksums(config.dataset, config.train_split,
                                      config.data_dir or None)
  if distributed.is_main():
    with fileio.atomic_path(os.path.join(workdir, MODEL_FILE)) as tmp:
      with open(tmp, 'wb') as f:
        np.savez(f, mean=fitted.mean, components=fitted.components,
                 train_checksums=np.array(sorted(checksums.items())))
  return None, scoring.score_splits(
      config, workdir, lambda images: predict_proba(fitted, images), t0)


def _read_model(path: str, config):
  """((mean, components), training-file md5s) of a saved fit; one line if
  the file is damaged or not of `config`'s PCA."""
  dims = config.knn.pca_components if config.model == 'pca_knn' else 0
  try:
    with np.load(path) as f:
      mean, components = f['mean'], f['components']
      recorded = {str(a): str(b) for a, b in f['train_checksums']}
    if mean.shape != (784,) or components.shape != (dims, 784):
      raise ValueError(f'PCA of shapes {mean.shape} and {components.shape}, '
                       f'expected (784,) and ({dims}, 784)')
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(components))):
      raise ValueError('PCA values that are not finite')
  except Exception as e:  # pylint: disable=broad-except
    # np.load raises many types for a damaged file (BadZipFile, EOFError).
    raise UserError(f'{path}: not a readable k-NN fit ({one_line(e)}); '
                    'run --mode train on this workdir again') from e
  return (mean, components), recorded


def load_fitted(workdir: str, data_dir: str = '') -> Fitted:
  """The k-NN of a trained workdir: its recorded PCA on its training split,
  after checking that the training files are those of the fit."""
  saved = workdir_lib.load_workdir_config(workdir)
  if data_dir:
    saved.data_dir = data_dir
  path = os.path.join(workdir, MODEL_FILE)
  if not os.path.exists(path):
    raise UserError(f'{path}: missing; run --mode train on this workdir first')
  pca, recorded = _read_model(path, saved)
  now = data_lib.file_checksums(saved.dataset, saved.train_split,
                                saved.data_dir or None)
  if now != recorded:
    raise UserError(f'{workdir}: the training files changed since the fit '
                    f'(md5 {recorded} then, {now} now); train again')
  return _fit_from_config(saved, pca)


def probabilities(config, workdir: str, images: np.ndarray,
                  checkpoint_step: int = -1) -> results.Scores:
  """The normalised votes of the workdir's recorded fit for `images`."""
  del checkpoint_step  # A fit has one: 0.
  return results.Scores(predict_proba(load_fitted(workdir, config.data_dir),
                                      images), 0)
