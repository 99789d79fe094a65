"""Training-mode BatchNorm+ReLU in two passes each way, on XLA:CPU.

`bn_relu(x, scale, bias, epsilon)` returns relu(BatchNorm(x)) over the
batch's statistics, and those statistics (mean and biased variance, as
flax's `BatchNorm` with its default fast variance computes them), for
channels-last float32 or bfloat16 activations. On the CPU backend with one
device it calls the C++ kernels of `csrc/batchnorm.cc` through `jax.ffi`
(built with the oneDNN handlers, `cpu/onednn.py`), with a custom gradient:
the forward pass reads x twice and writes y, the backward pass reads x and
dy twice and writes dx. XLA:CPU's own fusions of flax's BatchNorm, the ReLU
and their autodiff gradient take about three times as long at a ResNet's
first-stage activations (`experiments/results/bn_relu/`).

Elsewhere (a GPU, a TPU, several devices, no kernels) it returns None and
the caller (`kmnist_jax.models.ops.BatchNormReLU`) runs flax's BatchNorm
and ReLU. Results equal flax's to float32 rounding: the per-channel sums are
float32 over blocks of rows, then float64. bfloat16 activations are read
and written as bfloat16 and every step between is float32 (flax computes
the normalisation of bfloat16 inputs in bfloat16). The statistics carry no
gradient (they feed the running averages only).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from kmnist_jax.cpu import onednn

FWD, BWD = onednn.BN_RELU_FWD, onednn.BN_RELU_BWD
ADD_FWD, BWD_ADD = onednn.ADD_BN_RELU_FWD, onednn.BN_RELU_BWD_ADD


def applies(x) -> bool:
  """Whether `bn_relu` runs the kernels for activations `x`."""
  return (x.dtype in (jnp.float32, jnp.bfloat16) and x.ndim >= 2
          and jax.default_backend() == 'cpu' and jax.device_count() == 1
          and onednn.available())


def _channels(x):
  return jax.ShapeDtypeStruct((x.shape[-1],), jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_relu(x, scale, bias, eps: float):
  return _bn_relu_fwd(x, scale, bias, eps)[0]


def _bn_relu_fwd(x, scale, bias, eps):
  c = _channels(x)
  y, mean, var = jax.ffi.ffi_call(
      FWD, (jax.ShapeDtypeStruct(x.shape, x.dtype), c, c))(
          x, scale, bias, eps=np.float32(eps))
  return (y, mean, var), (x, scale, bias, mean, var)


def _bn_relu_bwd(eps, res, cotangents):
  x, scale, bias, mean, var = res
  dy = cotangents[0].astype(x.dtype)  # The statistics' are ignored.
  c = _channels(x)
  dx, dscale, dbias = jax.ffi.ffi_call(
      BWD, (jax.ShapeDtypeStruct(x.shape, x.dtype), c, c))(
          x, dy, scale, bias, mean, var, eps=np.float32(eps))
  return dx, dscale, dbias


_bn_relu.defvjp(_bn_relu_fwd, _bn_relu_bwd)


def bn_relu(x, scale, bias, epsilon: float):
  """(relu(BatchNorm(x)), batch mean, batch variance), or None where the
  kernels do not apply (see `applies`). `scale` and `bias` are float32 of
  shape (C,); y has x's shape and element type."""
  if not applies(x):
    return None
  y, mean, var = _bn_relu(x, scale.astype(jnp.float32),
                          bias.astype(jnp.float32), float(epsilon))
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


# A residual network's add and the next BatchNorm+ReLU, fused: s = a + b is
# written in the statistics pass, and when s is also used on its own (an
# identity shortcut) its cotangent is added to dx in the gradient's last
# pass. XLA's add, and its add of the two cotangents, are then no passes of
# their own (XLA:CPU's bfloat16 adds run at about half the kernels' memory
# speed). One-process A/Bs, train step at batch 128, 2-core Intel Xeon with
# AMX, 2026-12-06: resnet_preact20 in bfloat16 1851 -> 1888 and
# 1811 -> 1964 img/s, in float32 991 -> 1030; preact_resnet18 in bfloat16
# 218 -> 237.
def _add_fwd_call(a, b, scale, bias, eps):
  c = _channels(a)
  act = jax.ShapeDtypeStruct(a.shape, a.dtype)
  return jax.ffi.ffi_call(ADD_FWD, (act, act, c, c))(
      a, b, scale, bias, eps=np.float32(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _add_bn_relu(a, b, scale, bias, eps: float):
  return _add_fwd_call(a, b, scale, bias, eps)[1:]


def _add_bn_relu_fwd(a, b, scale, bias, eps):
  s, y, mean, var = _add_fwd_call(a, b, scale, bias, eps)
  return (y, mean, var), (s, scale, bias, mean, var)


def _add_bn_relu_bwd(eps, res, cotangents):
  dx, dscale, dbias = _bn_relu_bwd(eps, res, cotangents)
  return dx, dx, dscale, dbias


_add_bn_relu.defvjp(_add_bn_relu_fwd, _add_bn_relu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _add_bn_relu_sum(a, b, scale, bias, eps: float):
  return _add_fwd_call(a, b, scale, bias, eps)


def _add_bn_relu_sum_fwd(a, b, scale, bias, eps):
  s, y, mean, var = _add_fwd_call(a, b, scale, bias, eps)
  return (s, y, mean, var), (s, scale, bias, mean, var)


def _add_bn_relu_sum_bwd(eps, res, cotangents):
  s, scale, bias, mean, var = res
  ds, dy = (g.astype(s.dtype) for g in cotangents[:2])
  c = _channels(s)
  dx, dscale, dbias = jax.ffi.ffi_call(
      BWD_ADD, (jax.ShapeDtypeStruct(s.shape, s.dtype), c, c))(
          s, dy, ds, scale, bias, mean, var, eps=np.float32(eps))
  return dx, dx, dscale, dbias


_add_bn_relu_sum.defvjp(_add_bn_relu_sum_fwd, _add_bn_relu_sum_bwd)


def add_bn_relu(a, b, scale, bias, epsilon: float, with_sum: bool):
  """`bn_relu(a + b, ...)`, with s = a + b computed in the same passes:
  (y, batch mean, batch variance), preceded by s when `with_sum` (s in a's
  element type, as `a + b` rounds it; the gradient that reaches s directly
  is added to the one through the BatchNorm in the kernel's last pass). None
  where the kernels do not apply (see `applies`) or a and b differ in shape
  or type."""
  if not applies(a) or a.shape != b.shape or a.dtype != b.dtype:
    return None
  args = (a, b, scale.astype(jnp.float32), bias.astype(jnp.float32),
          float(epsilon))
  if with_sum:
    s, y, mean, var = _add_bn_relu_sum(*args)
  else:
    s, (y, mean, var) = None, _add_bn_relu(*args)
  out = (y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var))
  return (s, *out) if with_sum else out
