"""kmnist_jax.cpu.conv: values and gradients equal lax's; where it applies."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from kmnist_jax.config import base as configlib
from kmnist_jax import cpu
from kmnist_jax.models import factory as models
from kmnist_jax.models import ops
from kmnist_jax.train import optim
from kmnist_jax.train import steps
from kmnist_jax.train import state as train_state
from kmnist_jax.core import distributed
from kmnist_jax.cpu import conv
from kmnist_jax.cpu import onednn

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
    dict(dtype=jnp.float16),
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
  graphdef, state = train_state.init_state(config, 10, tx)
  step = steps.make_train_step(graphdef, tx, config, 10, 8, distributed.make_mesh())
  images = jnp.zeros((16, 28, 28), jnp.uint8)
  labels = jnp.arange(16, dtype=jnp.int32) % 10
  return step.lower(state, images, labels, jnp.arange(16), 0).compile(
  ).as_text()


def _cpu_with(monkeypatch, avx512: bool):
  """As on a CPU with (or without) AVX-512: where training's forward
  passes are oneDNN's (`conv.onednn_forward`)."""
  from kmnist_jax.cpu import features
  flags = frozenset({'avx512f'} if avx512 else {'avx2'})
  monkeypatch.setattr(features, 'detect',
                      lambda: features.CpuFeatures('test', flags))


@needs_onednn
@pytest.mark.parametrize('avx512', [False, True])
def test_seed_cnn_train_step_takes_its_gradients_from_onednn(monkeypatch,
                                                             avx512):
  """conv1's forward pass is the 25-tap sum; conv2's is XLA's, or oneDNN's
  with AVX-512; both convolutions' gradients come from oneDNN; conv1's input
  gradient is dropped."""
  _cpu_with(monkeypatch, avx512)
  hlo = _seed_cnn_step_hlo()
  convs = re.findall(r'fused: convolution|\} convolution\(', hlo)
  assert len(convs) == (0 if avx512 else 1), convs  # conv2's forward pass
  tap_fusions = [c for c in re.split(r'\n(?=%\S+ \()', hlo)
                 if c.count(' slice(') >= 25]
  assert len(tap_fusions) == 1
  calls = re.findall(r'custom_call_target="(kmnist_conv_\w+)"', hlo)
  # conv1 (one input channel): weight gradient only; conv2: both at once.
  assert sorted(calls) == sorted([onednn.BWD_WEIGHTS, onednn.BWD] +
                                 [onednn.FWD] * avx512), calls


@needs_onednn
def test_eval_forward_pass_is_xla_only():
  config = configlib.load_config_file('configs/keras_cnn.py', 'proxy')
  tx = optim.create_optimizer(config, 10)
  graphdef, state = train_state.init_state(config, 10, tx)
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
  assert model.conv1.conv_general_dilated is cpu.conv_general_dilated
  assert model.conv2.conv_general_dilated is conv.conv_general_dilated

  def out_and_grad(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    def loss(params):
      m = nnx.merge(graphdef, params, rest)
      return m(x, train=False).sum()
    return model(x, train=False), jax.grad(loss)(params)

  fast, fast_g = out_and_grad(model)
  plain = models.create_model(name, 10, seed=4, ops=ops.PLAIN)
  assert plain.conv1.conv_general_dilated is lax.conv_general_dilated
  slow, slow_g = out_and_grad(plain)
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
  assert not np.allclose(fast, 0)
  for a, b in zip(jax.tree.leaves(fast_g), jax.tree.leaves(slow_g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _convs(model):
  return [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)]


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_the_ops_are_chosen_once_when_the_model_is_built(name):
  """Every convolution and dropout of every network is the `ops` that
  `create_model` was given: the one seam to the speed code."""
  for chosen in (ops.FAST, ops.PLAIN):
    model = nnx.eval_shape(
        lambda c=chosen: models.create_model(name, 10, ops=c))
    convs = _convs(model)
    assert convs and all(
        c.conv_general_dilated is chosen.conv_general_dilated for c in convs)
    dropouts = [m.dropout for _, m in nnx.iter_modules(model)
                if callable(getattr(m, 'dropout', None))]
    assert all(d is chosen.dropout for d in dropouts)
  assert ops.current() is ops.FAST  # Outside a build: the default.


@pytest.mark.parametrize('name, kwargs, train', [
    ('resnet_preact20', {}, True),
    # 64 to 512 channels. In training mode, BatchNorm over a batch of 4 makes
    # its 18 layers ill-conditioned: lax's own float32 gradients are 2% off
    # float64's there, and ours just as far (measured), so compare in eval
    # mode.
    ('preact_resnet18', {}, False),
    # Shake-shake's block families (two paths, the shifted 1x1 skip), small.
    ('shake_shake', dict(depth=8, base=8), True),
])
def test_resnets_equal_lax_convolutions(name, kwargs, train):
  """Every ResNet convolution (3x3 and 1x1, strides 1 and 2) goes through
  the fast convolution; the network's output and every parameter gradient
  equal those with lax's convolutions, gradients from oneDNN where it is
  available."""
  from kmnist_jax.models import resnets  # pylint: disable=g-import-not-at-top
  x = jax.random.uniform(jax.random.PRNGKey(3), (4, 28, 28, 1))
  if name == 'shake_shake':
    model = resnets.ShakeShake(10, rngs=nnx.Rngs(params=4), **kwargs)
  else:
    model = models.create_model(name, 10, seed=4)
  convs = _convs(model)
  kinds = {(c.kernel_size, c.strides) for c in convs}
  assert {((3, 3), 1), ((3, 3), 2)} <= kinds, kinds
  assert {((1, 1), 1), ((1, 1), 2)} & kinds, kinds
  assert all(c.conv_general_dilated is cpu.conv_general_dilated
             for c in convs)
  key = jax.random.PRNGKey(5)

  def out_and_grad(model, dtype=jnp.float32):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cast = lambda a: (a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                      else a)
    params, rest, inputs = jax.tree.map(cast, (params, rest, x))

    def loss(params, rest):
      # Fresh Variables at this trace level, so BatchNorm may update them.
      m = nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))
      out = m(inputs, train=train, dropout_key=key)
      return jnp.vdot(out, jnp.arange(out.size).reshape(out.shape) / out.size
                      ), out
    (_, out), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params,
                                                                  rest)
    return np.asarray(out, np.float64), [np.asarray(l, np.float64)
                                         for l in jax.tree.leaves(g)]

  fast, fast_g = out_and_grad(model)
  for c in convs:
    c.conv_general_dilated = lax.conv_general_dilated
  slow, slow_g = out_and_grad(model)
  with jax.enable_x64(True):
    exact, exact_g = out_and_grad(model, jnp.float64)
  assert not np.allclose(fast, 0)
  # The float64 network is the reference. Ours must be as close to it as
  # lax's own float32 convolutions are, leaf by leaf: in training mode a
  # batch of 4 makes BatchNorm ill-conditioned, and there lax's float32
  # gradients are up to 6% of a leaf's scale off float64 on an Intel AMX CPU
  # (measured), ours as far or nearer. The floor is float32 rounding through
  # the network's depth: eps32 * (layers + 1) * sqrt(terms summed), 4.4e-4
  # of scale for resnet_preact20's 21 convolutions.
  depth = len(convs) + 1
  floor = np.finfo(np.float32).eps * depth * np.sqrt(4 * 28 * 28 * 9)
  out_scale = np.abs(exact).max()
  assert np.abs(fast - exact).max() <= max(
      2 * np.abs(slow - exact).max(), floor * out_scale)
  for a, b, ref in zip(fast_g, slow_g, exact_g, strict=True):
    scale = np.abs(ref).max() or 1.0
    ours, lax_err = np.abs(a - ref).max(), np.abs(b - ref).max()
    assert ours <= max(2 * lax_err, floor * scale), (ours / scale,
                                                    lax_err / scale, ref.shape)


@needs_onednn
@pytest.mark.parametrize('avx512', [False, True])
def test_resnet_train_step_takes_its_gradients_from_onednn(monkeypatch,
                                                           avx512):
  """resnet_preact20's train step: all 21 convolutions' gradients from
  oneDNN (the stem, one input channel: its weight gradient only); with
  AVX-512 the 20 others' forward passes too."""
  _cpu_with(monkeypatch, avx512)
  config = configlib.load_config_file('configs/resnet_preact20_cutout.py',
                                      'proxy')
  tx = optim.create_optimizer(config, 10)
  graphdef, state = train_state.init_state(config, 10, tx)
  step = steps.make_train_step(graphdef, tx, config, 10, 8,
                               distributed.make_mesh())
  images = jnp.zeros((16, 28, 28), jnp.uint8)
  labels = jnp.zeros((16,), jnp.int32)
  hlo = step.lower(state, images, labels, jnp.arange(16), 0).compile(
  ).as_text()
  calls = re.findall(r'custom_call_target="(kmnist_conv_\w+)"', hlo)
  assert sorted(calls) == sorted([onednn.BWD_WEIGHTS] + [onednn.BWD] * 20 +
                                 [onednn.FWD] * (20 * avx512)), calls


def test_on_a_gpu_backend_nothing_of_the_cpu_code_engages(monkeypatch):
  """With the backend faked to a GPU: lax's own convolution (the same jaxpr,
  value and gradient), and oneDNN is neither built nor loaded."""

  def refuse(*args, **kwargs):
    raise AssertionError(f'CPU machinery engaged: {args}')

  monkeypatch.delenv(onednn.ENV, raising=False)  # The backend decides.
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(onednn, 'build', refuse)
  monkeypatch.setattr(onednn.subprocess, 'run', refuse)
  monkeypatch.setattr(onednn.ctypes, 'CDLL', refuse)
  # A fresh decision: the process's cached one was made on the CPU.
  monkeypatch.setattr(onednn, '_status',
                      functools.cache(onednn._status.__wrapped__))  # pylint: disable=protected-access
  assert not onednn.available()
  assert onednn._status() == 'backend is gpu, not cpu'  # pylint: disable=protected-access
  for cin, padding in ((1, 'VALID'), (3, ((1, 1), (1, 1)))):
    x, k = _inputs(2, 10, 10, 3, 3, 4)
    x = jnp.tile(x, (1, 1, 1, cin))
    k = jnp.tile(k, (1, 1, cin, 1))

    def loss(conv_fn, x, k):
      return jnp.sum(conv_fn(x, k, (1, 1), padding,
                             dimension_numbers=NHWC) ** 2)

    # A new function per trace: jax caches traces by function.
    jaxpr = lambda f: str(jax.make_jaxpr(jax.grad(
        lambda x, k: loss(f, x, k), argnums=(0, 1)))(x, k))
    ours = jaxpr(conv.conv_general_dilated)
    assert ours == jaxpr(lax.conv_general_dilated)
    assert 'custom_vjp' not in ours and 'optimization_barrier' not in ours


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='CPU fast path')
@pytest.mark.parametrize('with_onednn', [True, False])
def test_bf16_passes_round_the_operands_only_where_asked(with_onednn,
                                                         monkeypatch):
  """jax.default_matmul_precision('bfloat16') rounds a multi-channel
  convolution's operands to bfloat16 (oneDNN's kernels, or XLA's float32
  convolution of the rounded values without oneDNN: the same numbers); a
  single-channel one (the image) and every convolution outside the scope
  stay float32."""
  if not with_onednn:
    monkeypatch.setattr(onednn, 'available', lambda: False)
  elif not onednn.available():
    pytest.skip('oneDNN FFI not available here')
  r = np.random.default_rng(3)
  x = jnp.asarray(r.standard_normal((2, 10, 10, 8), np.float32))
  w = jnp.asarray(r.standard_normal((3, 3, 8, 4), np.float32))
  f = jax.jit(lambda x, w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC))
  rnd = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
  exact = lambda x, w: lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC,
      precision=lax.Precision.HIGHEST)
  with jax.default_matmul_precision('bfloat16'):
    y = f(x, w)
    y1 = f(x[..., :1], w[:, :, :1])
    hlo = f.lower(x, w).as_text()
  assert ('custom_call' in hlo) == with_onednn
  np.testing.assert_allclose(y, exact(rnd(x), rnd(w)), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(y1, exact(x[..., :1], w[:, :, :1]), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(f(x, w), exact(x, w), rtol=1e-5, atol=1e-4)
  assert float(jnp.abs(y - exact(x, w)).max()) > 1e-3


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='CPU fast path')
@pytest.mark.parametrize('with_onednn', [True, False])
@pytest.mark.parametrize('cin, strides', [(8, (1, 1)), (6, (2, 2)), (1, (1, 1))])
def test_bfloat16_operands_sum_in_float32_and_give_bfloat16(
    with_onednn, cin, strides, monkeypatch):
  """bfloat16 operands (config.compute_dtype='bfloat16', as nnx.Conv casts
  them) run oneDNN's bfloat16 kernels (XLA's float32 convolution of the
  same values without oneDNN): float32 sums rounded once to a bfloat16
  result, and bfloat16 gradients, as PyTorch's bfloat16 autocast; a
  single-channel image too with oneDNN (its weight gradient alone), the
  float32 path (the sum of shifted copies) without. Never XLA's bfloat16
  convolution (2.7x slower in resnet_preact20's train step). A float32
  result asked for (preferred_element_type) is lax's."""
  if not with_onednn:
    monkeypatch.setattr(onednn, 'available', lambda: False)
  elif not onednn.available():
    pytest.skip('oneDNN FFI not available here')
  r = np.random.default_rng(4)
  bf = jnp.bfloat16
  x = jnp.asarray(r.standard_normal((2, 10, 10, cin), np.float32), bf)
  w = jnp.asarray(r.standard_normal((3, 3, cin, 4), np.float32), bf)
  g = jnp.asarray(r.standard_normal((2, 5, 5, 4) if strides == (2, 2)
                                    else (2, 10, 10, 4), np.float32), bf)
  f = lambda x, w: conv.conv_general_dilated(
      x, w, strides, 'SAME', dimension_numbers=NHWC)
  exact = lambda x, w: lax.conv_general_dilated(
      x.astype(jnp.float32), w.astype(jnp.float32), strides, 'SAME',
      dimension_numbers=NHWC, precision=lax.Precision.HIGHEST)
  y, vjp = jax.vjp(jax.jit(f), x, w)
  dx, dw = vjp(g)
  ref, ref_vjp = jax.vjp(exact, x, w)
  rdx, rdw = ref_vjp(g.astype(jnp.float32))
  assert (y.dtype, dx.dtype, dw.dtype) == (bf, bf, bf)
  # One rounding to bfloat16 (8 bits): within 2**-8 of the float32 sums.
  for ours, want in ((y, ref), (dx, rdx), (dw, rdw)):
    np.testing.assert_allclose(np.asarray(ours, np.float32), want,
                               rtol=2 ** -8, atol=1e-5)
  hlo = jax.jit(f).lower(x, w).as_text()
  assert ('custom_call' in hlo) == with_onednn
  if with_onednn and cin == 1:  # An image's gradient is never computed.
    dw_only = jax.jit(lambda x, w, g: jax.vjp(f, x, w)[1](g)[1])
    compiled = dw_only.lower(x, w, g).compile().as_text()
    assert onednn.BWD_WEIGHTS in compiled
    assert onednn.BWD_DATA not in compiled and onednn.BWD + '"' not in compiled
  convolutions = [l for l in hlo.splitlines() if 'convolution' in l]
  assert not any('bf16' in l for l in convolutions)  # Never XLA's bfloat16.
  wide = conv.conv_general_dilated(x, w, strides, 'SAME',
                                   dimension_numbers=NHWC,
                                   preferred_element_type=jnp.float32)
  assert wide.dtype == jnp.float32
  np.testing.assert_array_equal(wide, lax.conv_general_dilated(
      x, w, strides, 'SAME', dimension_numbers=NHWC,
      preferred_element_type=jnp.float32))


@needs_onednn
@pytest.mark.parametrize('avx512, channels, expect', [
    (True, 8, True),
    (False, 8, False),    # XLA's forward pass without AVX-512
    (True, 1, False),     # the image: the sum of shifted copies
])
def test_training_forward_pass_is_onednns_only_with_avx512(
    monkeypatch, avx512, channels, expect):
  _cpu_with(monkeypatch, avx512)
  x = jnp.ones((2, 6, 6, channels), jnp.float32)
  k = jnp.ones((3, 3, channels, 4), jnp.float32)
  f = lambda x, k: conv.conv_general_dilated(x, k, (1, 1), 'SAME',
                                             dimension_numbers=NHWC)
  train = str(jax.make_jaxpr(lambda x, k: jax.vjp(f, x, k))(x, k))
  evaluation = str(jax.make_jaxpr(f)(x, k))
  assert (onednn.FWD in train) == expect
  assert onednn.FWD not in evaluation
  y, vjp = jax.vjp(f, x, k)
  np.testing.assert_allclose(y, lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=NHWC), rtol=1e-6)
