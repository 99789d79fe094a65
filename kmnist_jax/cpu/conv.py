"""A drop-in `conv_general_dilated` that is fast on XLA:CPU.

On the CPU backend with a single device, for float32 (or bfloat16) NHWC/HWIO
convolutions with unit dilations and one feature group:

* The gradients come from oneDNN through `jax.ffi` (`cpu/onednn.py`):
  about twice as fast as XLA:CPU's on this project's 2-core CPU (the
  keras_cnn train step is 1.3x faster at batch 128, 1.5x at 400). Where
  oneDNN is not available they are XLA's.
* In training, the forward pass of a convolution with more than one input
  channel is oneDNN's on a CPU with AVX-512 and XLA's elsewhere, whichever
  measured faster there (`onednn_forward`); evaluation keeps XLA's. A
  single-channel convolution (the first layer of a KMNIST model) runs it as
  a sum of kh*kw shifted copies of the image, each scaled by one row of the
  kernel: one elementwise fusion, vectorized over the output channels
  (1.5 ms against XLA's 7.7 ms for seed_cnn's 5x5x16 conv1 at batch 400).
* Opt-in bfloat16 passes: under `jax.default_matmul_precision('bfloat16')`
  (`config.matmul_precision='bfloat16'`) a convolution with more than one
  input channel rounds its operands to bfloat16 and accumulates in float32,
  as a TPU does at that precision; its result and gradients stay float32.
  With oneDNN the forward pass and both gradients run on the CPU's bfloat16
  instructions (AVX512-BF16); without, XLA computes the same numbers.
  Everything around the convolutions (BatchNorm, ReLU, the loss, the
  updates) stays float32.
* bfloat16 operands (`config.compute_dtype='bfloat16'`: the layers cast
  them) take the same oneDNN kernels with a bfloat16 result and bfloat16
  gradients, as PyTorch's bfloat16 autocast. With XLA's bfloat16
  convolutions instead, resnet_preact20's train step was 2.7x slower (an
  A/B at batch 128 on the 2-core Intel Xeon with AMX, 2026-12-05); it stays
  below the bfloat16 passes' (the `bf16_act` column of
  experiments/results/speed_pairs/): XLA:CPU's elementwise fusions are
  slower on bfloat16 than on float32 activations.

Everything else, and every convolution on another backend (a GPU, a TPU),
goes to `jax.lax.conv_general_dilated` unchanged. Values equal lax's up to
float32 summation order. The fast convolutions support
reverse-mode differentiation (`jax.grad`, `jax.vjp`), not forward mode.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

from kmnist_jax.cpu import features
from kmnist_jax.cpu import onednn

_NHWC = ('NHWC', 'HWIO', 'NHWC')
# The values of jax_default_matmul_precision that ask for bfloat16 passes.
BF16_PASSES = ('bfloat16', 'BF16_BF16_F32')


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
  if ndim != 4 or dimension_numbers is None:
    return False
  # nnx.Conv passes ConvDimensionNumbers; users may pass the strings.
  return (lax.conv_dimension_numbers((1,) * 4, (1,) * 4, dimension_numbers)
          == lax.conv_dimension_numbers((1,) * 4, (1,) * 4, _NHWC))


def _pad_pairs(padding, kernel_hw, in_hw, strides):
  if isinstance(padding, str):
    return lax.padtype_to_pads(in_hw, kernel_hw, strides, padding)
  return [tuple(p) for p in padding]


def _forward(x, w):
  """VALID, stride-1 convolution of x (B, H, W) with w (kh, kw, 1, C)."""
  kh, kw = w.shape[:2]
  oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  terms = [x[:, i:i + oh, j:j + ow, None] * w[i, j, 0]
           for i in range(kh) for j in range(kw)]
  return functools.reduce(operator.add, terms)


def _lax_valid(x, w):
  return lax.conv_general_dilated(x[..., None], w, (1, 1), 'VALID',
                                  dimension_numbers=_NHWC)


def _materialized_forward(x, w):
  # The barrier makes XLA write the output once. Without it, XLA fuses the
  # cheap-looking sum into each consumer (BatchNorm's two reductions, the
  # normalisation, the ReLU/pool and their gradients: 6 copies in seed_cnn).
  return lax.optimization_barrier(_forward(x, w))


@jax.custom_vjp
def _single_channel_conv(x, w):
  return _materialized_forward(x, w)


def _fwd(x, w):
  return _materialized_forward(x, w), (x, w)


def _bwd(res, g):
  # Both gradients as lax computes them: XLA:CPU's weight gradient is as
  # fast inside the step as a patch-matrix product (A/B in one process).
  x, w = res
  return jax.vjp(_lax_valid, x, w)[1](g)


_single_channel_conv.defvjp(_fwd, _bwd)


def _out_hw(in_hw, kernel_hw, strides, pads):
  return tuple((i + lo + hi - k) // s + 1 for i, k, s, (lo, hi)
               in zip(in_hw, kernel_hw, strides, pads))


def _single_channel(lhs, rhs, pads):
  x = lhs[..., 0]
  if any(p != (0, 0) for p in pads):
    x = lax.pad(x, jnp.zeros((), x.dtype),
                [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads])
  return _single_channel_conv(x, rhs)


def _xla_conv(x, w, strides, pads):
  """XLA's forward pass: the single-channel sum, else lax's convolution."""
  if x.shape[-1] == 1 and w.shape[2] == 1 and strides == (1, 1):
    return _single_channel(x, w, pads)
  return lax.conv_general_dilated(x, w, strides, pads,
                                  dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _fast_conv(x, w, strides, pads):
  return _xla_conv(x, w, strides, pads)


def onednn_forward(x) -> bool:
  """Whether training's forward pass of a convolution of `x` is oneDNN's:
  more than one input channel, on a CPU with AVX-512. In a train step on
  the 2-core Intel Xeon with AMX (2026-12-06, batch 128, float32) oneDNN's
  forward pass made preact_resnet18 1.29x, resnet_preact20 1.13x, keras_cnn
  1.07x and seed_cnn 1.02x faster than XLA's; on the 2-core AMD EPYC
  without AVX-512, XLA's was the faster (seed_cnn at batch 400: 37 against
  41 ms per step). Evaluation and prediction keep XLA's (keras_cnn at batch
  1000 on the AMD EPYC: 4.7k against 3.8k img/s)."""
  return (x.shape[-1] > 1 and features.detect().avx512
          and onednn.available())


def _fast_conv_fwd(x, w, strides, pads):
  if onednn_forward(x):
    out_hw = _out_hw(x.shape[1:3], w.shape[:2], strides, pads)
    y = onednn.conv_fwd(x, w, strides, pads,
                        (x.shape[0], *out_hw, w.shape[3]))
  else:
    y = _xla_conv(x, w, strides, pads)
  return y, (x, w)


def _fast_conv_bwd(strides, pads, res, g):
  x, w = res
  # Decided here, not in the forward pass: eval and predict never load it.
  if not onednn.available():
    return jax.vjp(lambda x, w: _xla_conv(x, w, strides, pads), x, w)[1](g)
  if x.shape[-1] > 1:
    return onednn.conv_bwd(x, w, g, strides, pads)
  # A single-channel input is a model's image: two calls, so that XLA drops
  # the input gradient nobody uses.
  return (onednn.conv_bwd_data(g, w, strides, pads, x.shape),
          onednn.conv_bwd_weights(x, g, strides, pads, w.shape))


_fast_conv.defvjp(_fast_conv_fwd, _fast_conv_bwd)


def _rounded(*arrays):
  """float32 arrays rounded to bfloat16 (the bfloat16 passes' operands)."""
  return tuple(a.astype(jnp.bfloat16) for a in arrays)


def _exact_conv(x, w, strides, pads):
  """Without oneDNN: float32 XLA convolutions of the rounded operands, whose
  products are exact in float32, so the same sums as oneDNN's."""
  f = lambda x, w: lax.conv_general_dilated(
      x, w, strides, pads, dimension_numbers=_NHWC,
      precision=lax.Precision.HIGHEST)
  return f, (x.astype(jnp.float32), w.astype(jnp.float32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bf16_conv(x, w, strides, pads):
  return _bf16_conv_fwd(x, w, strides, pads)[0]


def _bf16_conv_fwd(x, w, strides, pads):
  xb, wb = _rounded(x, w)
  if not onednn.available():
    f, args = _exact_conv(xb, wb, strides, pads)
    return f(*args), (xb, wb)
  out_hw = _out_hw(x.shape[1:3], w.shape[:2], strides, pads)
  y = onednn.conv_fwd(xb, wb, strides, pads,
                      (x.shape[0], *out_hw, w.shape[3]), jnp.float32)
  return y, (xb, wb)  # The bfloat16 operands: half the memory of x and w.


def _bf16_conv_bwd(strides, pads, res, g):
  xb, wb = res
  gb, = _rounded(g)
  if not onednn.available():
    f, args = _exact_conv(xb, wb, strides, pads)
    return jax.vjp(f, *args)[1](gb.astype(jnp.float32))
  return onednn.conv_bwd(xb, wb, gb, strides, pads, jnp.float32)


_bf16_conv.defvjp(_bf16_conv_fwd, _bf16_conv_bwd)


def _bf16_act_conv_impl(x, w, strides, pads):
  if not onednn.available():
    f, args = _exact_conv(x, w, strides, pads)
    return f(*args).astype(jnp.bfloat16)
  out_hw = _out_hw(x.shape[1:3], w.shape[:2], strides, pads)
  return onednn.conv_fwd(x, w, strides, pads,
                         (x.shape[0], *out_hw, w.shape[3]), jnp.bfloat16)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bf16_act_conv(x, w, strides, pads):
  return _bf16_act_conv_impl(x, w, strides, pads)


def _bf16_act_conv_fwd(x, w, strides, pads):
  return _bf16_act_conv_impl(x, w, strides, pads), (x, w)


def _bf16_act_conv_bwd(strides, pads, res, g):
  x, w = res
  if not onednn.available():
    f, args = _exact_conv(x, w, strides, pads)
    dx, dw = jax.vjp(f, *args)[1](g.astype(jnp.float32))
    return dx.astype(jnp.bfloat16), dw.astype(jnp.bfloat16)
  if x.shape[-1] == 1:  # An image: XLA drops the gradient nobody uses.
    return (onednn.conv_bwd_data(g, w, strides, pads, x.shape, jnp.bfloat16),
            onednn.conv_bwd_weights(x, g, strides, pads, w.shape,
                                    jnp.bfloat16))
  return onednn.conv_bwd(x, w, g, strides, pads, jnp.bfloat16)


_bf16_act_conv.defvjp(_bf16_act_conv_fwd, _bf16_act_conv_bwd)


def _bf16_operands_conv(x, w, strides, pads):
  """bfloat16 operands (config.compute_dtype='bfloat16'): oneDNN's bfloat16
  kernels, float32 sums, a bfloat16 result and bfloat16 gradients, as
  PyTorch's bfloat16 autocast computes a convolution. A single-channel image
  takes them too (resnet_preact20's bfloat16 train step at batch 128: 61 and
  63 against 66 and 68 ms, two A/Bs on the 2-core Intel Xeon with AMX,
  2026-12-06; the float32 sum of shifted copies and its two casts cost more
  than they save); without oneDNN it runs the float32 path (that sum) and is
  rounded after."""
  if x.shape[-1] == 1 and not onednn.available():
    y = _fast_conv(x.astype(jnp.float32), w.astype(jnp.float32), strides,
                   pads)
    return y.astype(jnp.bfloat16)
  return _bf16_act_conv(x, w, strides, pads)


def bf16_passes(precision=None) -> bool:
  """Whether a convolution of float32 operands runs bfloat16 passes here."""
  return precision is None and (
      str(jax.config.jax_default_matmul_precision) in BF16_PASSES)


def _cpu_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
              feature_group_count, batch_group_count, precision,
              preferred_element_type) -> bool:
  """Where the fast convolution applies (see the module docstring)."""
  return (jax.default_backend() == 'cpu' and jax.device_count() == 1
          and lhs.dtype == rhs.dtype
          and lhs.dtype in (jnp.float32, jnp.bfloat16)
          and _is_nhwc(dimension_numbers, lhs.ndim)
          and tuple(lhs_dilation or (1, 1)) == (1, 1)
          and tuple(rhs_dilation or (1, 1)) == (1, 1)
          and feature_group_count == 1 and batch_group_count == 1
          and precision in (None, lax.Precision.HIGHEST)
          and preferred_element_type in (None, lhs.dtype))


@functools.wraps(lax.conv_general_dilated)
def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None,
                         out_sharding=None):
  if out_sharding is None and _cpu_nhwc(
      lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count, precision,
      preferred_element_type):
    pads = tuple(map(tuple, _pad_pairs(padding, rhs.shape[:2],
                                       lhs.shape[1:3], window_strides)))
    strides = tuple(window_strides)
    out_hw = _out_hw(lhs.shape[1:3], rhs.shape[:2], strides, pads)
    if (lhs.shape[-1] == rhs.shape[2] and min(out_hw) > 0
        and min(min(p) for p in pads) >= 0):
      # oneDNN wants the bottom/right padding the output size implies: rows
      # and columns past the last window are cropped instead.
      hi = [(o - 1) * s + k - i - lo for o, s, k, i, (lo, _) in zip(
          out_hw, strides, rhs.shape[:2], lhs.shape[1:3], pads)]
      x = lhs[:, :lhs.shape[1] + min(hi[0], 0), :lhs.shape[2] + min(hi[1], 0)]
      pads = tuple((lo, max(h, 0)) for (lo, _), h in zip(pads, hi))
      if x.dtype == jnp.bfloat16:
        return _bf16_operands_conv(x, rhs, strides, pads)
      if x.shape[-1] > 1 and bf16_passes(precision):
        return _bf16_conv(x, rhs, strides, pads)
      return _fast_conv(x, rhs, strides, pads)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type,
      out_sharding=out_sharding)
