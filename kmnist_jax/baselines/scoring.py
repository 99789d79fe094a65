"""A fitted baseline's records: its scores of the eval and test splits."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from kmnist_jax.core import distributed
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.data import datasets as data_lib


def score_splits(config, workdir: str,
                 probabilities: Callable[[np.ndarray], np.ndarray],
                 t0: float, extra: dict | None = None) -> dict:
  """A fit's summary: the metrics of `probabilities(images)` on the eval
  split (and the test split, if any), one epoch-0 record each in
  metrics.jsonl (process 0), with `extra` in every record and as 'train'.
  `t0`: when the fit started (the records' wall time counts from it)."""
  extra = dict(extra or {})
  num_classes = data_lib.get_info(config.dataset).num_classes
  writer = metrics_lib.MetricWriter(workdir, enabled=distributed.is_main())
  summary, history = {'train': extra}, []
  try:
    writer.truncate_after(-1)
    splits = [('eval', config.eval_split)]
    if config.test_split:
      splits.append(('test', config.test_split))
    for name, split in splits:
      images, labels = data_lib.load_split(config, split)
      m = metrics_lib.from_probabilities(probabilities(images), labels,
                                         num_classes)
      summary[name] = m
      rec = {'step': 0, 'epoch': 0, 'split': name, 'loss': m['loss'],
             'accuracy': m['accuracy'],
             'balanced_accuracy': m['balanced_accuracy'], **extra,
             'wall_time': time.time() - t0}
      writer.write(rec)
      history.append(rec)
  finally:
    writer.close()
  summary.update(history=history, steps_per_epoch=0, epoch_seconds=[],
                 interrupted='')
  return summary
