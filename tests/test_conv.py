"""kmnist_jax.conv and kmnist_jax.onednn: values and gradients equal lax's."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from kmnist_jax import configlib
from kmnist_jax import conv
from kmnist_jax import models
from kmnist_jax import onednn
from kmnist_jax import optim
from kmnist_jax import steps

NHWC = ('NHWC', 'HWIO', 'NHWC')

needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason='oneDNN FFI not available here')


@pytest.fixture
def no_onednn(monkeypatch):
  """As on a machine without oneDNN: the gradients are XLA's."""
  monkeypatch.setattr(onednn, 'available', lambda: False)


def _inputs(b, h, w, kh, kw, c, seed=0):
  r = np.random.default_rng(seed)
  x = jnp.asarray(r.random((b, h, w, 1), np.float32))
  k = jnp.asarray(r.standard_normal((kh, kw, 1, c), np.float32) * 0.3)
  return x, k


def _both(x, k, padding):
  ours = conv.conv_general_dilated(x, k, (1, 1), padding,
                                   dimension_numbers=NHWC)
  ref = lax.conv_general_dilated(x, k, (1, 1), padding,
                                 dimension_numbers=NHWC)
  return ours, ref


@pytest.mark.parametrize('shape, padding', [
    ((8, 28, 28, 5, 5, 16), 'VALID'),   # seed_cnn conv1
    ((8, 28, 28, 3, 3, 32), 'VALID'),   # keras_cnn conv1
    ((3, 28, 28, 3, 3, 64), ((1, 1), (1, 1))),
    ((2, 9, 7, 2, 3, 5), 'SAME'),       # non-square, even kernel
    ((2, 9, 7, 3, 2, 4), ((2, 0), (0, 3))),
    ((1, 6, 6, 1, 1, 3), 'VALID'),      # 1x1
])
def test_single_channel_values_and_gradients_equal_lax(shape, padding,
                                                     no_onednn):
  b, h, w, kh, kw, c = shape
  x, k = _inputs(b, h, w, kh, kw, c)
  ours, ref = jax.jit(_both, static_argnums=2)(x, k, padding)
  assert ours.shape == ref.shape and ours.dtype == ref.dtype == jnp.float32
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  g = jnp.asarray(np.random.default_rng(1).standard_normal(ref.shape,
                                                           np.float32))

  def grads(f):
    return jax.jit(jax.grad(lambda x, k: jnp.vdot(f(x, k), g),
                            argnums=(0, 1)))(x, k)

  ours_dx, ours_dw = grads(lambda x, k: conv.conv_general_dilated(
      x, k, (1, 1), padding, dimension_numbers=NHWC))
  ref_dx, ref_dw = grads(lambda x, k: lax.conv_general_dilated(
      x, k, (1, 1), padding, dimension_numbers=NHWC))
  assert ours_dw.shape == k.shape and ours_dx.shape == x.shape
  np.testing.assert_allclose(ours_dw, ref_dw, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ours_dx, ref_dx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('case', [
    dict(cin=3, onednn=False),                 # more than one channel
    dict(strides=(2, 2), onednn=False),
    dict(rhs_dilation=(2, 2)),
    dict(lhs_dilation=(2, 1)),
    dict(dtype=jnp.bfloat16),
    dict(dimension_numbers=('NCHW', 'OIHW', 'NCHW')),
])
def test_other_convolutions_go_to_lax_unchanged(case, monkeypatch):
  """Only the supported cases take a fast route; the rest are lax's."""
  if not case.get('onednn', True):
    monkeypatch.setattr(onednn, 'available', lambda: False)
  r = np.random.default_rng(2)
  cin, dtype = case.get('cin', 1), case.get('dtype', jnp.float32)
  dn = case.get('dimension_numbers', NHWC)
  x = r.random((2, 12, 12, cin), np.float32)
  k = r.standard_normal((3, 3, cin, 4), np.float32)
  if dn[0] == 'NCHW':
    x, k = x.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1)
  x, k = jnp.asarray(x, dtype), jnp.asarray(k, dtype)
  kw = dict(lhs_dilation=case.get('lhs_dilation'),
            rhs_dilation=case.get('rhs_dilation'), dimension_numbers=dn)
  strides, pad = case.get('strides', (1, 1)), ((0, 0), (0, 0))
  ours = conv.conv_general_dilated(x, k, strides, pad, **kw)
  ref = lax.conv_general_dilated(x, k, strides, pad, **kw)
  np.testing.assert_array_equal(np.asarray(ours, np.float32),
                                np.asarray(ref, np.float32))
  hlo = jax.jit(lambda x, k: conv.conv_general_dilated(
      x, k, strides, pad, **kw)).lower(x, k).as_text()
  assert 'convolution' in hlo and 'custom_call' not in hlo


def _seed_cnn_step_hlo():
  config = configlib.load_config_file('configs/seed_cnn.py', 'proxy')
  tx = optim.create_optimizer(config, 10)
  graphdef, state = steps.init_state(config, 10, tx)
  step = steps.make_train_step(graphdef, tx, config, 10, 8, steps.make_mesh())
  images = jnp.zeros((16, 28, 28), jnp.uint8)
  labels = jnp.arange(16, dtype=jnp.int32) % 10
  return step.lower(state, images, labels, jnp.arange(16), 0).compile(
  ).as_text()


@needs_onednn
def test_seed_cnn_train_step_takes_its_gradients_from_onednn():
  """Forward passes stay XLA's (conv1 as the 25-tap sum); both convolutions'
  gradients come from oneDNN; conv1's input gradient is dropped."""
  hlo = _seed_cnn_step_hlo()
  convs = re.findall(r'fused: convolution|\} convolution\(', hlo)
  assert len(convs) == 1, convs  # conv2's forward pass
  tap_fusions = [c for c in re.split(r'\n(?=%\S+ \()', hlo)
                 if c.count(' slice(') >= 25]
  assert len(tap_fusions) == 1
  calls = re.findall(r'custom_call_target="(kmnist_conv_\w+)"', hlo)
  # conv1 (one input channel): weight gradient only; conv2: both at once.
  assert sorted(calls) == sorted([onednn.BWD_WEIGHTS, onednn.BWD]), calls


@needs_onednn
def test_eval_forward_pass_is_xla_only():
  config = configlib.load_config_file('configs/keras_cnn.py', 'proxy')
  tx = optim.create_optimizer(config, 10)
  graphdef, state = steps.init_state(config, 10, tx)
  infer_fn = steps.make_infer_fn(graphdef)
  hlo = infer_fn.lower(state.params, state.batch_stats,
                       jnp.zeros((4, 28, 28), jnp.uint8)).as_text()
  assert 'kmnist_conv' not in hlo


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='CPU fast path')
def test_seed_cnn_train_step_takes_the_single_channel_path(no_onednn):
  """Without oneDNN, nnx.Conv hands its NHWC numbers through: in the
  compiled train step, conv1's forward pass is no convolution, and its sum is
  written once, not fused into every BatchNorm/ReLU consumer (6 copies
  without the barrier)."""
  hlo = _seed_cnn_step_hlo()
  convs = re.findall(r'fused: convolution|\} convolution\(', hlo)
  # conv2's forward, input and weight gradients; conv1's weight gradient.
  assert len(convs) == 4, convs
  tap_fusions = [c for c in re.split(r'\n(?=%\S+ \()', hlo)
                 if c.count(' slice(') >= 25]
  assert len(tap_fusions) == 1


@pytest.mark.parametrize('name', ['seed_cnn', 'keras_cnn'])
def test_models_equal_lax_convolutions(name):
  """The CNNs compute the same function, and gradients, as with lax's convs."""
  x = jax.random.uniform(jax.random.PRNGKey(3), (6, 28, 28, 1))
  model = models.create_model(name, 10, seed=4)
  assert model.conv1.conv_general_dilated is conv.conv_general_dilated
  assert model.conv2.conv_general_dilated is conv.conv_general_dilated

  def out_and_grad(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    def loss(params):
      m = nnx.merge(graphdef, params, rest)
      return m(x, train=False).sum()
    return model(x, train=False), jax.grad(loss)(params)

  fast, fast_g = out_and_grad(model)
  model.conv1.conv_general_dilated = lax.conv_general_dilated
  model.conv2.conv_general_dilated = lax.conv_general_dilated
  slow, slow_g = out_and_grad(model)
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
  assert not np.allclose(fast, 0)
  for a, b in zip(jax.tree.leaves(fast_g), jax.tree.leaves(slow_g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# --- oneDNN gradients -------------------------------------------------------


@needs_onednn
@pytest.mark.parametrize('x_shape, w_shape, strides, padding', [
    ((16, 26, 26, 32), (3, 3, 32, 64), (1, 1), 'VALID'),       # keras conv2
    ((8, 28, 28, 1), (3, 3, 1, 32), (1, 1), 'VALID'),           # keras conv1
    ((8, 12, 12, 16), (4, 4, 16, 32), (2, 2), ((1, 1), (1, 1))),  # seed conv2
    ((3, 9, 7, 5), (3, 2, 5, 6), (1, 2), 'SAME'),     # asymmetric SAME pads
    ((2, 10, 9, 4), (3, 3, 4, 3), (2, 3), ((2, 0), (0, 3))),  # crops a row
    ((2, 12, 13, 3), (2, 2, 3, 4), (3, 3), 'VALID'),  # unused last rows
    ((1, 6, 6, 7), (1, 1, 7, 5), (1, 1), 'VALID'),    # 1x1
])
def test_onednn_values_and_gradients_equal_lax(x_shape, w_shape, strides,
                                               padding):
  r = np.random.default_rng(5)
  x = jnp.asarray(r.standard_normal(x_shape, np.float32))
  w = jnp.asarray(r.standard_normal(w_shape, np.float32) * 0.2)

  def ours(x, w):
    return conv.conv_general_dilated(x, w, strides, padding,
                                     dimension_numbers=NHWC)

  def ref(x, w):
    return lax.conv_general_dilated(x, w, strides, padding,
                                    dimension_numbers=NHWC)

  y, y_ref = jax.jit(ours)(x, w), jax.jit(ref)(x, w)
  assert y.shape == y_ref.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = jnp.asarray(r.standard_normal(y_ref.shape, np.float32))
  vjp = jax.jit(lambda f, x, w, g: jax.vjp(f, x, w)[1](g), static_argnums=0)
  assert 'kmnist_conv_bwd' in vjp.lower(ours, x, w, g).as_text()
  (dx, dw), (dx_ref, dw_ref) = vjp(ours, x, w, g), vjp(ref, x, w, g)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
  # A sum over batch and positions: float32 rounding grows with its length.
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-4,
                             atol=1e-5 * float(jnp.abs(dw_ref).max()))
  # Run to run, the same bits (training determinism rests on this).
  np.testing.assert_array_equal(vjp(ours, x, w, g)[1], dw)
  np.testing.assert_array_equal(jax.jit(ours)(x, w), y)


@needs_onednn
def test_onednn_under_grad_of_a_loss_and_eval_shape():
  x = jnp.ones((2, 8, 8, 3))
  w = jnp.full((3, 3, 3, 4), 0.1)
  f = lambda w: conv.conv_general_dilated(x, w, (1, 1), 'SAME',
                                          dimension_numbers=NHWC).sum()
  assert jax.eval_shape(f, w).shape == ()
  dw = jax.grad(f)(w)
  # Every weight sees the input's ones over the window positions it covers:
  # 8x8 positions for the centre tap, 7x8 for edge taps, 7x7 for corners.
  np.testing.assert_allclose(dw[1, 1], 2 * 64.0)
  np.testing.assert_allclose(dw[0, 1], 2 * 56.0)
  np.testing.assert_allclose(dw[0, 0], 2 * 49.0)


def test_onednn_switch_and_missing_library(monkeypatch):
  monkeypatch.setenv(onednn.ENV, '0')
  assert onednn._reason_unavailable() == f'{onednn.ENV}=0'
  monkeypatch.setenv(onednn.ENV, '1')
  monkeypatch.setattr(onednn, 'find_libdnnl', lambda: None)
  if jax.default_backend() == 'cpu':
    assert 'onednn-cpu-gomp is not installed' in onednn._reason_unavailable()


@pytest.mark.skipif(onednn.find_libdnnl() is None,
                    reason='onednn-cpu-gomp not installed')
def test_onednn_is_available_where_its_wheel_is_installed():
  """Where the wheel is installed (Linux x86-64), the build must work: a
  broken build would silently fall back to XLA's slower kernels."""
  assert onednn.available(), onednn._status()


@pytest.mark.skipif(onednn.find_libdnnl() is None,
                    reason='onednn-cpu-gomp not installed')
def test_build_is_cached_atomic_and_reports_compiler_errors(tmp_path,
                                                           monkeypatch):
  lib = onednn.find_libdnnl()
  path = onednn.build(lib, cache_root=str(tmp_path))
  mtime = os.stat(path).st_mtime_ns
  assert onednn.build(lib, cache_root=str(tmp_path)) == path  # cached
  assert os.stat(path).st_mtime_ns == mtime
  assert os.listdir(tmp_path) == [os.path.basename(path)]
  blocked = tmp_path / 'a_file'
  blocked.write_text('')  # the cache folder cannot be made below a file
  elsewhere = onednn.build(lib, cache_root=str(blocked / 'cache'))
  assert os.path.exists(elsewhere) and not elsewhere.startswith(str(tmp_path))
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
  with pytest.raises(RuntimeError, match='false failed'):
    onednn.build(lib, cache_root=str(tmp_path / 'other'))
  assert os.listdir(tmp_path / 'other') == []  # no half-written library
