"""The small CNNs: the original project's notebook CNN and the rois-codh
"Keras simple CNN"."""

from __future__ import annotations

import jax
from flax import nnx

from kmnist_jax.models import ops

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
    cv = dict(dtype=dtype, rngs=rngs)
    self.conv1 = ops.conv(1, 16, (5, 5), padding='VALID', **cv)
    self.bn1 = ops.batch_norm_relu(16, dtype=dtype, rngs=rngs, **_BN)
    self.conv2 = ops.conv(16, 32, (4, 4), strides=2, padding=((1, 1), (1, 1)),
                          **cv)
    self.bn2 = ops.batch_norm_relu(32, dtype=dtype, rngs=rngs, **_BN)
    self.head = nnx.Linear(3 * 3 * 32, num_classes, dtype=dtype, rngs=rngs)
    self.dropout = ops.current().dropout

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    x = _max_pool(self.bn1(self.conv1(x), use_running_average=not train))
    x = _max_pool(self.bn2(self.conv2(x), use_running_average=not train))
    x = self.dropout(x, 0.2, train, dropout_key)
    return self.head(x.reshape(x.shape[0], -1))


class KerasCNN(nnx.Module):
  """The rois-codh "Keras simple CNN" (keras/examples/mnist_cnn.py)."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, dtype=None):
    glorot = nnx.initializers.glorot_uniform()  # Keras' default initializer.
    kw = dict(kernel_init=glorot, dtype=dtype, rngs=rngs)
    self.conv1 = ops.conv(1, 32, (3, 3), padding='VALID', **kw)
    self.conv2 = ops.conv(32, 64, (3, 3), padding='VALID', **kw)
    self.fc1 = nnx.Linear(12 * 12 * 64, 128, **kw)
    self.fc2 = nnx.Linear(128, num_classes, **kw)
    self.dropout = ops.current().dropout

  def __call__(self, x, *, train: bool = False, dropout_key=None):
    k1, k2 = jax.random.split(dropout_key) if train else (None, None)
    x = nnx.relu(self.conv1(x))
    x = _max_pool(nnx.relu(self.conv2(x)))
    x = self.dropout(x, 0.25, train, k1)
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    x = self.dropout(x, 0.5, train, k2)
    return self.fc2(x)


MODELS = {'seed_cnn': SeedCNN, 'keras_cnn': KerasCNN}
