"""Training batches: a pure function of (seed, step).

The split's uint8 images go to the device once. The permutation of epoch `e`
is `permutation(fold_in(data_key(seed), e), N)` and training batch `s` of that
epoch is `images[perm[s*B:(s+1)*B]]`, gathered on the device inside the
jitted train step. There is no hidden iterator: the checkpointable state is
`{'epoch', 'step', 'seed'}`, and resuming from it replays exactly the batches
an uninterrupted run sees. The last partial training batch is dropped.

Evaluation keeps every example exactly once: the split is padded to a whole
number of batches and the padding is masked out.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from kmnist_jax.core import streams
from kmnist_jax.core.errors import UserError


def data_key(seed: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(seed), streams.DATA)


@functools.partial(jax.jit, static_argnums=(2,))
def epoch_permutation(seed, epoch, n: int) -> jax.Array:
  """The example order of `epoch`, computed on the device."""
  return jax.random.permutation(jax.random.fold_in(data_key(seed), epoch), n)


def steps_per_epoch(num_examples: int, batch_size: int, split: str) -> int:
  steps = num_examples // batch_size
  if steps == 0:
    raise UserError(f'config.batch_size={batch_size} is larger than split '
                    f'{split!r} ({num_examples} examples); expected at most '
                    f'{num_examples}')
  return steps


def iterator_state(step: int, num_steps_per_epoch: int, seed: int) -> dict:
  """The data-iterator state saved with each checkpoint."""
  return {'epoch': step // num_steps_per_epoch,
          'step_in_epoch': step % num_steps_per_epoch,
          'step': step, 'seed': seed}


def batch_indices(seed: int, step: int, num_examples: int,
                  batch_size: int) -> np.ndarray:
  """Example indices of training batch `step` (host copy, for inspection)."""
  spe = num_examples // batch_size
  perm = epoch_permutation(seed, step // spe, num_examples)
  start = (step % spe) * batch_size
  return np.asarray(perm[start:start + batch_size])


def gather_batch(images, labels, perm, step_in_epoch, batch_size: int):
  """Traced inside the train step: the batch as (uint8 images, labels).

  `perm` is the epoch's permutation (N,), or its batches (steps, batch_size)
  as the training loop passes them, the batch axis sharded over devices.
  """
  if perm.ndim == 2:
    idx = perm[step_in_epoch]
  else:
    idx = jax.lax.dynamic_slice_in_dim(perm, step_in_epoch * batch_size,
                                       batch_size)
  return images[idx], labels[idx]


def to_float(images: jax.Array) -> jax.Array:
  """uint8 (B, 28, 28) -> float32 (B, 28, 28, 1) in [0, 1]; fused by XLA."""
  return (images.astype(jnp.float32) * (1.0 / 255.0))[..., None]


@dataclasses.dataclass(frozen=True)
class EvalData:
  """A split padded to whole batches; `mask` is 0 on the padding."""
  images: jax.Array  # (num_batches * B, 28, 28) uint8
  labels: jax.Array  # (num_batches * B,) int32
  mask: jax.Array  # (num_batches * B,) bool
  num_examples: int
  num_batches: int
  batch_size: int


def make_eval_data(images: np.ndarray, labels: np.ndarray, batch_size: int,
                   sharding=None) -> EvalData:
  n = len(images)
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:],
                                            images.dtype)])
  labels = np.concatenate([labels.astype(np.int32), np.zeros(pad, np.int32)])
  if sharding is None:
    put = jax.device_put
  else:  # Each process passes its copy; no cross-process equality check.
    put = lambda a: jax.make_array_from_process_local_data(sharding, a,
                                                           a.shape)
  return EvalData(put(images), put(labels), put(mask), n, num_batches,
                  batch_size)
