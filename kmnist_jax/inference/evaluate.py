"""A trained network's scores: restore a checkpoint, and its class
probabilities of some images through `steps.infer`, the one inference
function that `--mode predict`, ensembles and the eval plots use too.
"""

from __future__ import annotations

import os

from absl import logging
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core import console
from kmnist_jax.core.errors import UserError
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.inference import results
from kmnist_jax.train import checkpoints as checkpointing
from kmnist_jax.train import optim
from kmnist_jax.train import steps
from kmnist_jax.train import state as train_state
from kmnist_jax.core import distributed


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
    repl = NamedSharding(mesh or distributed.make_mesh(), P())
    # Any optimizer with this config restores the same state tree.
    tx = optim.create_optimizer(config, 1)
    graphdef = train_state.model_graphdef(config, info.num_classes)
    abstract = train_state.abstract_state(config, info.num_classes, tx, repl)
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


def probabilities(config, workdir: str, images: np.ndarray,
                  checkpoint_step: int = -1) -> results.Scores:
  """The network's scores of uint8 `images` (N, 28, 28) at `checkpoint_step`
  (-1: the latest readable), with `config`'s test-time augmentation, matmul
  precision and eval batch size."""
  _, graphdef, state, step = restore_for_inference(workdir, checkpoint_step)
  batches = -(-len(images) // config.eval_batch_size)
  split = config.test_split or config.eval_split
  with console.Bar(batches, f'eval {split}', unit='batch') as bar:
    log_probs = steps.infer(
        steps.make_infer_fn(graphdef, config.tta_shift,
                            config.matmul_precision), state,
        images, config.eval_batch_size, bar.update if bar.on else None)
  return results.Scores(steps.probabilities(log_probs), step, log_probs)
