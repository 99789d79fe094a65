"""Ensembles: average the class probabilities of several trained workdirs.

  python -m kmnist_jax.main --mode eval --workdir W1 --ensemble W2 --ensemble W3

Every member is scored on the same split (test_split, else eval_split, of
`--config` or of W1's saved config), each with its own test-time
augmentation (`tta_shift`); k-NN and SVM workdirs take part with their
normalised votes. A member's probabilities are those its `--mode eval` wrote
(`Wi/probabilities_<split>.npz`) when that file is of the same checkpoint,
config and data; else the member is evaluated first, which writes it.
Writes `W1/ensemble_eval_<split>.json`: the ensemble's metrics (accuracy,
balanced accuracy, per-class accuracy, confusion matrix) and each member's
accuracy.
"""

from __future__ import annotations

import os

import numpy as np

from kmnist_jax.config import fields
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core import distributed
from kmnist_jax.core import fileio
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.core.errors import UserError
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.data import splits
from kmnist_jax.inference import results
from kmnist_jax.methods import harness


def member_probs(workdir: str, config, checkpoint_step: int = -1
                 ) -> tuple[np.ndarray, np.ndarray, int]:
  """(probabilities (N, C), labels (N,), checkpoint step) of a workdir on
  `config`'s test_split (else eval_split), read from its
  `probabilities_<split>.npz` when that is current."""
  saved = workdir_lib.load_workdir_config(workdir)
  member = saved.copy_and_resolve_references()
  with member.unlocked():
    member.update(test_split=config.test_split, eval_split=config.eval_split,
                  data_dir=config.data_dir)
  split = member.test_split or member.eval_split
  step = harness.checkpoint_step(workdir, checkpoint_step)
  found = results.read_probabilities(
      results.probabilities_path(workdir, split),
      results.probabilities_meta(member, workdir, split, step),
      data_lib.get_info(member.dataset).num_classes)
  # Every process recomputes, or none: the network's forward pass is
  # collective.
  if not distributed.any_process(found is None):
    return found[0], found[1], step
  # The user's step, not `step`: a latest step that turns out unreadable
  # falls back to the one before, as `--mode eval` does.
  result, probs, labels = harness.evaluate_probabilities(member, workdir,
                                                         checkpoint_step)
  return probs, labels, result['checkpoint_step']


def evaluate(workdirs: list[str], config=None,
             checkpoint_step: int = -1) -> dict:
  """Scores the mean probability of `workdirs`; see the module docstring."""
  if len(workdirs) < 2:
    raise UserError('--ensemble: expected at least two workdirs in all, got '
                    f'{len(workdirs)}')
  if config is not None:
    fields.check_config(config)
  config = config or workdir_lib.load_workdir_config(workdirs[0])
  info = data_lib.get_info(config.dataset)
  for w in workdirs:
    ds = workdir_lib.load_workdir_config(w).dataset
    if ds != config.dataset:
      raise UserError(f'--ensemble {w}: trained on {ds!r}, the ensemble is '
                      f'scored on {config.dataset!r}')
  split = config.test_split or config.eval_split
  total, labels, members, steps = None, None, [], []
  for w in workdirs:
    p, member_labels, step = member_probs(w, config, checkpoint_step)
    if labels is not None and not np.array_equal(member_labels, labels):
      raise UserError(f'--ensemble {w}: its {split} labels differ from '
                      f'{workdirs[0]}\'s; expected the same examples')
    labels = member_labels
    members.append({'workdir': w, 'checkpoint_step': step,
                    'accuracy': float(np.mean(np.argmax(p, 1) == labels))})
    steps.append(step)
    p = np.asarray(p, np.float64)
    total = p if total is None else total + p
  result = metrics_lib.from_probabilities(total / len(workdirs), labels,
                                          info.num_classes)
  result.update(
      split=split, dataset=config.dataset, checkpoint_step=steps,
      metric=info.metric, members=members,
      checksums=data_lib.file_checksums(config.dataset, split,
                                        config.data_dir or None))
  if distributed.is_main():
    path = os.path.join(workdirs[0],
                        f'ensemble_eval_{splits.split_name(split)}.json')
    try:
      fileio.write_json(path, result)
      result['path'] = path
    except OSError as e:
      result['write_error'] = results.write_error(path, e)
  return result
