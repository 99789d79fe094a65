"""DenseNet (Huang et al. 2017) for 28x28 inputs, in Flax NNX.

As `models/densenet.py` of hysts/pytorch_image_classification and its fork
janzd/pytorch_image_classification (the K49 DenseNet-100 row): a 3x3 stem
with 2k channels, three dense stages of n blocks each adding k channels,
a transition (BN-ReLU-1x1 conv to `compression` x the channels, 2x2 average
pooling) after the first two stages, a final BN-ReLU, global average
pooling and a linear head. A block is BN-ReLU-conv3x3 (`basic`, depth 3n+4)
or BN-ReLU-conv1x1 (4k channels)-BN-ReLU-conv3x3 (`bottleneck`, DenseNet-BC,
depth 6n+4). No dropout (`drop_rate` 0 in janzd's configs/densenet.json).

* `densenet_bc100_k12`: bottleneck, depth 100, k=12, compression 0.5
  (janzd configs/densenet.json; 0.8M parameters on CIFAR-10).
* `densenet100_k12`: basic, depth 100, k=12, no compression (the paper's
  DenseNet (L=100, k=12); 7.0M parameters on CIFAR-10).

Same convention as `kmnist_jax.models.factory`: `model(x, *, train, dropout_key)`
with x float32 (B, 28, 28, 1). No manifold-mixup points.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from kmnist_jax.models import resnets

# PyTorch-default BatchNorm and Kaiming fan-out convolutions without bias,
# as the ResNets; the head as hysts' `initialize_weights` (PyTorch's default
# weight, zero bias).
_conv = resnets._conv  # pylint: disable=protected-access
_bn_relu = resnets._bn_relu  # pylint: disable=protected-access


class _DenseBlock(nnx.Module):
  """Pre-activation block whose k new channels are appended to its input."""

  def __init__(self, cin, growth, bottleneck, *, rngs, dtype=None):
    self.bn1 = _bn_relu(cin, rngs, dtype)
    if bottleneck:
      self.conv1 = _conv(cin, 4 * growth, 1, 1, rngs, dtype)
      self.bn2 = _bn_relu(4 * growth, rngs, dtype)
      self.conv2 = _conv(4 * growth, growth, 3, 1, rngs, dtype)
    else:
      self.conv1 = _conv(cin, growth, 3, 1, rngs, dtype)
      self.bn2 = self.conv2 = None

  def __call__(self, x, train):
    ura = not train
    y = self.conv1(self.bn1(x, use_running_average=ura))
    if self.conv2 is not None:
      y = self.conv2(self.bn2(y, use_running_average=ura))
    return jnp.concatenate([x, y], axis=-1)


class _Transition(nnx.Module):
  """BN-ReLU-conv1x1, then 2x2/2 average pooling (floor, as PyTorch)."""

  def __init__(self, cin, cout, *, rngs, dtype=None):
    self.bn = _bn_relu(cin, rngs, dtype)
    self.conv = _conv(cin, cout, 1, 1, rngs, dtype)

  def __call__(self, x, train):
    x = self.conv(self.bn(x, use_running_average=not train))
    return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding='VALID')


class DenseNet(nnx.Module):
  """DenseNet with three stages (hysts / janzd `models/densenet.py`)."""

  def __init__(self, num_classes: int, depth: int = 100, growth: int = 12,
               bottleneck: bool = True, compression: float = 0.5, *,
               rngs: nnx.Rngs, dtype=None):
    per_block = 2 if bottleneck else 1
    n = (depth - 4) // (3 * per_block)
    if n < 1 or 3 * per_block * n + 4 != depth:
      raise ValueError(f'DenseNet depth {depth}: expected '
                       f'{3 * per_block}n+4 for '
                       f'{"bottleneck" if bottleneck else "basic"} blocks')
    c = 2 * growth
    self.stem = _conv(1, c, 3, 1, rngs, dtype)
    stages, transitions = [], []
    for index in range(3):
      blocks = []
      for _ in range(n):
        blocks.append(_DenseBlock(c, growth, bottleneck, rngs=rngs,
                                  dtype=dtype))
        c += growth
      stages.append(nnx.List(blocks))
      if index < 2:
        cout = int(c * compression)
        transitions.append(_Transition(c, cout, rngs=rngs, dtype=dtype))
        c = cout
    self.stages = nnx.List(stages)
    self.transitions = nnx.List(transitions)
    self.bn = _bn_relu(c, rngs, dtype)
    self.head = resnets.head(c, num_classes, rngs, dtype, zero_bias=True)

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    del dropout_key  # No dropout.
    x = self.stem(x)
    for index, stage in enumerate(self.stages):
      for block in stage:
        x = block(x, train)
      if index < 2:
        x = self.transitions[index](x, train)
    x = self.bn(x, use_running_average=not train)
    return self.head(jnp.mean(x, axis=(1, 2)))


def densenet_bc100_k12(num_classes: int, *, rngs: nnx.Rngs, dtype=None):
  return DenseNet(num_classes, depth=100, growth=12, bottleneck=True,
                  compression=0.5, rngs=rngs, dtype=dtype)


def densenet100_k12(num_classes: int, *, rngs: nnx.Rngs, dtype=None):
  return DenseNet(num_classes, depth=100, growth=12, bottleneck=False,
                  compression=1.0, rngs=rngs, dtype=dtype)


MODELS = {
    'densenet_bc100_k12': densenet_bc100_k12,
    'densenet100_k12': densenet100_k12,
}
