"""Residual networks of the published KMNIST / K49 benchmarks, in Flax NNX.

* `preact_resnet18`: PreActResNet-18 as in the KMNIST paper (the
  manifold-mixup reference code): 3x3 stem with 64 channels, four stages of
  two pre-activation blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2),
  a final BN-ReLU, global average pooling and a linear head (see the class
  for where it differs from that code).
* `resnet_preact20`: ResNet-preact-20 of hysts/pytorch_image_classification:
  3x3 stem with 16 channels, three stages of three pre-activation blocks
  (16, 32, 64 channels; strides 1, 2, 2), final BN-ReLU, pooling, head.
* `shake_shake26_2x96d`: Shake-Shake-26 2x96d (S-S-I) of hysts: stem conv+BN
  with 16 channels, three stages of four two-branch blocks (96, 192, 384
  channels) mixed by per-image random weights (forward alpha, backward beta),
  ReLU, pooling, head.

All follow the `kmnist_jax.models.factory` convention `model(x, *, train,
dropout_key)` with x float32 (B, 28, 28, 1). Manifold mixup: pass
`mixup=(lam, perm, layer)`; the hidden state at mixing point `layer`
(0 = the input, k = after stage k) becomes
`lam * h + (1 - lam) * h[perm]`. `layer` may be traced.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from kmnist_jax.models import ops

_BN = dict(momentum=0.9, epsilon=1e-5)  # PyTorch BatchNorm2d defaults.
_HE = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default nn.Linear / nn.Conv2d weight: kaiming_uniform(a=sqrt(5)),
# i.e. uniform in +-1/sqrt(fan-in).
TORCH_WEIGHT = nnx.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def torch_bias(fan_in: int):
  """PyTorch's default bias: uniform in +-1/sqrt(fan-in)."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def head(cin, num_classes, rngs, dtype, *, zero_bias: bool):
  """The linear head as the sources build it: PyTorch's default weight;
  a zero bias (`initialize_weights` of hysts' and janzd's models) or
  PyTorch's default bias (the manifold-mixup code, which leaves it)."""
  return nnx.Linear(cin, num_classes, kernel_init=TORCH_WEIGHT,
                    bias_init=(nnx.initializers.zeros_init() if zero_bias
                               else torch_bias(cin)),
                    dtype=dtype, rngs=rngs)


def _conv(cin, cout, k, stride, rngs, dtype):
  pad = (k - 1) // 2
  return ops.conv(cin, cout, (k, k), strides=stride,
                  padding=((pad, pad), (pad, pad)), use_bias=False,
                  kernel_init=_HE, dtype=dtype, rngs=rngs)


def _bn(c, rngs, dtype):
  return nnx.BatchNorm(c, dtype=dtype, rngs=rngs, **_BN)


def _bn_relu(c, rngs, dtype):
  """BatchNorm then ReLU, one layer (`ops.BatchNormReLU`)."""
  return ops.batch_norm_relu(c, dtype=dtype, rngs=rngs, **_BN)


def _mix(h, mixup, point: int):
  """Mixes `h` with its permutation when `mixup` selects mixing `point`."""
  if mixup is None:
    return h
  lam, perm, layer = mixup
  mixed = lam * h + (1.0 - lam) * h[perm]
  return jnp.where(layer == point, mixed, h)


def _head_pool(x):
  return jnp.mean(x, axis=(1, 2))


class Sum(NamedTuple):
  """A block's output a + b, not yet added: the next BatchNorm+ReLU adds
  it in its own passes (`ops.BatchNormReLU.after_add`)."""
  a: jax.Array
  b: jax.Array


def _total(x):
  return x.a + x.b if isinstance(x, Sum) else x


def _bn_relu_of(bn, x, ura, with_sum: bool):
  """bn(x) for an array or a `Sum`; with_sum: (x as one array, bn(x))."""
  if isinstance(x, Sum):
    return bn.after_add(x.a, x.b, ura, with_sum=with_sum)
  y = bn(x, use_running_average=ura)
  return (x, y) if with_sum else y


class PreActBlock(nnx.Module):
  """Pre-activation basic block.

  `preact_shortcut`: the shortcut starts from the pre-activated input
  (hysts' first block of a stage; every block of our PreActResNet-18);
  otherwise from the raw input (hysts' other blocks).
  """

  def __init__(self, cin, cout, stride, preact_shortcut, *, rngs, dtype=None):
    self.bn1 = _bn_relu(cin, rngs, dtype)
    self.conv1 = _conv(cin, cout, 3, stride, rngs, dtype)
    self.bn2 = _bn_relu(cout, rngs, dtype)
    self.conv2 = _conv(cout, cout, 3, 1, rngs, dtype)
    self.preact_shortcut = preact_shortcut
    self.shortcut = (_conv(cin, cout, 1, stride, rngs, dtype)
                     if stride != 1 or cin != cout else None)

  def __call__(self, x, train):
    """x: an array, or the previous block's `Sum`; returns a `Sum`."""
    ura = not train
    if self.preact_shortcut:
      out = short = _bn_relu_of(self.bn1, x, ura, False)
    else:
      short, out = _bn_relu_of(self.bn1, x, ura, True)
    if self.shortcut is not None:
      short = self.shortcut(short)
    out = self.conv1(out)
    out = self.conv2(self.bn2(out, use_running_average=ura))
    return Sum(out, short)


class _PreActNet(nnx.Module):
  """stem -> stages of PreActBlocks -> BN-ReLU -> pool -> head, with the
  manifold-mixup points before the stem (0) and after each stage (1, 2, ...).
  Each block's residual add is left to the next BatchNorm+ReLU (a `Sum`),
  which fuses it where the ops can.
  """

  def __call__(self, x, *, train: bool = False, dropout_key=None, mixup=None):
    del dropout_key
    x = self.stem(_mix(x, mixup, 0))
    for k, stage in enumerate(self.stages):
      for block in stage:
        x = block(x, train)
      if mixup is not None:
        x = _mix(_total(x), mixup, k + 1)
    x = _bn_relu_of(self.bn, x, not train, False)
    return self.head(_head_pool(x))


class PreActResNet18(_PreActNet):
  """PreActResNet-18 (KMNIST paper, manifold-mixup code), with three
  differences from that code (vikasverma1077/manifold_mixup,
  supervised/preact_resnet.py at 5e759dd): every shortcut, identity ones
  too, starts from the pre-activated input; a final BN-ReLU comes before
  pooling; He (fan-out) initialisation of the convolutions (the head keeps
  PyTorch's default weight and bias, as the code). The code's own form (raw
  identity shortcuts, no final BN-ReLU, PyTorch's default initializers)
  diverged on the KMNIST proxy with the recipe's rate 0.1, in this
  project and in the PyTorch port alike (loss 2.3 -> 20 -> NaN within 30
  steps, 2026-11-29). Of the three, the final BN-ReLU alone makes it train
  (experiments/results/preact18_divergence/preact18_divergence.md: 60 steps, one seed); how
  the paper's runs trained the code's form is not published."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, dtype=None):
    self.stem = _conv(1, 64, 3, 1, rngs, dtype)
    blocks, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
      stage = []
      for s in (stride, 1):
        stage.append(PreActBlock(cin, cout, s, True, rngs=rngs, dtype=dtype))
        cin = cout
      blocks.append(nnx.List(stage))
    self.stages = nnx.List(blocks)
    self.bn = _bn_relu(512, rngs, dtype)
    self.head = head(512, num_classes, rngs, dtype, zero_bias=False)


class ResNetPreAct(_PreActNet):
  """hysts' ResNet-preact for 28x28 inputs: depth 6n+2, three stages."""

  def __init__(self, num_classes: int, depth: int = 20, base: int = 16, *,
               rngs: nnx.Rngs, dtype=None):
    n = (depth - 2) // 6
    self.stem = _conv(1, base, 3, 1, rngs, dtype)
    blocks, cin = [], base
    for cout, stride in ((base, 1), (2 * base, 2), (4 * base, 2)):
      stage = []
      for i in range(n):
        stage.append(PreActBlock(cin, cout, stride if i == 0 else 1, i == 0,
                                 rngs=rngs, dtype=dtype))
        cin = cout
      blocks.append(nnx.List(stage))
    self.stages = nnx.List(blocks)
    self.bn = _bn_relu(cin, rngs, dtype)
    self.head = head(cin, num_classes, rngs, dtype, zero_bias=True)


def resnet_preact20(num_classes: int, *, rngs: nnx.Rngs, dtype=None):
  return ResNetPreAct(num_classes, depth=20, base=16, rngs=rngs, dtype=dtype)


def shake(x1, x2, alpha, beta):
  """alpha * x1 + (1 - alpha) * x2 forward; gradients scaled by beta, 1-beta."""
  d = x1 - x2
  return x2 + beta * d + jax.lax.stop_gradient((alpha - beta) * d)


class _ResidualPath(nnx.Module):

  def __init__(self, cin, cout, stride, *, rngs, dtype=None):
    self.conv1 = _conv(cin, cout, 3, stride, rngs, dtype)
    self.bn1 = _bn_relu(cout, rngs, dtype)
    self.conv2 = _conv(cout, cout, 3, 1, rngs, dtype)
    self.bn2 = _bn(cout, rngs, dtype)

  def __call__(self, x, train):
    ura = not train
    x = self.bn1(self.conv1(nnx.relu(x)), use_running_average=ura)
    return self.bn2(self.conv2(x), use_running_average=ura)


class _SkipConnection(nnx.Module):
  """Two strided 1x1 convolutions, the second on the input shifted by one
  pixel, concatenated and batch-normalised (shake-shake shortcut)."""

  def __init__(self, cin, cout, stride, *, rngs, dtype=None):
    self.stride = stride
    self.conv1 = _conv(cin, cout // 2, 1, 1, rngs, dtype)
    self.conv2 = _conv(cin, cout - cout // 2, 1, 1, rngs, dtype)
    self.bn = _bn(cout, rngs, dtype)

  def __call__(self, x, train):
    s = self.stride
    x = nnx.relu(x)
    y1 = self.conv1(x[:, ::s, ::s])
    shifted = jnp.pad(x[:, 1:, 1:], ((0, 0), (0, 1), (0, 1), (0, 0)))
    y2 = self.conv2(shifted[:, ::s, ::s])
    return self.bn(jnp.concatenate([y1, y2], -1), use_running_average=not train)


class _ShakeBlock(nnx.Module):

  def __init__(self, cin, cout, stride, *, rngs, dtype=None):
    self.path1 = _ResidualPath(cin, cout, stride, rngs=rngs, dtype=dtype)
    self.path2 = _ResidualPath(cin, cout, stride, rngs=rngs, dtype=dtype)
    self.skip = (_SkipConnection(cin, cout, stride, rngs=rngs, dtype=dtype)
                 if cin != cout or stride != 1 else None)

  def __call__(self, x, train, key):
    x1, x2 = self.path1(x, train), self.path2(x, train)
    if train:
      ka, kb = jax.random.split(key)
      shape = (x.shape[0], 1, 1, 1)  # S-S-I: one weight per image.
      y = shake(x1, x2, jax.random.uniform(ka, shape, x1.dtype),
                jax.random.uniform(kb, shape, x1.dtype))
    else:
      y = 0.5 * (x1 + x2)
    return y + (x if self.skip is None else self.skip(x, train))


class ShakeShake(nnx.Module):
  """hysts' shake-shake for 28x28 inputs: depth 6n+2, widths base*(1,2,4).

  As hysts' models/shake_shake.py (c3e98330): a conv-BN-ReLU stem of `base`
  channels (not the 16 of Gastaldi's Lua code), so the first stage keeps
  identity shortcuts, and the last block's sum goes to the pool unrectified.
  """

  def __init__(self, num_classes: int, depth: int = 26, base: int = 96, *,
               rngs: nnx.Rngs, dtype=None):
    n = (depth - 2) // 6
    self.stem = _conv(1, base, 3, 1, rngs, dtype)
    self.stem_bn = _bn_relu(base, rngs, dtype)
    blocks, cin = [], base
    for cout, stride in ((base, 1), (2 * base, 2), (4 * base, 2)):
      stage = []
      for i in range(n):
        stage.append(_ShakeBlock(cin, cout, stride if i == 0 else 1,
                                 rngs=rngs, dtype=dtype))
        cin = cout
      blocks.append(nnx.List(stage))
    self.stages = nnx.List(blocks)
    self.head = head(cin, num_classes, rngs, dtype, zero_bias=True)

  def __call__(self, x, *, train: bool = False, dropout_key=None, mixup=None):
    if train and dropout_key is None:
      raise ValueError('shake-shake needs a dropout_key when train=True')
    x = self.stem_bn(self.stem(_mix(x, mixup, 0)),
                     use_running_average=not train)
    i = 0
    for k, stage in enumerate(self.stages):
      for block in stage:
        key = jax.random.fold_in(dropout_key, i) if train else None
        x = block(x, train, key)
        i += 1
      x = _mix(x, mixup, k + 1)
    return self.head(_head_pool(x))  # No ReLU before the pool (hysts).


def shake_shake26_2x96d(num_classes: int, *, rngs: nnx.Rngs, dtype=None):
  return ShakeShake(num_classes, depth=26, base=96, rngs=rngs, dtype=dtype)


MODELS = {
    'preact_resnet18': PreActResNet18,
    'resnet_preact20': resnet_preact20,
    'shake_shake26_2x96d': shake_shake26_2x96d,
}


# Manifold-mixup points per model name: the mixing layer is drawn from
# range(MIXUP_POINTS[name]) (the input and after each stage but the last, as
# the manifold-mixup code draws it).
MIXUP_POINTS = {name: 3 for name in MODELS}
