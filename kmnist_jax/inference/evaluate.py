"""`--mode eval`: score a saved checkpoint, and restore one for inference.

`evaluate` scores test_split (else eval_split) with `steps.infer`, the same
function `--mode predict`, ensembles and the eval plots use, and writes

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

from absl import logging
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kmnist_jax.train import checkpoints as checkpointing
from kmnist_jax.data import registry
from kmnist_jax.core import console
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.core import distributed
from kmnist_jax.core import fileio
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.train import optim
from kmnist_jax.data import splits
from kmnist_jax.train import steps
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core.errors import UserError, one_line
from kmnist_jax.core.errors import path_error, resource_error


def restore_for_inference(workdir: str, checkpoint_step: int = -1,
                          prefer: str = 'latest', mesh: Mesh | None = None):
  """(config, graphdef, state, step) from a workdir's saved config.

  `checkpoint_step` < 0 picks the latest checkpoint (`prefer='latest'`) or
  the best by eval accuracy (`prefer='best'`). The state is replicated over
  `mesh` (default: all devices), whatever the device count it was saved on.
  """
  config = workdir_lib.load_workdir_config(workdir)
  info = data_lib.get_info(config.dataset)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                    read_only=True)
  try:  # Closing also on errors: no asyncio noise from Orbax at exit.
    first = _pick_step(ckpt, checkpoint_step, prefer)
    repl = NamedSharding(mesh or steps.make_mesh(), P())
    # Any optimizer with this config restores the same state tree.
    tx = optim.create_optimizer(config, 1)
    graphdef = steps.model_graphdef(config, info.num_classes)
    abstract = steps.abstract_state(config, info.num_classes, tx, repl)
    # The latest (or best) step, else, when it is unreadable and no step
    # was asked for, the newest one before it that restores.
    candidates = [first] + ([] if checkpoint_step >= 0 else sorted(
        (s for s in ckpt.all_steps() if s != first), reverse=True))
    step, state, meta, failed = ckpt.restore_first(
        candidates, abstract,
        check=lambda s: _check_checkpoint_model(ckpt, s, config.model))
    if step is None:
      raise failed[0][1]
    if failed:
      logging.warning('Using checkpoint step %d: the newer step %d is '
                      'unreadable', step, first)
    if meta.get('model') != config.model:
      raise UserError(f'{ckpt.directory}/{step}: checkpoint of model '
                      f'{meta.get("model")!r}, config says {config.model!r}')
  finally:
    ckpt.close()
  return config, graphdef, state, step


def _pick_step(ckpt, checkpoint_step: int, prefer: str) -> int:
  if checkpoint_step >= 0:
    return checkpoint_step
  step = ckpt.best_step() if prefer == 'best' else ckpt.latest_step()
  if step is None:
    raise UserError(f'{ckpt.directory}: no checkpoint found; train first')
  return step


def _check_checkpoint_model(ckpt, step: int, model: str) -> None:
  """A clear error for a checkpoint of another model, before restoring."""
  if step not in ckpt.all_steps():
    return  # `restore` names the available steps.
  try:
    saved = ckpt.restore_meta(step).get('model')
  except Exception:  # pylint: disable=broad-except
    return  # Unreadable meta: `restore` reports it.
  if saved is not None and saved != model:
    raise UserError(f'{ckpt.directory}/{step}: checkpoint of model '
                    f'{saved!r}, but {os.path.dirname(ckpt.directory)}/'
                    f'config.json says {model!r}; expected a checkpoint of '
                    'the same model')


def checkpoint_step(workdir: str, checkpoint_step: int = -1) -> int:
  """The step `evaluate(.., checkpoint_step)` would score."""
  config = workdir_lib.load_workdir_config(workdir)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                    read_only=True)
  try:
    return _pick_step(ckpt, checkpoint_step, 'latest')
  finally:
    ckpt.close()


def load_split(config, split: str):
  """(uint8 images, labels, indices of the examples in the base split)."""
  base = splits.parse_split(split).base
  images, labels = data_lib.load(config.dataset, base, config.data_dir or None)
  rows = splits.resolve_split(split, len(labels))
  return (images[rows], labels[rows],
          np.arange(rows.start, rows.stop, dtype=np.int64))


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
      'tta_shift': config.get('tta_shift', 0),
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


def evaluate(config: ml_collections.ConfigDict | None, workdir: str,
             checkpoint_step: int = -1) -> dict:
  """Evaluates a checkpoint on test_split (else eval_split).

  Writes `workdir/eval_<split>.json` and `workdir/probabilities_<split>.npz`
  (process 0) and returns the contents of the first.
  """
  return evaluate_probabilities(config, workdir, checkpoint_step)[0]


def evaluate_probabilities(config: ml_collections.ConfigDict | None,
                           workdir: str, checkpoint_step: int = -1):
  """`evaluate`, returning (result, probabilities (N, C), labels (N,))."""
  config = workdir_lib.eval_config(config, workdir)
  _, graphdef, state, step = restore_for_inference(workdir, checkpoint_step)
  split = config.test_split or config.eval_split
  info = data_lib.get_info(config.dataset)
  images, labels, indices = load_split(config, split)
  batches = -(-len(images) // config.eval_batch_size)
  with console.Bar(batches, f'eval {split}', unit='batch') as bar:
    log_probs = steps.infer(
        steps.make_infer_fn(graphdef, config.get('tta_shift', 0),
                            steps.matmul_precision(config)), state,
        images, config.eval_batch_size, bar.update if bar.on else None)
  probs = steps.probabilities(log_probs)
  result = metrics_lib.from_probabilities(probs, labels, info.num_classes,
                                          log_probs)
  result.update(split=split, dataset=config.dataset, checkpoint_step=step)
  write_results(config, workdir, images, labels, indices, probs, result)
  return result, probs, labels


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
