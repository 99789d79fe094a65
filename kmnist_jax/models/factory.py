"""Flax NNX models, picked by name from `MODELS`.

Every model maps uint8-derived float images (B, 28, 28, 1) to logits
(B, num_classes) and is called as `model(x, train=..., dropout_key=...)`.
Training code never calls `nnx.jit`: it splits the model into a graphdef and
pure state once and jits plain functions (see `kmnist_jax.train.loop`).
"""

from __future__ import annotations

from typing import Callable

import jax
from flax import nnx

from kmnist_jax import cpu
from kmnist_jax.core.errors import UserError

# PyTorch's BatchNorm2d defaults (momentum 0.1 == Flax 0.9, eps 1e-5).
_BN = dict(momentum=0.9, epsilon=1e-5)


def _max_pool(x):
  """2x2/2 max pooling (VALID), as a reshape and a max.

  Same values as `nnx.max_pool`, but its gradient is a cheap elementwise
  mask: XLA:CPU lowers the `select_and_scatter` gradient of `reduce_window`
  to four iotas, a variadic reduce-window and a scatter over the whole
  activation (the largest non-convolution cost in the keras_cnn profile).
  Exact ties share the gradient instead of the first maximum taking it all.
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SeedCNN(nnx.Module):
  """The original project's notebook CNN, without its double softmax."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, dtype=None):
    # lax's convolution, faster on XLA:CPU (kmnist_jax.cpu).
    cv = dict(dtype=dtype, rngs=rngs,
              conv_general_dilated=cpu.conv_general_dilated)
    self.conv1 = nnx.Conv(1, 16, (5, 5), padding='VALID', **cv)
    self.bn1 = nnx.BatchNorm(16, dtype=dtype, rngs=rngs, **_BN)
    self.conv2 = nnx.Conv(16, 32, (4, 4), strides=2, padding=((1, 1), (1, 1)),
                          **cv)
    self.bn2 = nnx.BatchNorm(32, dtype=dtype, rngs=rngs, **_BN)
    self.head = nnx.Linear(3 * 3 * 32, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    x = _max_pool(nnx.relu(self.bn1(self.conv1(x), use_running_average=not train)))
    x = _max_pool(nnx.relu(self.bn2(self.conv2(x), use_running_average=not train)))
    x = cpu.dropout(x, 0.2, train, dropout_key)
    return self.head(x.reshape(x.shape[0], -1))


class KerasCNN(nnx.Module):
  """The rois-codh "Keras simple CNN" (keras/examples/mnist_cnn.py)."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, dtype=None):
    glorot = nnx.initializers.glorot_uniform()  # Keras' default initializer.
    kw = dict(kernel_init=glorot, dtype=dtype, rngs=rngs)
    # lax's convolution, faster on XLA:CPU (kmnist_jax.cpu).
    cv = dict(kw, conv_general_dilated=cpu.conv_general_dilated)
    self.conv1 = nnx.Conv(1, 32, (3, 3), padding='VALID', **cv)
    self.conv2 = nnx.Conv(32, 64, (3, 3), padding='VALID', **cv)
    self.fc1 = nnx.Linear(12 * 12 * 64, 128, **kw)
    self.fc2 = nnx.Linear(128, num_classes, **kw)

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    k1, k2 = jax.random.split(dropout_key) if train else (None, None)
    x = nnx.relu(self.conv1(x))
    x = _max_pool(nnx.relu(self.conv2(x)))
    x = cpu.dropout(x, 0.25, train, k1)
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    x = cpu.dropout(x, 0.5, train, k2)
    return self.fc2(x)


MODELS: dict[str, Callable[..., nnx.Module]] = {
    'seed_cnn': SeedCNN,
    'keras_cnn': KerasCNN,
}

from kmnist_jax.models import resnets  # pylint: disable=g-import-not-at-top,wrong-import-position
from kmnist_jax.models import densenet  # pylint: disable=g-import-not-at-top,wrong-import-position
from kmnist_jax.models import vgg  # pylint: disable=g-import-not-at-top,wrong-import-position
MODELS.update(resnets.MODELS)
MODELS.update(densenet.MODELS)
MODELS.update(vgg.MODELS)


class Normalized(nnx.Module):
  """`model` of the input scaled as (x - mean) / std, x in [0, 1]: the
  recipes that normalise by their training split's mean and std. The
  augmentations (crops, Cutout, mixup) act on x before it."""

  def __init__(self, model: nnx.Module, mean: float, std: float):
    self.model, self.mean, self.std = model, mean, std

  def __call__(self, x, **kwargs):
    return self.model((x - self.mean) / self.std, **kwargs)


def create_model(name: str, num_classes: int, seed: int = 0, dtype=None,
                 input_mean: float = 0.0, input_std: float = 1.0
                 ) -> nnx.Module:
  """Builds model `name`; an unknown name lists the valid ones. An input
  mean or std other than 0 and 1 wraps it in `Normalized`."""
  if name not in MODELS:
    raise UserError(f'config.model: unknown model {name!r}; valid: '
                    f'{", ".join(sorted(MODELS))}')
  model = MODELS[name](num_classes, rngs=nnx.Rngs(params=seed), dtype=dtype)
  if (input_mean, input_std) != (0.0, 1.0):
    model = Normalized(model, float(input_mean), float(input_std))
  return model
