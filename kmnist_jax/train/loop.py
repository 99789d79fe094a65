"""Training: `train(config, workdir)`, the loop.

The steps and the train state are in `steps`. The network method
(`methods.network`) fits with `train`, in a workdir that the harness
(`methods.harness`) has prepared, locked and recorded the config in;
`--mode eval` of a saved checkpoint is `inference.evaluate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from kmnist_jax.core import console
from kmnist_jax.core import distributed
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.core.errors import UserError
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.data import labels as labels_lib
from kmnist_jax.train import batches
from kmnist_jax.models import factory as models
from kmnist_jax.train import augment
from kmnist_jax.train import checkpoints as checkpointing
from kmnist_jax.train import optim
from kmnist_jax.train import steps
from kmnist_jax.train import state as train_state
from kmnist_jax.train import stopping

StopRequest = stopping.StopRequest  # Its old home.


def check_config(config: ml_collections.ConfigDict) -> None:
  """One clear line before any work (each field's type and range checked
  already, by `config.fields`): the model, optimizer, augmentation and
  device count that the fields make up together."""
  if config.model not in models.MODELS:
    models.create_model(config.model, 1)  # Raises with the valid names.
  optim.create_optimizer(config, 1)  # Unknown optimizer / schedule.
  augment.check_config(config)
  devices = jax.device_count()
  if config.batch_size % devices:
    raise UserError(
        f'config.batch_size={config.batch_size}: must be a multiple of the '
        f'{devices} devices ({jax.process_count()} process(es)); it is '
        'the global batch, split evenly across them')


@dataclasses.dataclass
class Run:
  """What the loop's helpers share: the run's fixed parts and its records."""
  config: ml_collections.ConfigDict
  ckpt: checkpointing.Checkpointer
  writer: metrics_lib.MetricWriter
  steps_per_epoch: int
  wall_offset: float  # Wall time of the run before this process started.
  history: list = dataclasses.field(default_factory=list)
  epoch_seconds: list = dataclasses.field(default_factory=list)
  summary: dict = dataclasses.field(
      default_factory=lambda: {'train': {}, 'eval': {}})
  # `config.log_loss_steps`: the epoch's (loss_sum, count) after the last
  # step, and the 'step' records not yet written.
  loss_mark: tuple = (0.0, 0.0)
  pending: list = dataclasses.field(default_factory=list)

  def wall(self) -> float:
    return self.wall_offset + time.time()

  def write(self, record: dict) -> None:
    self.writer.write(record)
    self.history.append(record)

  def step_loss(self, state: train_state.TrainState, step: int) -> None:
    """Records the loss of train step `step` (1-based) from the epoch's
    running sums, and `state`'s sums as the next step's mark. Waits for the
    step: only the first `config.log_loss_steps` steps call it."""
    sums = tuple(map(float, jax.device_get((state.loss_sum, state.count))))
    if step > 0:  # step 0: the mark of a run that starts or resumes.
      first = (step - 1) % self.steps_per_epoch == 0  # Sums reset before it.
      loss_sum, count = (0.0, 0.0) if first else self.loss_mark
      self.pending.append({
          'step': step, 'epoch': (step - 1) // self.steps_per_epoch + 1,
          'split': 'step', 'loss': (sums[0] - loss_sum) / (sums[1] - count),
          'wall_time': self.wall()})
    self.loss_mark = sums

  def write_pending(self) -> None:
    for record in self.pending:
      self.write(record)
    self.pending.clear()

  def check_finite(self, state: train_state.TrainState) -> None:
    bad = int(state.bad_step)
    if bad >= 0:
      self.ckpt.wait()
      last = self.ckpt.latest_step()
      kept = (f'last good checkpoint: step {last} in {self.ckpt.directory}'
              if last is not None else 'no checkpoint was saved')
      raise UserError(
          f'non-finite loss at step {bad} (epoch '
          f'{bad // self.steps_per_epoch + 1}); stopped, {kept}. Try a '
          'lower config.learning_rate')

  def save(self, state: train_state.TrainState, metrics=None) -> None:
    self.check_finite(state)
    self.write_pending()
    step = int(state.step)
    meta = {'iterator': batches.iterator_state(
                step, self.steps_per_epoch, self.config.seed),
            'model': self.config.model, 'dataset': self.config.dataset,
            'wall_time': self.wall()}
    self.ckpt.save(step, state, meta, metrics)


def epoch_batches(config, epoch: int, num_examples: int, spe: int, sharding):
  """(steps, batch) example indices of `epoch`, the batch axis sharded."""
  perm = np.asarray(batches.epoch_permutation(config.seed, epoch,
                                                     num_examples))
  return distributed.put_global(
      perm[:spe * config.batch_size].reshape(spe, config.batch_size),
      sharding)


def restore_or_init(config, ckpt, num_classes: int, tx, sharding,
                    steps_per_epoch: int = 0,
                    compiler_options: dict | None = None
                    ) -> tuple[train_state.TrainState, float, int | None]:
  """(train state, wall time so far, restored step or None): the latest
  readable checkpoint's (unreadable newer ones are set aside), else new
  (compiled with `compiler_options`)."""
  restored = ckpt.restore_latest(
      train_state.abstract_state(config, num_classes, tx, sharding))
  if restored is None:
    # Built on the devices, replicated: nothing crosses hosts.
    return train_state.jit_init_state(config, num_classes, tx, sharding,
                                compiler_options)(), 0.0, None
  latest, state, meta = restored
  spe = steps_per_epoch or max(latest, 1)
  console.say(f'Resumed from {ckpt.directory} at step {latest} '
              f'({epoch_of(latest, spe, config.num_epochs)}).')
  return state, meta.get('wall_time', 0.0), latest


def train(config: ml_collections.ConfigDict, workdir: str,
          compiler_options: dict | None = None
          ) -> tuple[train_state.TrainState, dict]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Returns the final train state and a dict of metrics: `train`, `eval` (and
  `test` when `config.test_split` is set), each the metrics of the last
  epoch, plus `history` (all records written to metrics.jsonl this run),
  `steps_per_epoch`, `epoch_seconds`, `interrupted` (the signal name when
  SIGTERM/SIGINT stopped the run early, else ''), `step` and `total_steps`,
  `already_complete` (the workdir had finished before this call) and
  `wall_seconds` (over all resumes); `console.summary_lines` prints it.
  `compiler_options`: XLA options of the init, train and eval steps.
  """
  with contextlib.ExitStack() as stack:
    t_start = time.time()
    num_classes = data_lib.get_info(config.dataset).num_classes
    mesh = distributed.make_mesh()
    repl = NamedSharding(mesh, P())
    train_images, train_labels = data_lib.load_split(config,
                                                     config.train_split)
    eval_images, eval_labels = data_lib.load_split(config, config.eval_split)
    plotted = config.write_plots and distributed.is_main()
    plot_data = (labels_lib.plot_inputs(config, train_labels, eval_labels)
                 if plotted else None)
    spe = batches.steps_per_epoch(len(train_images), config.batch_size,
                                         config.train_split)
    total_steps = spe * config.num_epochs
    tx = optim.create_optimizer(config, spe)
    ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
    stack.callback(ckpt.close)  # Waits for async saves, also on errors.
    writer = metrics_lib.MetricWriter(workdir, enabled=distributed.is_main())
    stack.callback(writer.close)
    state, wall_before, latest = restore_or_init(config, ckpt, num_classes, tx,
                                                 repl, spe, compiler_options)
    already_complete = latest is not None and latest >= total_steps
    if already_complete:
      console.say(f'already complete: {workdir} has finished all '
                  f'{config.num_epochs} epochs (step {latest}); nothing to '
                  'train')
    writer.truncate_after(-1 if latest is None else latest)
    run = Run(config, ckpt, writer, spe, wall_before - t_start)
    if int(state.step) < config.log_loss_steps:
      run.step_loss(state, 0)

    graphdef = train_state.model_graphdef(config, num_classes)
    train_step = steps.make_train_step(graphdef, tx, config, num_classes,
                                       config.batch_size, mesh,
                                       compiler_options)
    eval_step = steps.make_eval_step(graphdef, num_classes,
                                     config.eval_batch_size,
                                     config.tta_shift,
                                     config.matmul_precision,
                                     compiler_options)
    # The images go to every device once; per epoch only indices follow.
    images_dev = distributed.put_global(train_images, repl)
    labels_dev = distributed.put_global(train_labels.astype(np.int32), repl)
    eval_data = batches.make_eval_data(eval_images, eval_labels,
                                       config.eval_batch_size, repl)
    perm_sharding = NamedSharding(mesh, P(None, 'data'))

    state, interrupted = train_loop(
        run, state, train_step, (images_dev, labels_dev, len(train_images)),
        perm_sharding, lambda state, t: end_of_epoch(
            run, state, eval_step, eval_data, num_classes, t))
    if not interrupted:
      final_evaluations(run, state, eval_step, eval_data, num_classes, repl)
    ckpt.close()
    if not interrupted and plotted:
      write_plots(config, workdir, train_images, train_labels, plot_data,
                  run.summary['eval'])
  run.summary.update(history=run.history, steps_per_epoch=spe,
                     epoch_seconds=run.epoch_seconds, interrupted=interrupted,
                     step=int(state.step), total_steps=total_steps,
                     already_complete=already_complete,
                     wall_seconds=run.wall())
  return state, run.summary


def train_loop(run: Run, state: train_state.TrainState, train_step, train_data,
               perm_sharding, epoch_end_fn) -> tuple[train_state.TrainState, str]:
  """The steps from `state`'s to the last: (final state, the name of the
  signal that stopped them early or ''). `train_data`: (device images,
  device labels, number of examples); `epoch_end_fn(state, t_epoch)` ends
  an epoch (`end_of_epoch`)."""
  config, spe = run.config, run.steps_per_epoch
  total_steps = spe * config.num_epochs
  loss_steps = config.log_loss_steps
  interrupted, perm, t_epoch, log_mark = '', None, 0.0, (0.0, 0)
  bar = console.Bar(0, '', enabled=False)
  with stopping.StopRequest(run.ckpt.directory) as stop:
    for step in range(int(state.step), total_steps):
      epoch, i = divmod(step, spe)
      if perm is None or i == 0:
        perm = epoch_batches(config, epoch, train_data[2], spe, perm_sharding)
        t_epoch = time.time()
        log_mark = (t_epoch, step)
        bar = console.Bar(spe, f'epoch {epoch + 1}/{config.num_epochs}',
                          initial=i)
      state = train_step(state, train_data[0], train_data[1], perm, i)
      done = step + 1
      if bar.on:  # The bar shows finished steps, not dispatched ones.
        jax.block_until_ready(state.step)
        bar.update()
      if done <= loss_steps:
        run.step_loss(state, done)
      log_step = done % config.log_every_steps == 0
      if log_step:
        run.check_finite(state)
        log_mark = log_progress(log_mark, done, total_steps, spe, bar.on)
      epoch_end = done % spe == 0
      if epoch_end:
        bar.close()
        state = epoch_end_fn(state, t_epoch)
      interrupted = stop.requested(sync_point=epoch_end or log_step)
      if interrupted:
        bar.close()
        if not epoch_end:  # The epoch's end saved it already.
          run.save(state)
        break
      if (not epoch_end and config.checkpoint_every_steps
          and done % config.checkpoint_every_steps == 0):
        run.save(state)
    bar.close()
  return state, interrupted


def epoch_of(step: int, steps_per_epoch: int, num_epochs: int) -> str:
  """Where step `step` (finished steps) stands, in the one numbering
  used everywhere: epoch k holds steps (k-1)*spe+1 .. k*spe."""
  if step and step % steps_per_epoch == 0:
    return f'end of epoch {step // steps_per_epoch}/{num_epochs}'
  return f'epoch {step // steps_per_epoch + 1}/{num_epochs}'


def log_progress(mark: tuple[float, int], step: int, total_steps: int,
                 steps_per_epoch: int, bar: bool = False) -> tuple[float, int]:
  """Prints the speed since `mark` (time, step), unless a progress bar
  shows it (`bar`); returns the new mark."""
  now = time.time()
  rate = (step - mark[1]) / max(now - mark[0], 1e-9)
  if not bar:
    epochs = total_steps // steps_per_epoch
    eta = console.clock((total_steps - step) / max(rate, 1e-9))
    console.say(f'step {step}/{total_steps} (epoch '
                f'{(step - 1) // steps_per_epoch + 1}/{epochs}): '
                f'{rate:.1f} steps/s, ETA {eta}')
  return now, step


def end_of_epoch(run: Run, state: train_state.TrainState, eval_step, eval_data,
                 num_classes: int, t_epoch: float) -> train_state.TrainState:
  """Train metrics from the in-state sums (then reset), eval, records, a
  checkpoint with the eval accuracy; returns the state. The epoch started
  at time `t_epoch`. Before `config.eval_from_epoch` (except the last
  epoch): no eval, and the checkpoint has no metric."""
  run.check_finite(state)  # Also waits for the epoch's last step.
  seconds = time.time() - t_epoch
  run.epoch_seconds.append(seconds)
  step = int(state.step)
  sums = jax.device_get((state.loss_sum, state.correct_sum, state.count))
  train_m = {'loss': float(sums[0] / sums[2]),
             'accuracy': float(sums[1] / sums[2])}
  state = state.replace(loss_sum=jnp.zeros_like(state.loss_sum),
                        correct_sum=jnp.zeros_like(state.correct_sum),
                        count=jnp.zeros_like(state.count))
  base = {'step': step, 'epoch': step // run.steps_per_epoch}
  run.summary['train'] = train_m
  if base['epoch'] < min(run.config.eval_from_epoch,
                         run.config.num_epochs):
    run.write_pending()
    run.write(dict(base, split='train', **train_m, wall_time=run.wall()))
    console.say(f'epoch {base["epoch"]}/{run.config.num_epochs}: train loss '
                f'{train_m["loss"]:.4f} acc {train_m["accuracy"]:.4f} '
                f'({seconds:.1f} s)')
    run.save(state)
    return state
  with console.Bar(eval_data.num_batches, 'eval', unit='batch') as bar:
    eval_m = steps.evaluate_arrays(eval_step, state, eval_data, num_classes,
                                   bar.update if bar.on else None)
  run.write_pending()
  run.write(dict(base, split='train', **train_m, wall_time=run.wall()))
  run.write(dict(base, split='eval', loss=eval_m['loss'],
                 accuracy=eval_m['accuracy'],
                 balanced_accuracy=eval_m['balanced_accuracy'],
                 wall_time=run.wall()))
  console.say(f'epoch {base["epoch"]}/{run.config.num_epochs}: train loss '
              f'{train_m["loss"]:.4f} acc {train_m["accuracy"]:.4f} | eval '
              f'loss {eval_m["loss"]:.4f} acc {eval_m["accuracy"]:.4f} '
              f'({seconds:.1f} s)')
  run.summary['train'], run.summary['eval'] = train_m, eval_m
  run.save(state, {'accuracy': eval_m['accuracy']})
  return state


def final_evaluations(run: Run, state: train_state.TrainState, eval_step,
                      eval_data, num_classes: int, sharding) -> None:
  """The eval metrics if no epoch ended in this run, and the test split's."""
  config, step = run.config, int(state.step)
  if not run.summary['eval'] and step > 0:
    run.summary['eval'] = steps.evaluate_arrays(eval_step, state, eval_data,
                                                num_classes)
  if not config.test_split:
    return
  test_images, test_labels = data_lib.load_split(config, config.test_split)
  test_data = batches.make_eval_data(
      test_images, test_labels, config.eval_batch_size, sharding)
  test_m = steps.evaluate_arrays(eval_step, state, test_data, num_classes)
  run.summary['test'] = test_m
  run.write({'step': step, 'epoch': step // run.steps_per_epoch,
             'split': 'test', 'loss': test_m['loss'],
             'accuracy': test_m['accuracy'],
             'balanced_accuracy': test_m['balanced_accuracy'],
             'wall_time': run.wall()})


def write_plots(config, workdir, train_images, train_labels, inputs,
                eval_metrics):
  try:
    from kmnist_jax.report import plots  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  plots.write_training_plots(config, workdir, train_images, train_labels,
                             inputs, eval_metrics)
