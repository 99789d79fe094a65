"""Ensembles: average the class probabilities of several trained workdirs.

  python -m kmnist_jax.main --mode eval --workdir W1 --ensemble W2 --ensemble W3

Every member is scored on the same split (test_split, else eval_split, of
`--config` or of W1's saved config), each with its own test-time
augmentation (`tta_shift`); k-NN workdirs take part with their normalised
votes. Writes `W1/ensemble_eval_<split>.json`: the ensemble's metrics
(accuracy, balanced accuracy, per-class accuracy, confusion matrix) and
each member's accuracy.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kmnist_jax import augment
from kmnist_jax import data as data_lib
from kmnist_jax import input_pipeline
from kmnist_jax import knn
from kmnist_jax import metrics as metrics_lib
from kmnist_jax import train
from kmnist_jax.errors import UserError


def _probs_fn(graphdef, tta_shift: int):

  @jax.jit
  def probs(params, batch_stats, images):
    model = nnx.merge(graphdef, params, batch_stats)
    logits = augment.tta_logits(
        lambda v: model(v, train=False).astype(jnp.float32),
        input_pipeline.to_float(images), tta_shift)
    return jax.nn.softmax(logits)

  return probs


def member_probs(workdir: str, images: np.ndarray, checkpoint_step: int = -1,
                 data_dir: str = '') -> tuple[np.ndarray, int]:
  """(probabilities (N, C) of uint8 images, checkpoint step) of a workdir."""
  saved = train.load_workdir_config(workdir)
  if saved.model in train.KNN_METHODS:
    return knn.predict_proba(knn.load_fitted(workdir, data_dir), images), 0
  config, graphdef, state, step = train.restore_for_inference(
      workdir, checkpoint_step)
  fn = _probs_fn(graphdef, config.get('tta_shift', 0))
  b = config.eval_batch_size
  out = []
  for start in range(0, len(images), b):
    batch = images[start:start + b]
    pad = np.zeros((b - len(batch),) + batch.shape[1:], np.uint8)
    p = fn(state.params, state.batch_stats, np.concatenate([batch, pad]))
    out.append(np.asarray(jax.device_get(p), np.float64)[:len(batch)])
  return np.concatenate(out), step


def _metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  pred = np.argmax(probs, axis=1)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, pred), 1)
  p_true = probs[np.arange(len(labels)), labels]
  out = metrics_lib.summarize_confusion(
      confusion, float(-np.log(np.clip(p_true, 1e-15, 1.0)).sum()))
  out['confusion_matrix'] = confusion.tolist()
  return out


def evaluate(workdirs: list[str], config=None,
             checkpoint_step: int = -1) -> dict:
  """Scores the mean probability of `workdirs`; see the module docstring."""
  if len(workdirs) < 2:
    raise UserError('--ensemble: expected at least two workdirs in all, got '
                    f'{len(workdirs)}')
  config = config or train.load_workdir_config(workdirs[0])
  info = data_lib.get_info(config.dataset)
  for w in workdirs:
    ds = train.load_workdir_config(w).dataset
    if ds != config.dataset:
      raise UserError(f'--ensemble {w}: trained on {ds!r}, the ensemble is '
                      f'scored on {config.dataset!r}')
  split = config.test_split or config.eval_split
  images, labels = data_lib.load(config.dataset, split,
                                 config.data_dir or None)
  total, members, steps = None, [], []
  for w in workdirs:
    p, step = member_probs(w, images, checkpoint_step, config.data_dir)
    members.append({'workdir': w, 'checkpoint_step': step,
                    'accuracy': float(np.mean(np.argmax(p, 1) == labels))})
    steps.append(step)
    total = p if total is None else total + p
  result = _metrics(total / len(workdirs), np.asarray(labels, np.int64),
                    info.num_classes)
  result.update(
      split=split, dataset=config.dataset, checkpoint_step=steps,
      metric=info.metric, members=members,
      checksums=data_lib.file_checksums(config.dataset, split,
                                        config.data_dir or None))
  if jax.process_index() == 0:
    path = os.path.join(workdirs[0],
                        f'ensemble_eval_{train.split_name(split)}.json')
    train.write_json_atomic(path, result)
    result['path'] = path
  return result
