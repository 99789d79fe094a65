"""The jitted train and eval steps, and the one inference function.

The model is a Flax NNX module, split once into a graphdef and pure state;
the steps are plain `jax.jit` functions over that state (no `nnx.jit`
dispatch cost per step). The train state is donated to the train step.
Dropout and augmentation keys fold the step into their stream of the run's
key (`streams`), batches are a pure function of (seed, step) (see
`batches`), so a resumed run replays an uninterrupted one exactly.

Every prediction, whatever asks for it (`--mode eval`, `--mode predict`,
ensembles, the eval plots), goes through `make_infer_fn` and `infer`: the
eval-mode network, averaged over shifted views when `tta_shift` > 0. The
training loop's eval step applies the same network (`eval_logits`) and sums
loss and confusion on the device.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kmnist_jax.core import distributed
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.core import streams
from kmnist_jax.train import batches
from kmnist_jax.train import augment
from kmnist_jax.train.state import TrainState

def precision_scope(precision: str):
  """The context a step's body is traced in: `config.matmul_precision`
  (`models.precision.MATMUL_PRECISIONS`)."""
  if precision == 'default':
    return contextlib.nullcontext()
  return jax.default_matmul_precision(precision)


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float):
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def step_key(key: jax.Array, stream: int, step) -> jax.Array:
  """The key of `stream` (see `streams`) at train step `step`."""
  return jax.random.fold_in(jax.random.fold_in(key, stream), step)


def make_train_step(graphdef, tx, config, num_classes: int, batch_size: int,
                    mesh: Mesh, compiler_options: dict | None = None):
  """The jitted train step: (state, images, labels, perm, i) -> state,
  compiled with XLA's `compiler_options` (None: its defaults)."""
  repl = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P('data'))
  precision = config.matmul_precision

  def step_fn(state, images, labels, perm, step_in_epoch):
    with precision_scope(precision):
      return train_step(state, images, labels, perm, step_in_epoch)

  def train_step(state: TrainState, images, labels, perm, step_in_epoch):
    x, y = batches.gather_batch(images, labels, perm, step_in_epoch,
                                       batch_size)
    x = jax.lax.with_sharding_constraint(batches.to_float(x),
                                         batch_sharding)
    dropout_key = step_key(state.key, streams.DROPOUT, state.step)
    # Soft targets (one-hot without augmentation) and model kwargs (manifold
    # mixup); all-zero augmentation fields leave x untouched.
    x, targets, model_kwargs = augment.train_transform(
        config, x, y, num_classes,
        step_key(state.key, streams.AUGMENT, state.step))

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
                 compiler_options=compiler_options,
                 in_shardings=(repl, repl, repl, None, repl),
                 out_shardings=repl)


def eval_logits(graphdef, params, batch_stats, images, tta_shift: int = 0,
                precision: str = 'default'):
  """Traced: float32 logits of uint8 `images` (B, 28, 28) in eval mode.

  `tta_shift` > 0: the log of the mean softmax over the 9 shifted views
  (`augment.tta_logits`), which softmax / argmax / cross-entropy treat as
  logits. `precision`: the config's matmul_precision.
  """
  model = nnx.merge(graphdef, params, batch_stats)
  with precision_scope(precision):
    return augment.tta_logits(
        lambda v: model(v, train=False).astype(jnp.float32),
        batches.to_float(images), tta_shift)


def make_eval_step(graphdef, num_classes: int, batch_size: int,
                   tta_shift: int = 0, precision: str = 'default',
                   compiler_options: dict | None = None):
  """Jitted eval step of the training loop, accumulating (loss_sum,
  confusion) over the batches of an `batches.EvalData`."""

  @functools.partial(jax.jit, donate_argnums=(5,),
                     compiler_options=compiler_options)
  def eval_step(params, batch_stats, images, labels, mask, acc, i):
    sl = lambda a: jax.lax.dynamic_slice_in_dim(a, i * batch_size, batch_size)
    x, y, m = sl(images), sl(labels), sl(mask)
    logits = eval_logits(graphdef, params, batch_stats, x, tta_shift,
                         precision)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    pred = jnp.argmax(logits, -1)
    conf = jnp.zeros((num_classes, num_classes), jnp.int32).at[y, pred].add(
        m.astype(jnp.int32))
    loss_sum, confusion = acc
    return loss_sum + jnp.sum(jnp.where(m, loss, 0.0)), confusion + conf

  return eval_step


def evaluate_arrays(eval_step, state: TrainState, ev: batches.EvalData,
                    num_classes: int, progress=None) -> dict:
  """Evaluates every example of `ev` once; returns metrics and confusion.
  `progress()`, if given, is called after each batch finishes."""
  # Placed like the step's outputs, so the second batch reuses the first
  # batch's compilation.
  acc = jax.device_put((jnp.zeros((), jnp.float32),
                        jnp.zeros((num_classes, num_classes), jnp.int32)),
                       ev.labels.sharding)
  for i in range(ev.num_batches):
    acc = eval_step(state.params, state.batch_stats, ev.images, ev.labels,
                    ev.mask, acc, i)
    if progress is not None:
      jax.block_until_ready(acc)
      progress()
  loss_sum, confusion = jax.device_get(acc)
  return metrics_lib.with_confusion(confusion, loss_sum)


def make_infer_fn(graphdef, tta_shift: int = 0, precision: str = 'default'):
  """THE inference function, jitted: (params, batch_stats, uint8 images
  (B, 28, 28)) -> float32 log-probabilities (B, C), with test-time
  augmentation when `tta_shift` > 0. Run it through `infer`."""

  @jax.jit
  def infer_fn(params, batch_stats, images):
    return jax.nn.log_softmax(
        eval_logits(graphdef, params, batch_stats, images, tta_shift,
                    precision))

  return infer_fn


def infer(infer_fn, state, images: np.ndarray, batch_size: int,
          progress=None) -> np.ndarray:
  """float32 (N, C) log-probabilities of uint8 `images` (N, 28, 28).

  Every batch has `batch_size` rows (the last one is padded), so one
  compilation of `infer_fn` (from `make_infer_fn`) serves any N; with
  several processes each one passes the same images. `progress()`, if
  given, is called after each batch.
  """
  params, batch_stats = state.params, state.batch_stats
  sharding = jax.tree.leaves(params)[0].sharding
  put = functools.partial(distributed.put_global, sharding=sharding) if (
      isinstance(sharding, NamedSharding)) else jnp.asarray
  out = []
  for start in range(0, len(images), batch_size):
    batch = np.asarray(images[start:start + batch_size], np.uint8)
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate(
          [batch, np.zeros((batch_size - n,) + batch.shape[1:], np.uint8)])
    log_probs = infer_fn(params, batch_stats, put(batch))
    out.append(np.asarray(log_probs.addressable_data(0), np.float32)[:n])
    if progress is not None:
      progress()
  if not out:
    return np.zeros((0, 0), np.float32)
  return np.concatenate(out)


def probabilities(log_probs: np.ndarray) -> np.ndarray:
  """float32 class probabilities of `infer`'s log-probabilities: the array
  every top-1 (eval accuracy, predictions, ensembles, plots) is taken of."""
  return np.exp(np.asarray(log_probs, np.float32))
