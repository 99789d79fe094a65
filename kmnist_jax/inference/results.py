"""What a scoring writes and reads back: results, probability files, plots.

Every method's `--mode eval` (`methods.harness.evaluate`) writes

* `W/eval_<split>.json`: accuracy, balanced and per-class accuracy, loss,
  confusion matrix, checkpoint step and the md5 of the split's files;
* `W/probabilities_<split>.npz`: per example, the class `probabilities`
  (N, C) (float32; the k-NN baselines' float64 votes), the `labels` and the
  `indices` of the examples in their base split (`test[8000:]`: 8000, 8001,
  ...), with `meta`, the JSON that `read_probabilities` checks to reuse the
  file.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from absl import logging
import numpy as np

from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core import distributed
from kmnist_jax.core import fileio
from kmnist_jax.core.errors import one_line, path_error, resource_error
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.data import registry
from kmnist_jax.data import splits


class Scores(NamedTuple):
  """A method's scoring of some images: class `probabilities` (N, C), the
  checkpoint `step` they come from (0 for a fit), and the network's
  `log_probs` where it has them (its loss is computed from those)."""
  probabilities: np.ndarray
  step: int
  log_probs: np.ndarray | None = None


def probabilities_path(workdir: str, split: str) -> str:
  return os.path.join(workdir,
                      f'probabilities_{splits.split_name(split)}.npz')


def probabilities_meta(config, workdir: str, split: str, step: int) -> dict:
  """What `W/probabilities_<split>.npz` was computed from: reused only when
  all of it is unchanged."""
  return {
      'split': split, 'checkpoint_step': int(step),
      'config': json.loads(
          workdir_lib.load_workdir_config(workdir).to_json()),
      'tta_shift': config.tta_shift,
      'checksums': data_lib.file_checksums(config.dataset, split,
                                           config.data_dir or None)}


def write_probabilities(path: str, probs: np.ndarray, labels: np.ndarray,
                        indices: np.ndarray, meta: dict) -> None:
  with fileio.atomic_path(path) as tmp:
    with open(tmp, 'wb') as f:
      np.savez(f, probabilities=np.asarray(probs),
               labels=np.asarray(labels, np.int64),
               indices=np.asarray(indices, np.int64),
               meta=np.array(json.dumps(meta, sort_keys=True)))


def check_probabilities(probs, labels, num_classes: int | None = None
                        ) -> str | None:
  """None when `probs` (N, C) are probabilities of `labels` (N,): finite,
  non-negative rows summing to 1, labels in [0, C); else what is wrong."""
  probs, labels = np.asarray(probs), np.asarray(labels)
  if probs.ndim != 2 or probs.dtype.kind != 'f':
    return f'probabilities of shape {probs.shape} {probs.dtype}; expected ' \
        'floats (N, C)'
  n, c = probs.shape
  if num_classes is not None and c != num_classes:
    return f'{c} classes, expected {num_classes}'
  if labels.shape != (n,) or labels.dtype.kind not in 'iu':
    return f'labels of shape {labels.shape} {labels.dtype}; expected ' \
        f'integers ({n},)'
  if n and (labels.min() < 0 or labels.max() >= c):
    return f'labels outside 0..{c - 1}'
  if not np.all(np.isfinite(probs)) or (n and probs.min() < 0):
    return 'probabilities that are not finite and non-negative'
  if n and np.abs(probs.sum(1, dtype=np.float64) - 1).max() > 1e-3:
    return 'probability rows that do not sum to 1'
  return None


def read_probabilities(path: str, meta: dict,
                       num_classes: int | None = None):
  """(probabilities, labels) of `path` if it was computed from `meta` and
  holds valid probabilities (`check_probabilities`); None, with a warning
  when it is damaged, if it is missing, unreadable or stale."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as f:
      if json.loads(str(f['meta'])) != json.loads(
          json.dumps(meta, sort_keys=True)):
        return None
      probs, labels = f['probabilities'], f['labels']
    problem = check_probabilities(probs, labels, num_classes)
  except Exception as e:  # pylint: disable=broad-except
    # np.load raises many types for a damaged file: BadZipFile, EOFError,
    # ValueError, OSError, KeyError, UnicodeDecodeError.
    problem = f'unreadable: {one_line(e)}'
  if problem:
    logging.warning('%s: not reused, computed again (%s)', path, problem)
    return None
  return probs, labels


def write_results(config, workdir: str, images, labels, indices, probs,
                  result: dict, plots: bool = True) -> None:
  """Completes `result` (metric, checksums) and writes it, the
  probabilities and (with `plots` and `config.write_plots`) the eval plots,
  on process 0."""
  split = result['split']
  result.update(
      metric=data_lib.get_info(config.dataset).metric,
      checksums=data_lib.file_checksums(config.dataset, split,
                                        config.data_dir or None))
  if not distributed.is_main():
    return
  path = os.path.join(workdir, f'eval_{splits.split_name(split)}.json')
  target = path  # The file being written, named if it fails.
  try:
    fileio.write_json(path, result)
    target = probabilities_path(workdir, split)
    write_probabilities(
        target, probs, labels, indices,
        probabilities_meta(config, workdir, split, result['checkpoint_step']))
    result['path'] = path
    if plots and config.write_plots:
      target = os.path.join(workdir, 'plots')
      _write_eval_plots(config, workdir, split, images, labels, probs, result)
  except OSError as e:
    result['write_error'] = write_error(target, e)


def write_error(path: str, error: OSError) -> str:
  """The one line for results computed but not written to `path`: what is
  wrong with the folder or the path (`errors.resource_error`, `path_error`)
  where known, and that the result shown is not saved."""
  folder = os.path.dirname(os.path.abspath(path))
  line = resource_error(error, folder) or path_error(error) or (
      f'{folder}: cannot write {os.path.basename(path)} '
      f'({error.strerror or error})')
  return f'{line}; the result above is not saved'


def _write_eval_plots(config, workdir, split, images, labels, probs, result):
  """Confusion matrix and most confident mistakes under workdir/plots."""
  try:
    from kmnist_jax.report import plots  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  classes = data_lib.class_map(config.dataset, config.data_dir or None)
  tag = ' (offline proxy)' if registry.is_proxy(config) else ''
  result['plots'] = plots.write_eval_plots(workdir, split, images, labels,
                                           probs, classes, result, tag)
