"""RBF-kernel support vector machine: the "Tuned SVM" row of the rois-codh
benchmark table.

`svm`: scikit-learn's `SVC(kernel='rbf', C=config.svm.c,
gamma=config.svm.gamma)` (libsvm, one-vs-one over the class pairs) on the
pixels scaled to [0, 1] and flattened to 784 features. The fit runs in
scikit-learn on the CPU (`pip install 'kmnist-jax[svm]'`); it is the only
step that needs it.

The fitted machine (support vectors, dual coefficients, intercepts) is saved
to `svm_model.npz`. Scoring (the metrics after the fit, `--mode eval`,
ensembles) recomputes libsvm's one-vs-one votes from that file in float64
NumPy: for each class pair (i, j), i < j, the decision value
sum_s coef_s exp(-gamma |x - sv_s|^2) + b_ij votes for i when > 0, else for
j; the class with the most votes wins, ties to the smaller class, as
libsvm's `svm_predict` (scikit-learn's `SVC.predict`, `break_ties=False`).
Squared distances are expanded as |x|^2 + |sv|^2 - 2 x.sv, so a decision
value within float64 rounding of 0 may vote otherwise than libsvm's.
The class probabilities are the vote fractions (votes / number of pairs),
as the k-NN baselines' normalised votes: their argmax is the prediction,
and the loss is their log loss (clipped at 1e-15); they are not Platt-scaled
(`SVC(probability=True)` would refit five times more).

Config fields: `model` ('svm') and the slice `config.svm`
(`configlib.svm_config`): `svm.c`, `svm.gamma`.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

import numpy as np

from kmnist_jax.baselines import scoring
from kmnist_jax.core import console
from kmnist_jax.core import distributed
from kmnist_jax.core import fileio
from kmnist_jax.core.errors import UserError, one_line
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.inference import results

NAMES = ('svm',)
MODEL_FILE = 'svm_model.npz'
# libsvm's kernel cache for the fit (MB): speed only, the result is the same.
CACHE_MB = 1000
_MISSING_SKLEARN = ("config.model='svm' needs scikit-learn: pip install "
                    "'kmnist-jax[svm]'")


@dataclasses.dataclass
class Machine:
  """A fitted one-vs-one RBF SVM, as libsvm stores it (float64)."""
  gamma: float
  num_classes: int
  classes: np.ndarray  # (K,) int: the labels present in training, sorted.
  support_vectors: np.ndarray  # (S, D), grouped by class in `classes` order.
  n_support: np.ndarray  # (K,) int: support vectors per class.
  dual_coef: np.ndarray  # (K - 1, S): libsvm's sv_coef.
  intercept: np.ndarray  # (K (K - 1) / 2,): -rho of pairs (0,1), (0,2), ...


def check_config(config) -> None:
  """Before the workdir is touched: the model, and scikit-learn installed
  (`config.fields` has checked svm.c and svm.gamma: positive, finite)."""
  if config.model not in NAMES:
    raise UserError(f'config.model={config.model!r}: expected one of '
                    f'{", ".join(NAMES)}')
  if 'svm' not in config:
    raise UserError("config.model='svm' needs the config.svm fields (c, "
                    'gamma); expected a config built like configs/svm.py: '
                    'config.svm = configlib.svm_config()')
  _svc_class()


def features(images: np.ndarray) -> np.ndarray:
  """uint8 (N, 28, 28) images as float64 (N, 784) rows in [0, 1]."""
  images = np.asarray(images)
  return images.reshape(len(images), -1).astype(np.float64) / 255.0


def _svc_class():
  try:
    from sklearn.svm import SVC  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(_MISSING_SKLEARN) from None
  return SVC


def fit_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int,
               c: float, gamma: float) -> Machine:
  """Fits scikit-learn's RBF `SVC` on uint8 images; returns its machine."""
  svc_class = _svc_class()
  labels = np.asarray(labels, np.int64)
  if len(np.unique(labels)) < 2:
    raise UserError(f'SVM: the training split has {len(np.unique(labels))} '
                    'class; expected at least 2')
  svc = svc_class(kernel='rbf', C=c, gamma=gamma, cache_size=CACHE_MB)
  console.say(f'SVM: fitting scikit-learn\'s SVC on {len(labels)} images '
              '(it reports no progress)')
  with warnings.catch_warnings():
    # Labels are classes, even when there are few examples per class.
    warnings.filterwarnings('ignore', message='The number of unique classes')
    svc.fit(features(images), labels)
  dual, intercept = svc.dual_coef_, svc.intercept_
  if len(svc.classes_) == 2:  # scikit-learn negates libsvm's binary machine.
    dual, intercept = -dual, -intercept
  return Machine(float(gamma), int(num_classes),
                 np.asarray(svc.classes_, np.int64),
                 np.asarray(svc.support_vectors_, np.float64),
                 np.asarray(svc.n_support_, np.int64),
                 np.asarray(dual, np.float64),
                 np.asarray(intercept, np.float64))


def votes(machine: Machine, x: np.ndarray, batch_size: int = 512
          ) -> np.ndarray:
  """One-vs-one votes (Q, num_classes) of float64 feature rows `x`."""
  m = machine
  k = len(m.classes)
  bounds = np.concatenate([[0], np.cumsum(m.n_support)])
  sv_sq = np.einsum('sd,sd->s', m.support_vectors, m.support_vectors)
  out = np.zeros((len(x), m.num_classes))
  bar = console.Bar(-(-len(x) // batch_size), 'SVM', unit='batch')
  for start in range(0, len(x), batch_size):
    xb = x[start:start + batch_size]
    d2 = (np.einsum('qd,qd->q', xb, xb)[:, None] + sv_sq[None]
          - 2.0 * xb @ m.support_vectors.T)
    kern = np.exp(-m.gamma * np.maximum(d2, 0.0))
    # part[i][:, r]: the class-i support vectors' sum against coefficient
    # row r, computed once for all the pairs of class i.
    part = [kern[:, bounds[i]:bounds[i + 1]]
            @ m.dual_coef[:, bounds[i]:bounds[i + 1]].T for i in range(k)]
    rows = np.arange(len(xb))
    pair = 0
    for i in range(k):
      for j in range(i + 1, k):
        dec = part[i][:, j - 1] + part[j][:, i] + m.intercept[pair]
        winner = np.where(dec > 0, m.classes[i], m.classes[j])
        np.add.at(out, (start + rows, winner), 1.0)
        pair += 1
    bar.update()
  bar.close()
  return out


def predict_proba(machine: Machine, images: np.ndarray) -> np.ndarray:
  """Vote fractions (Q, num_classes) of uint8 images."""
  k = len(machine.classes)
  return votes(machine, features(images)) / (k * (k - 1) // 2)


def predict(machine: Machine, images: np.ndarray) -> np.ndarray:
  """libsvm's prediction: most votes, ties to the smaller class."""
  return np.argmax(predict_proba(machine, images), axis=1)


def save(machine: Machine, path: str) -> None:
  with fileio.atomic_path(path) as tmp:
    with open(tmp, 'wb') as f:
      np.savez(f, **dataclasses.asdict(machine))


def load(path: str) -> Machine:
  """The machine saved at `path`; one line if it is missing or broken."""
  if not os.path.exists(path):
    raise UserError(f'{path}: missing; run --mode train on this workdir first')
  try:
    with np.load(path) as f:
      fields = {k.name: f[k.name] for k in dataclasses.fields(Machine)}
  except Exception as e:  # pylint: disable=broad-except
    # np.load raises many types for a damaged file (BadZipFile, EOFError).
    raise UserError(f'{path}: not a saved SVM ({one_line(e)}); train '
                    'again') from e
  fields['gamma'] = float(fields['gamma'])
  fields['num_classes'] = int(fields['num_classes'])
  return Machine(**fields)


def fit(config, workdir: str, compiler_options: dict | None = None):
  """The method's fit (`methods.registry`): fits on `train_split`, saves
  `svm_model.npz` (process 0) for `--mode eval`, and scores `eval_split`
  (and `test_split`); its records add the fit's `fit_seconds` and
  `num_support_vectors`. Returns (None, summary)."""
  del compiler_options  # scikit-learn and NumPy: nothing is compiled.
  t0 = time.time()
  info = data_lib.get_info(config.dataset)
  images, labels = data_lib.load_split(config, config.train_split)
  machine = fit_arrays(images, labels, info.num_classes, config.svm.c,
                       config.svm.gamma)
  fit_seconds = time.time() - t0
  if distributed.is_main():
    save(machine, os.path.join(workdir, MODEL_FILE))
  return None, scoring.score_splits(
      config, workdir, lambda images: predict_proba(machine, images), t0,
      {'fit_seconds': fit_seconds,
       'num_support_vectors': len(machine.support_vectors)})


def probabilities(config, workdir: str, images: np.ndarray,
                  checkpoint_step: int = -1) -> results.Scores:
  """The vote fractions of the workdir's saved machine for `images`."""
  del config, checkpoint_step  # A fit has one: 0.
  return results.Scores(
      predict_proba(load(os.path.join(workdir, MODEL_FILE)), images), 0)
