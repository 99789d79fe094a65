"""Rani Horev's VGG (kmnist_jax.models.vgg): registry, size, shapes, modes, init.

The 2-step smoke train is `vgg:smoke` in tests/test_configs.py.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from kmnist_jax.models import factory as models
from kmnist_jax.models import vgg


def expected_params(num_classes):
  """The notebook's `VGG`, counted layer by layer: 3x3 convolutions with
  bias, BatchNorm scale and shift, Linear 256 -> 512, BatchNorm1d, Linear
  512 -> classes."""
  total, cin = 0, 1
  for cout in (64, 64, 128, 128, 256, 256, 256, 256, 256, 256):
    total += 9 * cin * cout + cout + 2 * cout
    cin = cout
  return total + (256 * 512 + 512) + 2 * 512 + (512 * num_classes
                                                + num_classes)


def num_params(num_classes):
  abstract = nnx.eval_shape(
      lambda: models.create_model('horev_vgg', num_classes))
  return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_registered_with_the_notebooks_size():
  assert models.MODELS['horev_vgg'] is vgg.HorevVGG
  # PyTorch's count of the notebook's class (torch 2.13): 3,646,154 for 10
  # classes, 3,666,161 for 49.
  assert expected_params(10) == 3_646_154
  assert num_params(10) == expected_params(10)
  assert num_params(49) == expected_params(49) == 3_666_161


@pytest.mark.parametrize('num_classes', [10, 49])
def test_shapes_and_train_eval_modes(num_classes):
  model = models.create_model('horev_vgg', num_classes, seed=0)
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  y_eval = model(x, train=False)
  assert y_eval.shape == (4, num_classes)
  assert np.all(np.isfinite(np.asarray(y_eval)))
  np.testing.assert_array_equal(y_eval, model(x, train=False))
  y1 = model(x, train=True, dropout_key=jax.random.PRNGKey(1))
  y2 = model(x, train=True, dropout_key=jax.random.PRNGKey(2))
  assert y1.shape == (4, num_classes)
  assert not np.allclose(y1, y2)  # Dropout masks differ by key.
  assert not np.allclose(y1, y_eval)


def test_training_updates_batch_statistics_only_in_train_mode():
  model = models.create_model('horev_vgg', 10, seed=0)
  before = np.asarray(model.bn_fc.mean[...]).copy()
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  model(x, train=False)
  np.testing.assert_array_equal(model.bn_fc.mean[...], before)
  model(x, train=True, dropout_key=jax.random.PRNGKey(1))
  assert not np.allclose(model.bn_fc.mean[...], before)


def test_feature_map_sizes_and_pooling():
  x = np.arange(2 * 7 * 7 * 3, dtype=np.float32).reshape(2, 7, 7, 3)
  out = np.asarray(vgg._max_pool(x))  # pylint: disable=protected-access
  assert out.shape == (2, 3, 3, 3)  # Odd sizes floor, as nn.MaxPool2d.
  np.testing.assert_array_equal(out[0, 0, 0], x[0, 1, 1])
  # A window of ties (ReLU zeros) sends its gradient to one element.
  grad = np.asarray(jax.grad(
      lambda v: vgg._max_pool(v).sum())(np.zeros((1, 4, 4, 1), np.float32)))  # pylint: disable=protected-access
  assert sorted(np.unique(grad)) == [0.0, 1.0] and grad.sum() == 4.0
  assert vgg.BLOCKS == ((64, 64), (128, 128), (256,) * 3, (256,) * 3)
  model = models.create_model('horev_vgg', 10)
  assert model.fc1.in_features == 256  # 28 -> 14 -> 7 -> 3 -> 1 pixels.


def test_initialisation_as_the_notebook():
  model = models.create_model('horev_vgg', 10, seed=0)
  conv = model.blocks[3][1].conv  # 256 -> 256: 589,824 weights.
  w = np.asarray(conv.kernel[...])
  assert abs(w.std() / np.sqrt(2 / (9 * 256)) - 1) < 0.01
  assert abs(w.mean()) < 1e-3
  bias = np.asarray(conv.bias[...])
  assert np.abs(bias).max() <= 1 / np.sqrt(9 * 256) and bias.std() > 0
  fc1 = np.asarray(model.fc1.kernel[...])
  assert np.abs(fc1).max() <= 1 / np.sqrt(256)
  assert abs(fc1.std() / (1 / np.sqrt(3 * 256)) - 1) < 0.02  # Uniform.
  np.testing.assert_array_equal(model.blocks[0][0].bn.scale[...], 1.0)
  np.testing.assert_array_equal(model.blocks[0][0].bn.bias[...], 0.0)
