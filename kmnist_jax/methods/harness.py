"""The one harness every method runs in: it owns the workdir's life.

`fit` checks the config, prepares and locks the workdir, fetches the data,
records the config (refusing a workdir of another run), and then hands over
to the method (`registry`), which trains or fits and writes its own records.
`evaluate` scores a workdir's method on test_split (else eval_split) and
writes the results (`inference.results`). No method repeats any of it.
"""

from __future__ import annotations

import numpy as np

from kmnist_jax.config import base as configlib
from kmnist_jax.config import fields
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.data import check as datacheck
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.inference import results
from kmnist_jax.methods import registry


def fit(config, workdir: str, compiler_options: dict | None = None):
  """Trains or fits `config.model` in `workdir`, resuming a training.

  Returns (the final train state, or None for a fit, and the summary;
  see `registry`). `compiler_options`: XLA options of the method's
  compilations (the tests' smoke runs compile at LLVM level 0).
  """
  method: registry.Method = registry.get(config.model)
  configlib.check_dataset_stats(config)
  fields.check_config(config)
  method.check_config(config)
  workdir_lib.prepare_workdir(workdir)
  workdir_lib.check_same_run(config, workdir)  # Before the lock file exists.
  with workdir_lib.main_process_lock(workdir):
    workdir_lib.check_same_run(config, workdir)  # Before anything is written.
    datacheck.fetch_missing(config)  # All missing files named at once.
    workdir_lib.record_config(config, workdir)
    return method.fit(config, workdir, compiler_options)


def evaluate(config, workdir: str, checkpoint_step: int = -1) -> dict:
  """`--mode eval` of `workdir`: scores test_split (else eval_split) of
  `config` (None: the workdir's own) at `checkpoint_step` (-1: the latest),
  writes `eval_<split>.json` and `probabilities_<split>.npz` (process 0) and
  returns the first's contents."""
  return evaluate_probabilities(config, workdir, checkpoint_step)[0]


def evaluate_probabilities(config, workdir: str, checkpoint_step: int = -1
                           ) -> tuple[dict, np.ndarray, np.ndarray]:
  """`evaluate`, returning (result, probabilities (N, C), labels (N,))."""
  config = workdir_lib.eval_config(config, workdir)
  method: registry.Method = registry.get(config.model)
  split = config.test_split or config.eval_split
  images, labels, indices = data_lib.load_indexed(config, split)
  scores = method.probabilities(config, workdir, images, checkpoint_step)
  result = metrics_lib.from_probabilities(
      scores.probabilities, labels,
      data_lib.get_info(config.dataset).num_classes, scores.log_probs)
  result.update(split=split, dataset=config.dataset,
                checkpoint_step=scores.step)
  results.write_results(config, workdir, images, labels, indices,
                        scores.probabilities, result, plots=method.trains)
  return result, scores.probabilities, labels


def checkpoint_step(workdir: str, checkpoint_step: int = -1) -> int:
  """The step `evaluate(.., workdir, checkpoint_step)` scores."""
  method = registry.get(workdir_lib.load_workdir_config(workdir).model)
  return method.checkpoint_step(workdir, checkpoint_step)
