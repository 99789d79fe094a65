"""Training and evaluation: `train_and_evaluate(config, workdir)`.

The model is a Flax NNX module, split once into a graphdef and pure state;
the train and eval steps are plain `jax.jit` functions over that state (no
`nnx.jit` dispatch cost per step). The train state is donated to the step.
Dropout keys are `fold_in(key, step)`, batches are a pure function of
(seed, step) (see `input_pipeline`), so a resumed run replays an
uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import re
import signal
import threading
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kmnist_jax import augment
from kmnist_jax import checkpointing
from kmnist_jax import configlib
from kmnist_jax import data as data_lib
from kmnist_jax import distributed
from kmnist_jax import fileio
from kmnist_jax import input_pipeline
from kmnist_jax import metrics as metrics_lib
from kmnist_jax import models
from kmnist_jax import optim
from kmnist_jax.errors import UserError, one_line

_DROPOUT_STREAM = 2
KNN_METHODS = ('knn', 'pca_knn')  # Handled by kmnist_jax.knn, no training.

COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}

# XLA compiler options of the train, eval and init jits (None: XLA's
# defaults). The test suite sets LLVM optimisation level 0 for its `:smoke`
# runs, which compile far longer than they run.
COMPILER_OPTIONS: dict[str, Any] | None = None

# The init jit runs once: XLA's backend optimisation level 1 compiles it in
# under half the time (keras_cnn: 0.4 against 0.84 s) and computes bitwise
# the same state (tests/test_train.py checks every model). Level 0 would
# compile faster still but rounds the truncated-normal initialisers
# differently.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}

# Fields that may change between a run and its resume.
RESUMABLE_FIELDS = frozenset({
    'num_epochs', 'data_dir', 'eval_batch_size', 'test_split',
    'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
    'write_plots'})


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array  # Raw uint32[2] PRNG key: dropout keys fold in the step.
  # Running sums of the current epoch's training metrics.
  loss_sum: jax.Array
  correct_sum: jax.Array
  count: jax.Array
  bad_step: jax.Array  # First step with a non-finite loss; -1 if none.


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices, ('data',))


def compute_dtype(config):
  """Layer compute dtype of `config.compute_dtype`; params stay float32."""
  return COMPUTE_DTYPES[config.get('compute_dtype', 'float32')]


def model_graphdef(config, num_classes: int):
  """The graphdef of `config`'s model, without allocating its params."""
  return split_model(nnx.eval_shape(lambda: models.create_model(
      config.model, num_classes, dtype=compute_dtype(config))))[0]


def split_model(model: nnx.Module):
  """(graphdef, params, batch_stats) of an NNX model."""
  return nnx.split(model, nnx.Param, nnx.BatchStat)


def init_state(config, num_classes: int, tx) -> tuple[Any, TrainState]:
  model = models.create_model(config.model, num_classes, seed=config.seed,
                              dtype=compute_dtype(config))
  graphdef, params, batch_stats = split_model(model)
  zero = lambda: jnp.zeros((), jnp.float32)  # Distinct buffers: donated.
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=tx.init(params), key=jax.random.PRNGKey(config.seed),
      loss_sum=zero(), correct_sum=zero(), count=zero(),
      bad_step=jnp.full((), -1, jnp.int32))
  return graphdef, state


def jit_init_state(config, num_classes: int, tx, sharding):
  """The jitted initial train state, built on the devices with `sharding`."""
  return jax.jit(lambda: init_state(config, num_classes, tx)[1],
                 out_shardings=sharding,
                 compiler_options={**INIT_COMPILER_OPTIONS,
                                   **(COMPILER_OPTIONS or {})})


def abstract_state(config, num_classes, tx, sharding) -> TrainState:
  """Shapes, dtypes and shardings of the train state, without allocating."""
  shapes = jax.eval_shape(lambda: init_state(config, num_classes, tx)[1])
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      shapes)


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def make_train_step(graphdef, tx, config, num_classes: int, batch_size: int,
                    mesh: Mesh):
  """The jitted train step: (state, images, labels, perm, i) -> state."""
  repl = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data'))

  def step_fn(state: TrainState, images, labels, perm, step_in_epoch):
    x, y = input_pipeline.gather_batch(images, labels, perm, step_in_epoch,
                                       batch_size)
    x = jax.lax.with_sharding_constraint(input_pipeline.to_float(x),
                                         batch_sharding)
    dropout_key = jax.random.fold_in(
        jax.random.fold_in(state.key, _DROPOUT_STREAM), state.step)
    # Soft targets (one-hot without augmentation) and model kwargs (manifold
    # mixup); all-zero augmentation fields leave x untouched.
    x, targets, model_kwargs = augment.train_transform(
        config, x, y, num_classes, jax.random.fold_in(
            jax.random.fold_in(state.key, augment.AUG_STREAM), state.step))

    def loss_fn(params, batch_stats):
      # Fresh Variables at this trace level, so BatchNorm may update them.
      batch_stats = jax.tree.map(lambda v: v, batch_stats)
      model = nnx.merge(graphdef, params, batch_stats)
      logits = model(x, train=True, dropout_key=dropout_key, **model_kwargs)
      loss = augment.soft_cross_entropy(logits.astype(jnp.float32), targets,
                                        config.label_smoothing).mean()
      return loss, (logits, nnx.state(model, nnx.BatchStat))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, state.batch_stats)
    # Every gradient before any update: otherwise XLA:CPU runs the big
    # parameter updates concurrently with oneDNN's convolution gradients,
    # whose OpenMP threads then wait for a busy core (keras_cnn at batch
    # 128: 1.04x per step; no change at batch 400 or for seed_cnn).
    grads = jax.lax.optimization_barrier(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    correct = jnp.sum(jnp.argmax(logits, -1) == y).astype(jnp.float32)
    bad = (~jnp.isfinite(loss)) & (state.bad_step < 0)
    return state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats,
        opt_state=opt_state, loss_sum=state.loss_sum + loss * batch_size,
        correct_sum=state.correct_sum + correct,
        count=state.count + batch_size,
        bad_step=jnp.where(bad, state.step, state.bad_step))

  # `perm` keeps its own sharding: (steps, batch) indices sharded
  # P(None, 'data') by the training loop, so each device gathers its rows.
  return jax.jit(step_fn, donate_argnums=(0,),
                 compiler_options=COMPILER_OPTIONS,
                 in_shardings=(repl, repl, repl, None, repl),
                 out_shardings=repl)


def make_logits_fn(graphdef):
  """Jitted eval-mode forward pass: (params, batch_stats, uint8) -> logits."""

  @functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)
  def logits_fn(params, batch_stats, images):
    model = nnx.merge(graphdef, params, batch_stats)
    return model(input_pipeline.to_float(images),
                 train=False).astype(jnp.float32)

  return logits_fn


def compute_logits(logits_fn, state, images: np.ndarray,
                   batch_size: int) -> np.ndarray:
  """float32 (N, C) logits of uint8 `images` (N, 28, 28), batch by batch.

  Every batch has `batch_size` rows (the last one is padded), so one
  compilation of `logits_fn` (from `make_logits_fn`) serves any N.
  """
  out = []
  for start in range(0, len(images), batch_size):
    batch = np.asarray(images[start:start + batch_size], np.uint8)
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate(
          [batch, np.zeros((batch_size - n,) + batch.shape[1:], np.uint8)])
    logits = logits_fn(state.params, state.batch_stats, batch)
    out.append(np.asarray(jax.device_get(logits), np.float32)[:n])
  if not out:
    return np.zeros((0, 0), np.float32)
  return np.concatenate(out)


def make_eval_step(graphdef, num_classes: int, batch_size: int,
                   tta_shift: int = 0):
  """Jitted eval step accumulating (loss_sum, confusion) over batches;
  `tta_shift` > 0 averages probabilities over shifted views (augment)."""

  @functools.partial(jax.jit, donate_argnums=(5,),
                     compiler_options=COMPILER_OPTIONS)
  def eval_step(params, batch_stats, images, labels, mask, acc, i):
    sl = lambda a: jax.lax.dynamic_slice_in_dim(a, i * batch_size, batch_size)
    x, y, m = sl(images), sl(labels), sl(mask)
    model = nnx.merge(graphdef, params, batch_stats)
    logits = augment.tta_logits(
        lambda v: model(v, train=False).astype(jnp.float32),
        input_pipeline.to_float(x), tta_shift)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    pred = jnp.argmax(logits, -1)
    conf = jnp.zeros((num_classes, num_classes), jnp.int32).at[y, pred].add(
        m.astype(jnp.int32))
    loss_sum, confusion = acc
    return loss_sum + jnp.sum(jnp.where(m, loss, 0.0)), confusion + conf

  return eval_step


def evaluate_arrays(eval_step, state: TrainState, ev: input_pipeline.EvalData,
                    num_classes: int) -> dict:
  """Evaluates every example of `ev` once; returns metrics and confusion."""
  # Placed like the step's outputs, so the second batch reuses the first
  # batch's compilation.
  acc = jax.device_put((jnp.zeros((), jnp.float32),
                        jnp.zeros((num_classes, num_classes), jnp.int32)),
                       ev.labels.sharding)
  for i in range(ev.num_batches):
    acc = eval_step(state.params, state.batch_stats, ev.images, ev.labels,
                    ev.mask, acc, i)
  loss_sum, confusion = jax.device_get(acc)
  out = metrics_lib.summarize_confusion(confusion, loss_sum)
  out['confusion_matrix'] = confusion.tolist()
  return out


# ----------------------------------------------------------------------------
# Workdir bookkeeping.


def check_config(config: ml_collections.ConfigDict) -> None:
  """Field-level checks that give one clear line before any work."""
  for field in ('num_epochs', 'batch_size', 'eval_batch_size',
                'keep_checkpoints', 'log_every_steps'):
    if not isinstance(config[field], int) or config[field] <= 0:
      raise UserError(f'config.{field}={config[field]!r}: expected a positive '
                      'integer')
  if config.checkpoint_every_steps < 0:
    raise UserError(f'config.checkpoint_every_steps='
                    f'{config.checkpoint_every_steps}: expected >= 0 '
                    '(0 = at each epoch end)')
  if not config.learning_rate > 0:
    raise UserError(f'config.learning_rate={config.learning_rate}: expected '
                    'a positive number')
  if config.get('compute_dtype', 'float32') not in COMPUTE_DTYPES:
    raise UserError(f'config.compute_dtype={config.compute_dtype!r}: expected '
                    f'one of {", ".join(COMPUTE_DTYPES)}')
  if not 0 <= config.label_smoothing < 1:
    raise UserError(f'config.label_smoothing={config.label_smoothing}: '
                    'expected a number in [0, 1)')
  data_lib.get_info(config.dataset)
  if config.model not in models.MODELS:
    models.create_model(config.model, 1)  # Raises with the valid names.
  optim.create_optimizer(config, 1)  # Unknown optimizer / schedule.
  augment.check_config(config)


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` and its missing parents; one line if it cannot."""
  path = os.path.abspath(workdir)
  # The nearest existing ancestor: a file there (or a file as workdir)
  # gets a clearer line than makedirs' ENOTDIR / EEXIST.
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = 'is a file' if existing == path else f'parent {existing} is a file'
    raise UserError(f'--workdir {workdir}: {what}; expected a folder')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f'--workdir {workdir}: cannot create it '
                    f'({one_line(e.strerror or e)})') from None
  if not os.access(path, os.W_OK):
    raise UserError(f'--workdir {workdir}: not writable')


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Refuses a second training on the same workdir."""
  path = os.path.join(workdir, '.lock')
  f = open(path, 'a+')
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or 'another process'
    f.close()
    raise UserError(f'{workdir}: another training is running on this workdir '
                    f'({holder}); wait for it or use another --workdir')
  f.seek(0)
  f.truncate()
  f.write(f'pid {os.getpid()}')
  f.flush()
  try:
    yield
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def config_diff(saved: dict, current: dict) -> list[str]:
  """Differing fields; a field newer than `saved` counts at its default."""
  saved = {**configlib.base_config().to_dict(), **saved}
  keys = sorted((set(saved) | set(current)) - RESUMABLE_FIELDS)
  return [f'{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)'
          for k in keys if saved.get(k) != current.get(k)]


def write_json_atomic(path: str, obj: Any) -> None:
  fileio.write_json(path, obj)


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise UserError(f'{path}: missing; --workdir must hold a training run')
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f'{path}: not a readable config ({e})') from e
  missing = [k for k in ('dataset', 'model') if not isinstance(saved, dict)
             or k not in saved]
  if missing:
    raise UserError(f'{path}: expected the JSON object a training run writes, '
                    f'with fields dataset and model; lacks {", ".join(missing)}')
  return ml_collections.ConfigDict(saved)


def check_same_run(config, workdir: str) -> None:
  """Refuses a workdir whose config.json records a different run.

  Whether or not that run saved a checkpoint (it may have died before its
  first one, or be a k-NN fit, which has none): training into it would
  replace its config and its metrics. Fields in RESUMABLE_FIELDS may differ.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  saved = json.loads(load_workdir_config(workdir).to_json())
  diff = config_diff(saved, json.loads(config.to_json()))
  if diff:
    ckpts = os.path.join(workdir, 'checkpoints')
    if os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts)):
      what = 'checkpoints'
    elif os.path.exists(os.path.join(workdir, 'knn_model.npz')):
      what = 'a k-NN fit'
    else:
      what = 'a run'
    raise UserError(f'{workdir} holds {what} of a different config ({path}): '
                    f'{"; ".join(diff)}. Use a new --workdir, or the same '
                    'config to resume')


def record_config(config, workdir: str) -> None:
  """Writes config.json, after `check_same_run`."""
  check_same_run(config, workdir)
  if distributed.is_main():
    write_json_atomic(os.path.join(workdir, 'config.json'),
                      json.loads(config.to_json()))


class _StopRequest:
  """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and returns."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in (signal.SIGTERM, signal.SIGINT):
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


def split_name(split: str) -> str:
  return re.sub(r'[^A-Za-z0-9.%-]+', '_', split).strip('_')


# ----------------------------------------------------------------------------
# The training loop.


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> tuple[TrainState, dict]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Returns the final train state and a dict of metrics: `train`, `eval` (and
  `test` when `config.test_split` is set), each the metrics of the last
  epoch, plus `history` (all records written to metrics.jsonl this run),
  `steps_per_epoch`, `epoch_seconds` and `interrupted` (the signal name when
  SIGTERM/SIGINT stopped the run early, else '').

  The k-NN baselines (`config.model` 'knn' / 'pca_knn') have no training:
  `kmnist_jax.knn` fits and scores them and the state returned is None.
  """
  if config.model in KNN_METHODS:
    from kmnist_jax import knn  # pylint: disable=g-import-not-at-top
    return knn.train_and_evaluate(config, workdir)
  check_config(config)
  prepare_workdir(workdir)
  check_same_run(config, workdir)  # Before the lock file is touched.
  with _main_process_lock(workdir):
    check_same_run(config, workdir)  # Before checkpoints/ is created.
    return _train(config, workdir)


@contextlib.contextmanager
def _main_process_lock(workdir: str):
  """Process 0 holds the workdir lock; the other processes share its fate."""
  with contextlib.ExitStack() as stack:
    error = None
    if distributed.is_main():
      try:
        stack.enter_context(workdir_lock(workdir))
      except UserError as e:
        error = e
    if distributed.any_process(error is not None):
      raise error or UserError(f'{workdir}: process 0 could not lock it')
    yield


def _load_split(config, split: str):
  return data_lib.load(config.dataset, split, config.data_dir or None)


def _train(config, workdir):
  with contextlib.ExitStack() as stack:
    return _train_loop(config, workdir, stack)


def _train_loop(config, workdir, stack: contextlib.ExitStack):
  t_start = time.time()
  info = data_lib.get_info(config.dataset)
  num_classes = info.num_classes
  is_main = distributed.is_main()
  mesh = make_mesh()
  repl = NamedSharding(mesh, P())
  if config.batch_size % mesh.size:
    raise UserError(
        f'config.batch_size={config.batch_size}: must be a multiple of the '
        f'{mesh.size} devices ({jax.process_count()} process(es)); it is the '
        'global batch, split evenly across them')

  train_images, train_labels = _load_split(config, config.train_split)
  eval_images, eval_labels = _load_split(config, config.eval_split)
  n_train = len(train_images)
  spe = input_pipeline.steps_per_epoch(n_train, config.batch_size,
                                       config.train_split)
  total_steps = spe * config.num_epochs

  tx = optim.create_optimizer(config, spe)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  stack.callback(ckpt.close)  # Waits for async saves, also on errors.
  record_config(config, workdir)
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  stack.callback(writer.close)

  graphdef = model_graphdef(config, num_classes)
  elapsed_before = 0.0
  # The latest readable checkpoint; unreadable newer ones are set aside.
  restored = ckpt.restore_latest(
      abstract_state(config, num_classes, tx, repl))
  if restored is not None:
    latest, state, meta = restored
    elapsed_before = meta.get('wall_time', 0.0)
    logging.info('Resumed from %s at step %d (epoch %d).', ckpt.directory,
                 latest, meta['iterator']['epoch'])
    writer.truncate_after(latest)
  else:
    # Built on the devices, replicated: nothing crosses hosts.
    state = jit_init_state(config, num_classes, tx, repl)()
    writer.truncate_after(-1)

  train_step = make_train_step(graphdef, tx, config, num_classes,
                               config.batch_size, mesh)
  eval_step = make_eval_step(graphdef, num_classes, config.eval_batch_size,
                             config.get('tta_shift', 0))
  # The images go to every device once; per epoch only indices follow.
  images_dev = distributed.put_global(train_images, repl)
  labels_dev = distributed.put_global(train_labels.astype(np.int32), repl)
  perm_sharding = NamedSharding(mesh, P(None, 'data'))

  def epoch_batches(epoch):
    """(steps, batch) example indices of `epoch`, batch axis sharded."""
    perm = np.asarray(input_pipeline.epoch_permutation(config.seed, epoch,
                                                       n_train))
    return distributed.put_global(
        perm[:spe * config.batch_size].reshape(spe, config.batch_size),
        perm_sharding)
  eval_data = input_pipeline.make_eval_data(eval_images, eval_labels,
                                            config.eval_batch_size, repl)

  step = int(state.step)
  history, epoch_seconds = [], []
  summary: dict[str, Any] = {'train': {}, 'eval': {}}
  wall = lambda: elapsed_before + time.time() - t_start

  def meta(step):
    return {'iterator': input_pipeline.iterator_state(step, spe, config.seed),
            'model': config.model, 'dataset': config.dataset,
            'wall_time': wall()}

  def check_finite(state):
    bad = int(state.bad_step)
    if bad >= 0:
      ckpt.wait()
      last = ckpt.latest_step()
      kept = (f'last good checkpoint: step {last} in {ckpt.directory}'
              if last is not None else 'no checkpoint was saved')
      raise UserError(
          f'non-finite loss at step {bad} (epoch {bad // spe + 1}); stopped, '
          f'{kept}. Try a lower config.learning_rate')

  def save(state, metrics=None):
    check_finite(state)
    ckpt.save(int(state.step), state, meta(int(state.step)), metrics)

  def stop_requested(sync_point: bool) -> bool:
    """A signal to any process stops them all after the same step: with
    several processes they agree at sync points (log steps, epoch ends)."""
    if jax.process_count() == 1:
      return stop.signum is not None
    return sync_point and distributed.any_process(stop.signum is not None)

  signal_name = lambda: signal.Signals(stop.signum or signal.SIGTERM).name
  interrupted = ''
  with _StopRequest() as stop:
    while step < total_steps and not interrupted:
      epoch = step // spe
      perm = epoch_batches(epoch)
      t_epoch, t_log, step_log = time.time(), time.time(), step
      stopping = False
      for i in range(step % spe, spe):
        state = train_step(state, images_dev, labels_dev, perm, i)
        step += 1
        if step % config.log_every_steps == 0:
          check_finite(state)
          now = time.time()
          rate = (step - step_log) / max(now - t_log, 1e-9)
          logging.info('step %d/%d (epoch %d): %.1f steps/s, ETA %.0f s',
                       step, total_steps, epoch + 1, rate,
                       (total_steps - step) / max(rate, 1e-9))
          t_log, step_log = now, step
        stopping = stop_requested(step % config.log_every_steps == 0)
        if stopping:
          break
        if (config.checkpoint_every_steps
            and step % config.checkpoint_every_steps == 0 and i + 1 < spe):
          save(state)
      if stopping and step % spe:
        save(state)
        interrupted = signal_name()
        break
      # Epoch end: train metrics from the in-state sums, then eval.
      check_finite(state)
      epoch_seconds.append(time.time() - t_epoch)
      sums = jax.device_get((state.loss_sum, state.correct_sum, state.count))
      train_m = {'loss': float(sums[0] / sums[2]),
                 'accuracy': float(sums[1] / sums[2])}
      state = state.replace(loss_sum=jnp.zeros_like(state.loss_sum),
                            correct_sum=jnp.zeros_like(state.correct_sum),
                            count=jnp.zeros_like(state.count))
      eval_m = evaluate_arrays(eval_step, state, eval_data, num_classes)
      base = {'step': step, 'epoch': epoch + 1}
      recs = [dict(base, split='train', **train_m, wall_time=wall()),
              dict(base, split='eval', loss=eval_m['loss'],
                   accuracy=eval_m['accuracy'],
                   balanced_accuracy=eval_m['balanced_accuracy'],
                   wall_time=wall())]
      for r in recs:
        writer.write(r)
      history += recs
      logging.info('epoch %d: train loss %.4f acc %.4f | eval loss %.4f acc '
                   '%.4f (%.1f s)', epoch + 1, train_m['loss'],
                   train_m['accuracy'], eval_m['loss'], eval_m['accuracy'],
                   epoch_seconds[-1])
      summary['train'], summary['eval'] = train_m, eval_m
      save(state, {'accuracy': eval_m['accuracy']})
      if stop_requested(True):
        interrupted = signal_name()

  if not interrupted and not summary['eval'] and step > 0:
    summary['eval'] = evaluate_arrays(eval_step, state, eval_data, num_classes)
  if not interrupted and config.test_split:
    test_images, test_labels = _load_split(config, config.test_split)
    test_data = input_pipeline.make_eval_data(
        test_images, test_labels, config.eval_batch_size, repl)
    summary['test'] = evaluate_arrays(eval_step, state, test_data, num_classes)
    rec = {'step': step, 'epoch': step // spe, 'split': 'test',
           'loss': summary['test']['loss'],
           'accuracy': summary['test']['accuracy'],
           'balanced_accuracy': summary['test']['balanced_accuracy'],
           'wall_time': wall()}
    writer.write(rec)
    history.append(rec)
  ckpt.close()
  if not interrupted and is_main and config.write_plots:
    _write_plots(config, workdir, train_images, train_labels, eval_labels,
                 summary['eval'])
  summary.update(history=history, steps_per_epoch=spe,
                 epoch_seconds=epoch_seconds, interrupted=interrupted)
  return state, summary


def _write_plots(config, workdir, train_images, train_labels, eval_labels,
                 eval_metrics):
  try:
    from kmnist_jax import plots  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  plots.write_training_plots(config, workdir, train_images, train_labels,
                             eval_labels, eval_metrics)


# ----------------------------------------------------------------------------
# Evaluation of a saved checkpoint.


def restore_for_inference(workdir: str, checkpoint_step: int = -1,
                          prefer: str = 'latest', mesh: Mesh | None = None):
  """(config, graphdef, state, step) from a workdir's saved config.

  `checkpoint_step` < 0 picks the latest checkpoint (`prefer='latest'`) or
  the best by eval accuracy (`prefer='best'`). The state is replicated over
  `mesh` (default: all devices), whatever the device count it was saved on.
  """
  config = load_workdir_config(workdir)
  info = data_lib.get_info(config.dataset)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                    read_only=True)
  try:  # Closing also on errors: no asyncio noise from Orbax at exit.
    if checkpoint_step < 0:
      step = ckpt.best_step() if prefer == 'best' else ckpt.latest_step()
      if step is None:
        raise UserError(f'{ckpt.directory}: no checkpoint found; train first')
    else:
      step = checkpoint_step
    repl = NamedSharding(mesh or make_mesh(), P())
    # Any optimizer with this config restores the same state tree.
    tx = optim.create_optimizer(config, 1)
    graphdef = model_graphdef(config, info.num_classes)
    _check_checkpoint_model(ckpt, step, config.model)
    state, meta = ckpt.restore(
        step, abstract_state(config, info.num_classes, tx, repl))
    if meta.get('model') != config.model:
      raise UserError(f'{ckpt.directory}/{step}: checkpoint of model '
                      f'{meta.get("model")!r}, config says {config.model!r}')
  finally:
    ckpt.close()
  return config, graphdef, state, step


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


def evaluate(config: ml_collections.ConfigDict | None, workdir: str,
             checkpoint_step: int = -1) -> dict:
  """Evaluates a checkpoint on test_split (else eval_split).

  Writes `workdir/eval_<split>.json` and returns its contents.
  """
  if load_workdir_config(workdir).model in KNN_METHODS:
    from kmnist_jax import knn  # pylint: disable=g-import-not-at-top
    return knn.evaluate(config, workdir)
  saved, graphdef, state, step = restore_for_inference(workdir,
                                                       checkpoint_step)
  config = config or saved
  diff = [d for d in config_diff(json.loads(saved.to_json()),
                                 json.loads(config.to_json()))
          if not d.startswith(('train_split', 'eval_split', 'seed'))]
  if diff:
    raise UserError(f'{workdir} was trained with a different config: '
                    f'{"; ".join(diff)}')
  split = config.test_split or config.eval_split
  info = data_lib.get_info(config.dataset)
  images, labels = _load_split(config, split)
  mesh = make_mesh()
  ev = input_pipeline.make_eval_data(images, labels, config.eval_batch_size,
                                     NamedSharding(mesh, P()))
  eval_step = make_eval_step(graphdef, info.num_classes,
                             config.eval_batch_size,
                             config.get('tta_shift', 0))
  result = evaluate_arrays(eval_step, state, ev, info.num_classes)
  result.update(
      split=split, dataset=config.dataset, checkpoint_step=step,
      metric=info.metric,
      checksums=data_lib.file_checksums(config.dataset, split,
                                        config.data_dir or None))
  if jax.process_index() == 0:
    path = os.path.join(workdir, f'eval_{split_name(split)}.json')
    write_json_atomic(path, result)
    result['path'] = path
  if config.write_plots:  # Every process computes the logits, 0 plots them.
    _write_eval_plots(config, workdir, split, graphdef, state, images,
                      labels, result)
  return result


def _write_eval_plots(config, workdir, split, graphdef, state, images, labels,
                      result):
  """Confusion matrix and most confident mistakes under workdir/plots."""
  try:
    from kmnist_jax import plots  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  logits = compute_logits(make_logits_fn(graphdef), state, images,
                          config.eval_batch_size)
  if not distributed.is_main():
    return
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  classes = data_lib.class_map(config.dataset, config.data_dir or None)
  tag = ' (offline proxy)' if config.train_split == 'test[:8000]' else ''
  result['plots'] = plots.write_eval_plots(workdir, split, images, labels,
                                           probs, classes, result, tag)
