"""Classification metrics and the metric writer (JSONL + TensorBoard)."""

from __future__ import annotations

import json
import math
import os

from absl import logging
import numpy as np

from kmnist_jax.core import fileio
from kmnist_jax.core.errors import UserError, one_line


def summarize_confusion(confusion: np.ndarray, loss_sum: float) -> dict:
  """Metrics from a confusion matrix (rows: true class, columns: predicted).

  `balanced_accuracy` is the mean of the per-class accuracies (recalls), as
  in the rois-codh K49 benchmark; classes absent from the split are skipped.
  """
  confusion = np.asarray(confusion, np.int64)
  n = int(confusion.sum())
  support = confusion.sum(axis=1)
  correct = np.diag(confusion)
  per_class = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
  present = support > 0
  return {
      'loss': float(loss_sum) / max(n, 1),
      'accuracy': float(correct.sum()) / max(n, 1),
      'balanced_accuracy': float(np.mean(per_class[present])) if present.any()
                           else float('nan'),
      'per_class_accuracy': [None if math.isnan(v) else float(v)
                             for v in per_class],
      'num_examples': n,
  }


def with_confusion(confusion: np.ndarray, loss_sum: float) -> dict:
  """`summarize_confusion` plus the matrix itself, as nested lists."""
  out = summarize_confusion(confusion, loss_sum)
  out['confusion_matrix'] = np.asarray(confusion).tolist()
  return out


def from_probabilities(probs: np.ndarray, labels: np.ndarray,
                       num_classes: int,
                       log_probs: np.ndarray | None = None) -> dict:
  """Metrics of per-example class probabilities (N, C) against labels.

  The prediction is the first class of highest probability. The loss is
  the mean of -log_probs[label] when `log_probs` is given, else the log loss
  of `probs` clipped at 1e-15 as scikit-learn's log_loss.
  """
  labels = np.asarray(labels, np.int64)
  rows = np.arange(len(labels))
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, np.argmax(probs, axis=1)), 1)
  if log_probs is not None:
    losses = -np.asarray(log_probs, np.float64)[rows, labels]
  else:
    losses = -np.log(np.clip(np.asarray(probs, np.float64)[rows, labels],
                             1e-15, 1.0))
  return with_confusion(confusion, float(losses.sum()))


class MetricWriter:
  """Appends one JSON object per line to `metrics.jsonl`, mirrors scalars to
  TensorBoard (tensorboardX, no TensorFlow). Only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = enabled
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      folder = os.path.join(workdir, 'tensorboard')
      if os.path.lexists(folder) and not os.path.isdir(folder):
        raise UserError(f'{folder}: not a folder; expected the run\'s '
                        'TensorBoard folder (remove or rename it)')
      self._tb = SummaryWriter(folder)

  def truncate_after(self, step: int) -> None:
    """Drops records newer than `step` (a resume replays them exactly), and
    a torn last line (see `read_metrics`)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    keep = [r for r in read_metrics(self.path) if r['step'] <= step]
    with fileio.atomic_path(self.path) as tmp:
      with open(tmp, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in keep)

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    # Not through a link: a planted metrics.jsonl symlink would have the
    # records appended to its target.
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                 | getattr(os, 'O_NOFOLLOW', 0), 0o666)
    with os.fdopen(fd, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for k, v in record.items():
      if k not in ('step', 'epoch', 'split') and isinstance(v, (int, float)):
        self._tb.add_scalar(f'{record["split"]}/{k}', v, record['step'])
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      tb, self._tb = self._tb, None
      try:
        tb.close()
      except OSError:
        # A full disk fails the final flush, which leaves tensorboardX's
        # writer thread waiting on a queue that is then closed under it.
        worker = getattr(getattr(getattr(tb, 'file_writer', None),
                                 'event_writer', None), '_worker', None)
        if worker is not None and worker.is_alive():
          worker.stop()
        raise


def read_metrics(path: str) -> list[dict]:
  """The records of a metrics.jsonl file.

  A last line that is not a complete record (torn by a power loss or a full
  disk) is dropped with a warning; any other bad line is an error naming the
  file and line.
  """
  try:
    with open(path, 'rb') as f:
      lines = f.read().decode('utf-8', errors='replace').split('\n')
  except OSError as e:
    raise UserError(f'{path}: cannot read metrics ({one_line(e)})') from e
  numbered = [(i + 1, line) for i, line in enumerate(lines)
              if line.strip().strip('\0')]
  records = []
  for n, line in numbered:
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(
          record.get('step'), int):
        raise ValueError('expected a JSON object with an integer step')
    except ValueError as e:
      if n == numbered[-1][0]:
        logging.warning('%s, line %d: dropped a torn last record (%s)', path,
                        n, one_line(e, 100))
        break
      raise UserError(f'{path}, line {n}: not a metrics record '
                      f'({one_line(e, 100)}); expected one JSON object per '
                      'line') from e
    records.append(record)
  return records
