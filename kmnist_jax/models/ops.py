"""The one seam between the networks and the speed code for XLA:CPU.

Every convolution, dropout and BatchNorm+ReLU of the networks (and a
residual add that feeds one, `BatchNormReLU.after_add`) is the `Ops`
chosen when the model is built: `factory.create_model(..., ops=...)` builds
it inside `building(ops)`, and the layers take `conv`, `dropout` and
`batch_norm_relu` from there. The default, `FAST`, is `kmnist_jax.cpu`'s
drop-ins (each computes what plain JAX computes, faster on XLA:CPU, and
stands aside on a GPU or TPU); `PLAIN` is JAX's own
`lax.conv_general_dilated`, a `jax.random.bernoulli` dropout and flax's
BatchNorm followed by `nnx.relu`.
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
  bn_relu: None (flax's BatchNorm, then ReLU), or a training-mode
    BatchNorm+ReLU (x, scale, bias, epsilon) -> (y, batch mean, batch
    variance), or None where it does not apply (`cpu.batchnorm.bn_relu`).
  add_bn_relu: None (an add, then `bn_relu`), or bn_relu of a + b
    (a, b, scale, bias, epsilon, with_sum) -> ([a + b,] y, batch mean,
    batch variance) computed in the same passes, or None where it does not
    apply (`cpu.batchnorm.add_bn_relu`).
  """
  conv_general_dilated: Callable
  dropout: Callable
  bn_relu: Callable | None = None
  add_bn_relu: Callable | None = None


PLAIN = Ops(jax.lax.conv_general_dilated, plain_dropout)
FAST = Ops(cpu.conv_general_dilated, cpu.dropout, cpu.bn_relu,
           cpu.add_bn_relu)
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


class BatchNormReLU(nnx.BatchNorm):
  """relu(BatchNorm(x)): flax's `nnx.BatchNorm` (the same variables, so the
  same checkpoints), whose training pass runs the ops' fused `bn_relu`
  where it applies; evaluation, and everywhere else, is flax's BatchNorm
  then `nnx.relu`."""

  def __init__(self, *args, bn_relu: Callable | None = None,
               add_bn_relu: Callable | None = None, **kwargs):
    super().__init__(*args, **kwargs)
    self.bn_relu = bn_relu
    self.add_bn_relu = add_bn_relu

  def _fused(self, kernel, x, use_running_average, mask) -> bool:
    """Whether this call may run `kernel` (a training pass over the last
    axis, with scale and bias)."""
    ura = (self.use_running_average if use_running_average is None
           else use_running_average)
    return (not ura and mask is None and kernel is not None
            and self.axis in (-1, x.ndim - 1) and self.axis_name is None
            and self.scale is not None and self.bias is not None)

  def _update_statistics(self, mean, var):
    m = self.momentum
    self.mean[...] = m * self.mean[...] + (1 - m) * mean
    self.var[...] = m * self.var[...] + (1 - m) * var

  def __call__(self, x, use_running_average: bool | None = None, *,
               mask=None):
    if self._fused(self.bn_relu, x, use_running_average, mask):
      dtype = self.dtype or x.dtype
      out = self.bn_relu(x.astype(dtype), self.scale[...], self.bias[...],
                         self.epsilon)
      if out is not None:
        y, mean, var = out
        self._update_statistics(mean, var)
        return y
    return nnx.relu(super().__call__(x, use_running_average, mask=mask))

  def after_add(self, a, b, use_running_average: bool | None = None, *,
                with_sum: bool):
    """self(a + b): a residual add and this layer, fused where the ops'
    `add_bn_relu` applies (in training). `with_sum`: returns (a + b, y),
    for a caller that uses the sum too; else y."""
    if self._fused(self.add_bn_relu, a, use_running_average, None):
      dtype = self.dtype or a.dtype
      out = self.add_bn_relu(a.astype(dtype), b.astype(dtype),
                             self.scale[...], self.bias[...], self.epsilon,
                             with_sum)
      if out is not None:
        s, (y, mean, var) = (out[0], out[1:]) if with_sum else (None, out)
        self._update_statistics(mean, var)
        return (s, y) if with_sum else y
    s = a + b
    y = self(s, use_running_average)
    return (s, y) if with_sum else y


def batch_norm_relu(*args, **kwargs) -> BatchNormReLU:
  """`BatchNormReLU` (nnx.BatchNorm's arguments) with the current ops'."""
  return BatchNormReLU(*args, bn_relu=current().bn_relu,
                       add_bn_relu=current().add_bn_relu, **kwargs)
