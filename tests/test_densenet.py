"""DenseNet-100 (k=12): registry, size, shapes (kmnist_jax.models.densenet).

The 2-step smoke train is `k49_densenet100:smoke` in tests/test_configs.py.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from kmnist_jax.models import densenet
from kmnist_jax.models import factory as models


def expected_params(depth, k, bottleneck, compression, in_channels,
                    num_classes, stem=None):
  """Trainable parameters of the hysts/janzd DenseNet, counted from the
  architecture: convolutions without bias, BN scale and shift, linear head.
  The stem has 2k channels (hysts/janzd) unless `stem` says otherwise."""
  n = (depth - 4) // (6 if bottleneck else 3)
  c = stem or 2 * k
  total = in_channels * 9 * c  # 3x3 stem.
  for stage in range(3):
    for _ in range(n):
      if bottleneck:  # BN, 1x1 to 4k, BN, 3x3 to k.
        total += 2 * c + c * 4 * k + 2 * 4 * k + 4 * k * 9 * k
      else:  # BN, 3x3 to k.
        total += 2 * c + c * 9 * k
      c += k
    if stage < 2:  # BN, 1x1 to int(c * compression).
      cout = int(c * compression)
      total += 2 * c + c * cout
      c = cout
  return total + 2 * c + c * num_classes + num_classes


def num_params(name, num_classes):
  abstract = nnx.eval_shape(lambda: models.create_model(name, num_classes))
  return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


ARCH = {'densenet_bc100_k12': (100, 12, True, 0.5),
        'densenet100_k12': (100, 12, False, 1.0)}


def test_formula_gives_the_published_cifar10_sizes():
  # Huang et al. 2017, Table 2: DenseNet-BC (L=100, k=12) 0.8M,
  # DenseNet (L=100, k=12) 7.0M parameters (3-channel input, 10 classes).
  # The paper's basic DenseNet has a 16-channel stem; hysts/janzd use 2k = 24
  # for both, which adds about 0.08M to the basic one.
  assert round(expected_params(*ARCH['densenet_bc100_k12'], 3, 10),
               -5) == 800_000
  # The PyTorch count of DenseNet-BC-100 (k=12) on CIFAR-10, 2k-channel stem
  # (bamos/densenet.pytorch README: "Number of params: 769162").
  assert expected_params(*ARCH['densenet_bc100_k12'], 3, 10) == 769_162
  assert round(expected_params(*ARCH['densenet100_k12'], 3, 10, stem=16),
               -5) == 7_000_000
  assert round(expected_params(*ARCH['densenet100_k12'], 3, 10),
               -4) == 7_080_000


@pytest.mark.parametrize('name', sorted(ARCH))
@pytest.mark.parametrize('num_classes', [10, 49])
def test_registered_with_the_architecture_size(name, num_classes):
  assert name in models.MODELS
  assert num_params(name, num_classes) == expected_params(
      *ARCH[name], 1, num_classes)


@pytest.mark.parametrize('name', sorted(ARCH))
@pytest.mark.parametrize('train', [False, True])
def test_output_shape(name, train):
  # Abstractly: op-by-op on the CPU the basic network alone takes minutes.
  # The k49_densenet100:smoke run (tests/test_configs.py) trains the BC one
  # for real.
  abstract = nnx.eval_shape(lambda: models.create_model(name, 49))
  graphdef, state = nnx.split(abstract)

  def apply(state, x):
    return nnx.merge(graphdef, state)(x, train=train,
                                      dropout_key=jax.random.PRNGKey(1))

  out = jax.eval_shape(apply, state, jax.ShapeDtypeStruct((3, 28, 28, 1),
                                                          np.float32))
  assert (out.shape, out.dtype) == ((3, 49), np.float32)


def test_bad_depth_is_refused():
  with pytest.raises(ValueError, match=r'DenseNet depth 99: expected 6n\+4 '
                     'for bottleneck blocks'):
    densenet.DenseNet(10, depth=99, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r'DenseNet depth 101: expected 3n\+4 '
                     'for basic blocks'):
    densenet.DenseNet(10, depth=101, bottleneck=False, compression=1.0,
                      rngs=nnx.Rngs(0))


def test_head_initialised_as_hysts():
  """hysts' / janzd's initialize_weights: PyTorch's default Linear weight
  (uniform in +-1/sqrt(fan-in)), zero bias."""
  head = densenet.DenseNet(10, depth=10, rngs=nnx.Rngs(0)).head
  w = np.asarray(head.kernel[...])
  assert w.shape == (27, 10)  # 24 + 12 -> 18 + 12 -> 15 + 12 channels.
  assert np.abs(w).max() <= 1 / np.sqrt(27) and w.std() > 0.05
  np.testing.assert_array_equal(np.asarray(head.bias[...]), 0.0)
