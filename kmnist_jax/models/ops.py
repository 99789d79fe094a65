"""The one seam between the networks and the speed code for XLA:CPU.

Every convolution and dropout of the networks is the `Ops` chosen when the
model is built: `factory.create_model(..., ops=...)` builds it inside
`building(ops)`, and the layers take `conv` and `dropout` from there. The
default, `FAST`, is `kmnist_jax.cpu`'s drop-ins (each computes what plain JAX
computes, faster on XLA:CPU, and stands aside on a GPU or TPU); `PLAIN` is
JAX's own `lax.conv_general_dilated` and a `jax.random.bernoulli` dropout.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from kmnist_jax import cpu


def plain_dropout(x, rate: float, train: bool, key):
  """Inverted dropout with `jax.random.bernoulli`'s mask."""
  if not train or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class Ops:
  """The functions every layer computes with.

  conv_general_dilated: `lax.conv_general_dilated`'s signature.
  dropout: (x, rate, train, key) -> x, inverted dropout.
  """
  conv_general_dilated: Callable
  dropout: Callable


PLAIN = Ops(jax.lax.conv_general_dilated, plain_dropout)
FAST = Ops(cpu.conv_general_dilated, cpu.dropout)
_BUILDING: contextvars.ContextVar[Ops | None] = contextvars.ContextVar(
    'kmnist_jax_ops', default=None)


@contextlib.contextmanager
def building(ops: Ops):
  """The layers built inside compute with `ops`."""
  token = _BUILDING.set(ops)
  try:
    yield ops
  finally:
    _BUILDING.reset(token)


def current() -> Ops:
  """The ops of the model being built (`FAST` outside `building`)."""
  return _BUILDING.get() or FAST


def conv(*args, **kwargs) -> nnx.Conv:
  """`nnx.Conv` computing with the current ops' convolution."""
  return nnx.Conv(*args, conv_general_dilated=current().conv_general_dilated,
                  **kwargs)
