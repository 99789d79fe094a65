"""The residual networks: shapes, sizes, manifold mixup, shake-shake."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kmnist_jax.models import factory as models
from kmnist_jax.models import resnets

# Published parameter counts (CIFAR versions; the 1-channel stem differs by
# a few hundred): PreActResNet-18 11.17M, ResNet-preact-20 0.27M,
# Shake-Shake-26 2x96d 26.2M with Gastaldi's 16-channel stem, 26.33M with
# hysts' 96-channel one (ours, 1,728 fewer for the 1-channel input).
PARAMS = {'preact_resnet18': (11.16e6, 11.18e6),
          'resnet_preact20': (0.27e6, 0.275e6),
          'shake_shake26_2x96d': (26.32e6, 26.34e6)}


def num_params(name, num_classes=10):
  abstract = nnx.eval_shape(lambda: models.create_model(name, num_classes))
  return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_registered_with_published_size(name):
  assert name in models.MODELS
  low, high = PARAMS[name]
  assert low <= num_params(name) <= high
  # The head grows by 512/64/384 weights + 1 bias per extra class.
  width = {'preact_resnet18': 512, 'resnet_preact20': 64,
           'shake_shake26_2x96d': 384}[name]
  assert num_params(name, 49) - num_params(name) == 39 * (width + 1)


@pytest.mark.parametrize('name', ['preact_resnet18', 'resnet_preact20'])
@pytest.mark.parametrize('num_classes', [10, 49])
def test_shapes_and_train_eval_modes(name, num_classes):
  model = models.create_model(name, num_classes, seed=0)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 28, 28, 1))
  y_eval = model(x, train=False)
  assert y_eval.shape == (3, num_classes)
  assert np.all(np.isfinite(np.asarray(y_eval)))
  y_train = model(x, train=True, dropout_key=jax.random.PRNGKey(1))
  assert y_train.shape == (3, num_classes)
  # Batch statistics differ from the (initial) running averages.
  assert not np.allclose(y_train, y_eval)


def test_manifold_mixup_points():
  model = models.create_model('resnet_preact20', 10, seed=0)
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  perm = jnp.array([2, 3, 0, 1])
  plain = model(x, train=False)
  # lam = 1 keeps every hidden state.
  for layer in range(resnets.MIXUP_POINTS['resnet_preact20']):
    out = model(x, train=False, mixup=(1.0, perm, jnp.array(layer)))
    np.testing.assert_allclose(out, plain, rtol=1e-5, atol=1e-5)
  # Point 0 mixes the input itself.
  lam = 0.3
  mixed_input = lam * x + (1 - lam) * x[perm]
  np.testing.assert_allclose(
      model(x, train=False, mixup=(lam, perm, jnp.array(0))),
      model(mixed_input, train=False), rtol=1e-5, atol=1e-5)
  # Point 1 differs from point 0 (mixing after a nonlinear stage).
  assert not np.allclose(model(x, train=False, mixup=(lam, perm, 1)),
                         model(x, train=False, mixup=(lam, perm, 0)))
  assert all(v == 3 for v in resnets.MIXUP_POINTS.values())


def test_shake_forward_alpha_backward_beta():
  x1, x2 = jnp.array([2.0, 4.0]), jnp.array([1.0, -1.0])
  alpha, beta = jnp.array([0.25, 0.5]), jnp.array([0.8, 0.1])
  np.testing.assert_allclose(resnets.shake(x1, x2, alpha, beta),
                             alpha * x1 + (1 - alpha) * x2)
  g1, g2 = jax.grad(lambda a, b: resnets.shake(a, b, alpha, beta).sum(),
                    argnums=(0, 1))(x1, x2)
  np.testing.assert_allclose(g1, beta)
  np.testing.assert_allclose(g2, 1 - beta)


def test_shake_shake_block_is_random_in_training_only():
  block = resnets._ShakeBlock(8, 16, 2, rngs=nnx.Rngs(0))  # pylint: disable=protected-access
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 8))
  a = block(x, False, None)
  assert a.shape == (2, 4, 4, 16)
  np.testing.assert_array_equal(a, block(x, False, None))
  k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  t1 = block(x, True, k1)
  np.testing.assert_array_equal(t1, block(x, True, k1))
  assert not np.allclose(t1, block(x, True, k2))
  with pytest.raises(ValueError, match='dropout_key'):
    resnets.ShakeShake(10, depth=8, base=8, rngs=nnx.Rngs(0))(
        jnp.zeros((1, 28, 28, 1)), train=True)


def test_shake_shake_as_hysts():
  """A conv-BN-ReLU stem of `base` channels, identity shortcuts through the
  first stage, and the last sum pooled without a ReLU (hysts c3e98330)."""
  model = resnets.ShakeShake(16, depth=8, base=4, rngs=nnx.Rngs(0))
  assert model.stem.kernel.shape == (3, 3, 1, 4)
  assert [b.skip is None for stage in model.stages for b in stage] == [
      True, False, False]
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  model.head.kernel[...] = jnp.eye(16)  # The logits are the pooled features.
  pooled = model(x, train=False)
  assert (pooled < 0).any() and (pooled > 0).any()


def test_small_shake_shake_shapes():
  model = resnets.ShakeShake(49, depth=8, base=8, rngs=nnx.Rngs(0))
  x = jnp.ones((2, 28, 28, 1))
  assert model(x, train=False).shape == (2, 49)
  out = model(x, train=True, dropout_key=jax.random.PRNGKey(0),
              mixup=(0.5, jnp.array([1, 0]), jnp.array(2)))
  assert out.shape == (2, 49)


@pytest.mark.parametrize('make, cin, zero_bias', [
    (lambda: resnets.ResNetPreAct(10, depth=8, base=16, rngs=nnx.Rngs(0)),
     64, True),
    (lambda: resnets.ShakeShake(10, depth=8, base=32, rngs=nnx.Rngs(0)),
     128, True),
    (lambda: models.create_model('preact_resnet18', 10, seed=0), 512, False),
])
def test_heads_initialised_as_the_sources(make, cin, zero_bias):
  """PyTorch's default Linear weight, uniform in +-1/sqrt(fan-in) (std
  bound/sqrt(3)); the bias zero (hysts' initialize_weights) or uniform in
  the same bound (manifold-mixup code: PyTorch's default)."""
  head = make().head
  bound = 1 / np.sqrt(cin)
  w, b = np.asarray(head.kernel[...]), np.asarray(head.bias[...])
  assert w.shape == (cin, 10)
  assert np.abs(w).max() <= bound
  assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)
  if zero_bias:
    np.testing.assert_array_equal(b, 0.0)
  else:
    assert np.abs(b).max() <= bound and b.std() > bound / 10
