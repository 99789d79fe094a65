"""The VGG of the "ResNet18 + VGG Ensemble" row, in Flax NNX.

`horev_vgg`: class `VGG` of Rani Horev's KujuMNIST.ipynb
(ranihorev/Kuzushiji_MNIST at 152ce0e60c2f8b453f33e07e15462b5fad774fe1,
"Based on https://github.com/kkweon/mnist-competition", whose vgg16.py it
ports to PyTorch with a narrower last block and a BN-dropout head):

* four blocks of 3x3 convolutions (padding 1, with bias), each followed by
  BatchNorm and ReLU, then 2x2/2 max pooling: 64-64, 128-128, 256-256-256,
  256-256-256 channels (28 -> 14 -> 7 -> 3 -> 1 pixels);
* head: dropout 0.5, linear 256 -> 512, BatchNorm, ReLU, dropout 0.5,
  linear 512 -> classes (the notebook returns its log-softmax; ours the
  logits, as every model here).

Initialisation as the notebook: convolution weights normal with std
sqrt(2 / (9 x out channels)) (Kaiming, fan-out), BatchNorm scale 1 and
shift 0; PyTorch's defaults elsewhere: convolution biases and linear layers
uniform in +-1/sqrt(fan-in). BatchNorm as PyTorch's (momentum 0.1, eps
1e-5). 3,646,154 parameters for 10 classes (tests/test_vgg.py derives
the count from the layers; PyTorch counts the same for the notebook's class).

Same convention as `kmnist_jax.models.factory`: `model(x, *, train, dropout_key)`
with x float32 (B, 28, 28, 1). No manifold-mixup points.
"""

from __future__ import annotations

import jax
from flax import nnx

from kmnist_jax.models import ops
from kmnist_jax.models import resnets

_BN = dict(momentum=0.9, epsilon=1e-5)  # PyTorch BatchNorm defaults.
_HE_FAN_OUT = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default Linear/Conv weight and bias (kmnist_jax.models.resnets).
_TORCH_WEIGHT = resnets.TORCH_WEIGHT
_torch_bias = resnets.torch_bias
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (256, 256, 256))
HIDDEN = 512
DROPOUT = 0.5


def _max_pool(x):
  """2x2/2 max pooling as PyTorch's `nn.MaxPool2d(2, 2)`: odd sizes floor
  (7 -> 3) and a window's gradient goes to one maximum, also among ties
  (ReLU zeros). Not `cnns._max_pool`'s reshape-and-max: its gradient
  shares ties, and in this network it came out NaN under XLA:CPU
  optimisation level 0, the config smoke tests' level (not on the pooling
  alone; level 2 was finite)."""
  return nnx.max_pool(x, (2, 2), strides=(2, 2))


class _ConvBN(nnx.Module):
  """3x3 convolution (padding 1, bias), BatchNorm, ReLU."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, dtype=None):
    self.conv = ops.conv(
        cin, cout, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_HE_FAN_OUT,
        bias_init=_torch_bias(9 * cin), dtype=dtype, rngs=rngs)
    self.bn = ops.batch_norm_relu(cout, dtype=dtype, rngs=rngs, **_BN)

  def __call__(self, x, train: bool):
    return self.bn(self.conv(x), use_running_average=not train)


def _linear(cin: int, cout: int, rngs: nnx.Rngs, dtype):
  return nnx.Linear(cin, cout, kernel_init=_TORCH_WEIGHT,
                    bias_init=_torch_bias(cin), dtype=dtype, rngs=rngs)


class HorevVGG(nnx.Module):
  """Rani Horev's KMNIST VGG (see the module docstring)."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, dtype=None):
    blocks, cin = [], 1
    for widths in BLOCKS:
      layers = []
      for cout in widths:
        layers.append(_ConvBN(cin, cout, rngs=rngs, dtype=dtype))
        cin = cout
      blocks.append(nnx.List(layers))
    self.blocks = nnx.List(blocks)
    self.fc1 = _linear(cin, HIDDEN, rngs, dtype)  # 1x1 pixels after 4 pools.
    self.bn_fc = ops.batch_norm_relu(HIDDEN, dtype=dtype, rngs=rngs, **_BN)
    self.fc2 = _linear(HIDDEN, num_classes, rngs, dtype)
    self.dropout = ops.current().dropout

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    for block in self.blocks:
      for layer in block:
        x = layer(x, train)
      x = _max_pool(x)
    k1, k2 = jax.random.split(dropout_key) if train else (None, None)
    x = self.dropout(x.reshape(x.shape[0], -1), DROPOUT, train, k1)
    x = self.bn_fc(self.fc1(x), use_running_average=not train)
    x = self.dropout(x, DROPOUT, train, k2)
    return self.fc2(x)


MODELS = {'horev_vgg': HorevVGG}
