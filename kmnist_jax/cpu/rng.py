"""Dropout whose masks are bit for bit `jax.random.bernoulli`'s, without its
slow loop on XLA:CPU.

On CPU, jax lowers the threefry2x32 hash as a `fori_loop` over its five
4-round groups (to keep compile times down). The loop stops XLA from fusing the
hash with the compare that consumes it: every group reads and writes the whole
mask, and on the keras_cnn train step the loop took about 6 ms of 110
(experiments/results/throughput/throughput.md has the profile). `bernoulli` below computes
the same 20 rounds unrolled, which XLA fuses into one elementwise loop (a 128 x
12 x 12 x 64 mask: 4.2 ms -> 0.65 ms on 2 cores). The bits are identical, so
the trained models, the checkpoints and every committed number stay the same;
`tests/test_cpu_rng.py` asserts the equality against
`jax.random.bernoulli`.

Only jax's default configuration on the CPU backend gets the fast path: raw
or typed threefry keys with `jax_threefry_partitionable` on (the default
since jax 0.5). Any other configuration, and any other backend (whose
lowering is not the loop), falls back to `jax.random.bernoulli` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x, d: int):
  return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k1, k2, x1, x2):
  """The Threefry-2x32 block cipher (20 rounds), as jax computes it."""
  ks = (k1, k2, k1 ^ k2 ^ _PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = x1 ^ _rotl(x2, r)
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def _fast_path(key) -> bool:
  if jax.default_backend() != 'cpu':
    return False
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if jax.random.key_impl(key) != jax.random.key_impl(jax.random.key(0)):
      return False
  elif jax.config.jax_default_prng_impl != 'threefry2x32':
    return False
  return bool(jax.config.jax_threefry_partitionable)


def bernoulli(key, p: float, shape) -> jax.Array:
  """`jax.random.bernoulli(key, p, shape)` for a scalar float `p`."""
  shape = tuple(shape)
  if not _fast_path(key) or math.prod(shape) >= 2 ** 32 or not shape:
    return jax.random.bernoulli(key, p, shape)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  # jax's partitionable random bits: hash the 64-bit linear index (its high
  # word is 0 below 2**32 elements) and xor the two output words.
  count = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  b1, b2 = threefry2x32(key[0], key[1], jnp.zeros_like(count), count)
  bits = b1 ^ b2
  # jax.random.uniform: 23 random mantissa bits under exponent 0, minus 1.
  u = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(
      0x3F800000), jnp.float32) - jnp.float32(1.0)
  return u < jnp.float32(p)


def dropout(x, rate: float, train: bool, key):
  """Inverted dropout: zeroes elements with probability `rate` in training
  and scales the rest by 1 / (1 - rate); `x` itself otherwise."""
  if not train or rate == 0.0:
    return x
  keep = bernoulli(key, 1.0 - rate, x.shape)  # == jax.random.bernoulli
  # The same values as jnp.where(keep, x / (1 - rate), 0) for finite x, as a
  # multiply: its gradient needs no broadcast zeros or select.
  return x * keep.astype(x.dtype) / (1.0 - rate)
