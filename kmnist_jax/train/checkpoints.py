"""Orbax checkpoints: train state + data-iterator state, latest N and best.

Each checkpoint under `workdir/checkpoints/<step>/` holds two items:
`state` (params, optimizer state, batch statistics, step, RNG key and the
running train metrics of the current epoch) and `meta` (JSON: the
data-iterator state and the model name). Saves are asynchronous; `close()`
waits for them. Orbax writes each step to a temporary directory and renames
it when complete, so a kill mid-save never leaves a readable broken step.
A step that is unreadable all the same (a disk fault, a file damaged later)
is moved to `workdir/unreadable_checkpoints/` when a resume falls back to
the step before it, which replays the same steps.
"""

from __future__ import annotations

import logging as std_logging
import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from kmnist_jax.core import distributed
from kmnist_jax.core.errors import UserError, one_line

BEST_METRIC = 'accuracy'


def _metric(metrics: dict) -> float:
  return float(metrics[BEST_METRIC])


# Orbax warnings that say nothing to a user: each save without eval metrics
# (epochs before `config.eval_from_epoch` and mid-epoch saves have none by
# design), and two on every read-only open (eval, predict, ensembles), one
# of them ("Given directory is read only") printed for writable folders too.
_NOISE = ('did not provide metrics', 'read_only=True, setting '
          'save_interval_steps=0', 'Given directory is read only')


class _NoMetricsNote(std_logging.Filter):
  """Drops `_NOISE`, Orbax's warnings that say nothing to a user."""

  def filter(self, record):
    message = record.getMessage()
    return not any(n in message for n in _NOISE)


def _quiet_missing_metrics() -> None:
  log = logging.get_absl_logger()
  if not any(isinstance(f, _NoMetricsNote) for f in log.filters):
    log.addFilter(_NoMetricsNote())


class _Manager(ocp.CheckpointManager):
  """A CheckpointManager that opens a folder whose steps hold a torn metrics
  file: Orbax reads every step's metrics on opening, and one unreadable file
  failed the whole folder. Such steps are listed in `unreadable`, and
  `Checkpointer.restore` refuses them like any other unreadable step."""

  def __init__(self, *args, **kwargs):
    self.unreadable: dict[int, str] = {}
    super().__init__(*args, **kwargs)

  def _get_metrics(self, step: int):
    try:
      return super()._get_metrics(step)
    except Exception as e:  # pylint: disable=broad-except
      # JSONDecodeError, UnicodeDecodeError, OSError: a damaged file.
      self.unreadable[step] = f'metrics: {one_line(e)}'
      return None

  def reload(self):
    self.unreadable = {}
    super().reload()


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for this project's layout."""

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f'{self.directory}: no checkpoints directory; train '
                      'first (--mode train) or check --workdir')
    policy = cm.AnyPreservationPolicy([
        cm.LatestN(n=max(keep, 1)),
        cm.BestN(get_metric_fn=_metric, n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    _quiet_missing_metrics()
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=_metric, best_mode='max',
        keep_checkpoints_without_metrics=True, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=True)
    try:
      self.manager = _Manager(
          self.directory, options=options, item_names=('state', 'meta'))
    except (OSError, ValueError) as e:
      raise UserError(f'{self.directory}: cannot open checkpoints ({e})') from e

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the highest eval accuracy, else the latest."""
    best = self.manager.best_step()
    return best if best is not None else self.latest_step()

  def save(self, step: int, state: Any, meta: dict,
           metrics: dict | None = None) -> None:
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=True)

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `step` into the shapes and shardings of `abstract_state`."""
    if step not in self.all_steps():
      raise UserError(f'{self.directory}: no checkpoint at step {step}; '
                      f'available: {self.all_steps() or "none"}')
    if step in self.manager.unreadable:
      raise UserError(f'{self.directory}/{step}: checkpoint is unreadable '
                      f'({self.manager.unreadable[step]})')
    try:
      meta = self.restore_meta(step)
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises a bare Exception for damaged array data.
      text = str(e).strip()
      msg = one_line(text.splitlines()[0].split(' See full TensorStore')[0]
                     if text else e)
      raise UserError(f'{self.directory}/{step}: checkpoint does not match '
                      f'this model or is unreadable ({msg})') from e
    return out['state'], meta

  def restore_first(self, steps, abstract_state: Any, check=None):
    """(step, state, meta, failed): the first of `steps` that restores on
    every process, after `check(step)` (which may raise); `failed` lists the
    (step, error) of those before it, each with a warning. (None, None,
    None, failed) when none restores."""
    failed = []
    for step in steps:
      if check is not None:
        check(step)
      error = None
      try:
        state, meta = self.restore(step, abstract_state)
      except UserError as e:
        error = e
      # Every process takes the same step: one that cannot read it sends
      # all of them to the step before.
      if distributed.any_process(error is not None):
        error = error or UserError(f'{self.directory}/{step}: unreadable on '
                                   'another process')
        logging.warning('%s; trying the checkpoint before it', error)
        failed.append((step, error))
        continue
      return step, state, meta, failed
    return None, None, None, failed

  def restore_latest(self, abstract_state: Any
                     ) -> tuple[int, Any, dict] | None:
    """(step, state, meta) of the newest checkpoint that restores, or None
    when there is no checkpoint.

    An unreadable newer step gets a warning and is moved to
    `workdir/unreadable_checkpoints/` (so that the resumed run can save that
    step again); if no step restores, one line says so.
    """
    step, state, meta, failed = self.restore_first(
        sorted(self.all_steps(), reverse=True), abstract_state)
    if step is not None:
      if failed:
        self._set_aside([s for s, _ in failed])
        logging.warning('Resuming from step %d: the newer checkpoint(s) %s '
                        'were unreadable and are kept in %s', step,
                        ', '.join(str(s) for s, _ in failed),
                        self.unreadable_directory)
      return step, state, meta
    if failed:
      raise UserError(
          f'{self.directory}: no readable checkpoint (steps '
          f'{", ".join(str(s) for s, _ in failed)} failed; latest: '
          f'{failed[0][1]}); remove the checkpoints folder to start afresh, '
          'or use a new --workdir')
    return None

  @property
  def unreadable_directory(self) -> str:
    return os.path.join(os.path.dirname(self.directory),
                        'unreadable_checkpoints')

  def _set_aside(self, steps: list[int]) -> None:
    """Moves checkpoint `steps` out of the manager's folder."""
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      os.makedirs(self.unreadable_directory, exist_ok=True)
      for step in steps:
        target = os.path.join(self.unreadable_directory, str(step))
        n = 1
        while os.path.exists(target):
          target = os.path.join(self.unreadable_directory, f'{step}.{n}')
          n += 1
        os.rename(os.path.join(self.directory, str(step)), target)
    distributed.barrier('kmnist_jax_set_aside')  # Moved before any reload.
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    if self.manager is not None:
      self.manager.wait_until_finished()
      self.manager.close()
      self.manager = None
