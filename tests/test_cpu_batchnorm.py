"""kmnist_jax.cpu.batchnorm and ops.BatchNormReLU: flax's BatchNorm+ReLU,
values, gradients and running statistics, in two passes each way."""

import dataclasses
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kmnist_jax.cpu import batchnorm
from kmnist_jax.cpu import onednn
from kmnist_jax.models import ops

needs_kernels = pytest.mark.skipif(
    not onednn.available(), reason='the FFI library is not available here')
EPS = 1e-5


def _inputs(shape, seed=0, dtype=jnp.float32):
  r = np.random.default_rng(seed)
  c = shape[-1]
  x = jnp.asarray(r.standard_normal(shape, np.float32) * 2 + 0.5, dtype)
  w = jnp.asarray(r.standard_normal(shape, np.float32))
  scale = jnp.asarray(r.random(c, np.float32) + 0.5)
  bias = jnp.asarray(r.standard_normal(c, np.float32) * 0.5)
  return x, w, scale, bias


def _flax(x, scale, bias):
  """flax's BatchNorm (training) then ReLU, in float32: (y, mean, var)."""
  x = x.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.maximum(jnp.mean(x * x, axes) - mean * mean, 0.)
  y = (x - mean) * (jax.lax.rsqrt(var + EPS) * scale) + bias
  return jax.nn.relu(y), mean, var


def _loss(f, x, scale, bias, w):
  y = f(x, scale, bias)[0]
  return jnp.sum(y.astype(jnp.float32) * w)


def _fused(x, scale, bias):
  out = batchnorm.bn_relu(x, scale, bias, EPS)
  assert out is not None
  return out


@needs_kernels
@pytest.mark.parametrize('shape', [
    (16, 28, 28, 16),   # a ResNet's first stage
    (8, 7, 7, 64),
    (4, 5, 5, 20),      # channels not a multiple of the vector width
    (4, 5, 5, 48),      # tiles of 16 channels: 3
    (2, 6, 6, 32),      # 2
    (2, 6, 6, 147),     # 4 + 4 + 1, and 3 channels past the last tile
    (3, 3),             # a dense layer's (batch, features), fewer rows than chunks
    (2, 9, 9, 1),
])
def test_float32_values_gradients_and_statistics_equal_flax(shape):
  x, w, scale, bias = _inputs(shape)
  ours, ref = _fused(x, scale, bias), jax.jit(_flax)(x, scale, bias)
  for a, b in zip(ours, ref):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
  g = jax.grad(lambda *a: _loss(_fused, *a), argnums=(0, 1, 2))(
      x, scale, bias, w)
  gr = jax.jit(jax.grad(lambda *a: _loss(_flax, *a), argnums=(0, 1, 2)))(
      x, scale, bias, w)
  for a, b in zip(g, gr):
    assert a.shape == b.shape
    # Sums over up to 12,544 rows: float32 rounding grows with their count.
    scale_ = float(jnp.max(jnp.abs(b)))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale_)



def _add_reference(a, b, scale, bias, u, w):
  """s = a + b (rounded to a's type, as XLA's add), then _flax; the loss
  sum(y * w) + sum(s * u) reaches s both ways."""
  s = a + b
  y = _flax(s, scale, bias)[0]
  return jnp.sum(y * w) + jnp.sum(s.astype(jnp.float32) * u)


def _add_fused(a, b, scale, bias, u, w):
  s, y, _, _ = batchnorm.add_bn_relu(a, b, scale, bias, EPS, True)
  return (jnp.sum(y.astype(jnp.float32) * w)
          + jnp.sum(s.astype(jnp.float32) * u))


@needs_kernels
@pytest.mark.parametrize('shape, dtype', [
    ((8, 14, 14, 32), jnp.float32),
    ((4, 5, 5, 147), jnp.float32),     # tiles and a remainder
    ((8, 14, 14, 32), jnp.bfloat16),
    ((3, 7, 7, 20), jnp.bfloat16),
])
def test_add_then_bn_relu_equals_the_add_then_flax(shape, dtype):
  """add_bn_relu(a, b) = BatchNorm+ReLU of a + b with s = a + b as XLA's
  add rounds it; with_sum: s too, and the gradient reaching s directly is
  added to the one through the BatchNorm (a and b get the same)."""
  a, w, scale, bias = _inputs(shape, 0, dtype)
  b, u, _, _ = _inputs(shape, 1, dtype)
  s, y, mean, var = batchnorm.add_bn_relu(a, b, scale, bias, EPS, True)
  assert s.dtype == y.dtype == dtype and mean.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(s, np.float32),
                                np.asarray(a + b, np.float32))
  ry, rmean, rvar = _flax(a + b, scale, bias)
  np.testing.assert_allclose(mean, rmean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(var, rvar, rtol=1e-5)
  tol = 2.0**-8 if dtype == jnp.bfloat16 else 2e-5
  np.testing.assert_allclose(np.asarray(y, np.float32), ry, rtol=tol,
                             atol=tol)
  y2, mean2, _ = batchnorm.add_bn_relu(a, b, scale, bias, EPS, False)
  np.testing.assert_array_equal(np.asarray(y2, np.float32),
                                np.asarray(y, np.float32))
  np.testing.assert_array_equal(mean2, mean)
  g = jax.grad(_add_fused, argnums=(0, 1, 2, 3))(a, b, scale, bias, u, w)
  # Not jitted: XLA may keep a + b in float32 where it is converted back
  # (excess precision), and the ReLU's mask then moves at |x| ~ 1e-3.
  gr = jax.grad(_add_reference, argnums=(0, 1, 2, 3))(
      a, b, scale, bias, u, w)
  np.testing.assert_array_equal(np.asarray(g[0], np.float32),
                                np.asarray(g[1], np.float32))
  for x, r in zip(g, gr):
    assert x.dtype == r.dtype and x.shape == r.shape
    x, r = np.asarray(x, np.float32), np.asarray(r, np.float32)
    top = float(np.max(np.abs(r)))
    if dtype == jnp.bfloat16:  # One rounding where XLA's path has three.
      np.testing.assert_allclose(x, r, rtol=2.0**-6, atol=0.02 * top)
    else:
      np.testing.assert_allclose(x, r, rtol=1e-4, atol=1e-5 * top)
  # Without the sum's own cotangent: dx through the BatchNorm alone.
  f = lambda a, b: jnp.sum(batchnorm.add_bn_relu(
      a, b, scale, bias, EPS, False)[0].astype(jnp.float32) * w)
  fr = lambda a, b: jnp.sum(_flax(a + b, scale, bias)[0] * w)
  da, db = jax.grad(f, argnums=(0, 1))(a, b)
  ra = jax.grad(fr)(a, b)
  np.testing.assert_array_equal(np.asarray(da), np.asarray(db))
  top = float(np.max(np.abs(np.asarray(ra, np.float32))))
  np.testing.assert_allclose(np.asarray(da, np.float32),
                             np.asarray(ra, np.float32),
                             rtol=2.0**-6, atol=0.02 * top)


def test_add_bn_relu_stands_aside_for_mismatched_operands():
  a = jnp.ones((2, 3, 3, 4))
  assert batchnorm.add_bn_relu(a, jnp.ones((2, 3, 3, 4), jnp.bfloat16),
                               jnp.ones(4), jnp.zeros(4), EPS, True) is None
  assert batchnorm.add_bn_relu(a, jnp.ones((1, 3, 3, 4)), jnp.ones(4),
                               jnp.zeros(4), EPS, False) is None

@needs_kernels
def test_bfloat16_is_read_and_written_as_bfloat16_and_rounds_once():
  """bfloat16 activations: y and dx are the float32 results of the same
  bfloat16 inputs, rounded once to bfloat16 (half an ulp: 2^-9 relative)."""
  x, w, scale, bias = _inputs((8, 14, 14, 32), dtype=jnp.bfloat16)
  y, mean, var = _fused(x, scale, bias)
  assert y.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
  ry, rmean, rvar = _flax(x, scale, bias)
  np.testing.assert_allclose(mean, rmean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(var, rvar, rtol=1e-5)
  err = np.abs(np.asarray(y, np.float32) - ry)
  assert np.all(err <= np.abs(ry) * 2.0**-8 + 1e-6)
  dy = w.astype(jnp.bfloat16)
  dx = jax.vjp(lambda x: _fused(x, scale, bias)[0], x)[1](dy)[0]
  rdx = jax.vjp(lambda x: _flax(x, scale, bias)[0],
                x.astype(jnp.float32))[1](dy.astype(jnp.float32))[0]
  assert dx.dtype == jnp.bfloat16
  err = np.abs(np.asarray(dx, np.float32) - rdx)
  assert np.all(err <= np.abs(rdx) * 2.0**-8 + 1e-4 * np.max(np.abs(rdx)))


def _checksum_script():
  return (
      'import jax, jax.numpy as jnp, numpy as np\n'
      'from kmnist_jax.cpu import batchnorm\n'
      'r = np.random.default_rng(1)\n'
      'x = jnp.asarray(r.standard_normal((32, 28, 28, 16), np.float32))\n'
      'w = jnp.asarray(r.standard_normal((32, 28, 28, 16), np.float32))\n'
      's, b = jnp.ones(16), jnp.zeros(16)\n'
      'f = lambda x, s, b: jnp.sum(batchnorm.bn_relu(x, s, b, 1e-5)[0] * w)\n'
      'out = jax.grad(f, argnums=(0, 1, 2))(x, s, b)\n'
      'print(sum(float(jnp.sum(jnp.abs(o).astype(jnp.float64)))'
      ' for o in out).hex(),'
      ' np.asarray(out[0]).tobytes().hex()[:64],'
      ' np.asarray(out[1]).tobytes().hex())\n')


@needs_kernels
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='one CPU here')
def test_results_do_not_depend_on_the_number_of_threads():
  """The rows are cut into fixed chunks summed in order: on one CPU (XLA's
  pool has one thread) or on every CPU, the same bits (a resumed run on
  another machine replays the same sums)."""
  outs = []
  for cpus in ({min(os.sched_getaffinity(0))}, os.sched_getaffinity(0)):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    proc = subprocess.run([sys.executable, '-c', _checksum_script()],
                          env=env, capture_output=True, text=True,
                          timeout=300, check=False,
                          preexec_fn=lambda cpus=cpus: os.sched_setaffinity(
                              0, cpus))
    assert proc.returncode == 0, proc.stderr[-2000:]
    outs.append(proc.stdout.strip())
  assert outs[0] == outs[1] and len(outs[0].split()) == 3


@needs_kernels
@pytest.mark.parametrize('args, outs, message', [
    ([(2, 4, 4, 8), (7,), (8,)], [(2, 4, 4, 8), (8,), (8,)],
     r'scale must have shape \(8,\)'),
    ([(2, 4, 4, 8), (8,), (8,)], [(2, 4, 4, 9), (8,), (8,)],
     "y must have x's shape"),
    ([(2, 4, 4, 8), (8,), (8,)], [(2, 4, 4, 8), (8,), (8, 1)],
     r'var must have shape \(8,\)'),
])
def test_forward_handler_refuses_inconsistent_buffers(args, outs, message):
  """An error naming the buffer, never a read or write past one."""
  call = jax.ffi.ffi_call(batchnorm.FWD, [
      jax.ShapeDtypeStruct(s, jnp.float32) for s in outs])
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match='INVALID_ARGUMENT: kmnist_bn_relu: ' + message):
    jax.block_until_ready(call(*[jnp.ones(s, jnp.float32) for s in args],
                               eps=np.float32(EPS)))


@needs_kernels
def test_backward_handler_refuses_a_mismatched_gradient():
  f32 = lambda *s: jnp.ones(s, jnp.float32)
  call = jax.ffi.ffi_call(batchnorm.BWD, [
      jax.ShapeDtypeStruct((2, 4, 4, 8), jnp.float32),
      jax.ShapeDtypeStruct((8,), jnp.float32),
      jax.ShapeDtypeStruct((8,), jnp.float32)])
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match="kmnist_bn_relu: dy must have x's element type"):
    jax.block_until_ready(call(
        f32(2, 4, 4, 8), f32(2, 4, 4, 8).astype(jnp.bfloat16), f32(8),
        f32(8), f32(8), f32(8), eps=np.float32(EPS)))


def _layers(c, dtype=None):
  kw = dict(momentum=0.9, epsilon=EPS, dtype=dtype, rngs=nnx.Rngs(0))
  with ops.building(ops.FAST):
    fast = ops.batch_norm_relu(c, **kw)
  with ops.building(ops.PLAIN):
    plain = ops.batch_norm_relu(c, **kw)
  return fast, plain


@needs_kernels
def test_layer_trains_and_evaluates_as_flax_batchnorm_then_relu():
  fast, plain = _layers(16)
  assert fast.bn_relu is batchnorm.bn_relu and plain.bn_relu is None
  # The same variables as nnx.BatchNorm: checkpoints load either way.
  ref = nnx.BatchNorm(16, rngs=nnx.Rngs(0))
  assert (jax.tree.structure(nnx.state(fast)) ==
          jax.tree.structure(nnx.state(ref)))
  x, w, scale, bias = _inputs((8, 6, 6, 16))
  for layer in (fast, plain):
    layer.scale[...] = scale
    layer.bias[...] = bias

  def train(layer, x):
    graphdef, state = nnx.split(layer)

    @jax.jit
    def step(state, x):
      def loss(state):
        m = nnx.merge(graphdef, state)
        y = m(x, use_running_average=False)
        return jnp.sum(y * w), nnx.state(m)
      (value, new), grads = jax.value_and_grad(loss, has_aux=True)(state)
      return value, new, grads
    return step(state, x)

  (vf, sf, gf), (vp, sp, gp) = train(fast, x), train(plain, x)
  np.testing.assert_allclose(vf, vp, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(sf), jax.tree.leaves(sp)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gp)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # The running statistics moved: 0.9 * (0, 1) + 0.1 * the batch's.
  _, mean, var = _flax(x, scale, bias)
  np.testing.assert_allclose(sf['mean'][...], 0.1 * mean, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(sf['var'][...], 0.9 + 0.1 * var, rtol=1e-5)
  # Evaluation is flax's, with the running statistics.
  nnx.update(fast, sf)
  y = fast(x, use_running_average=True)
  expect = jax.nn.relu((x - 0.1 * mean) * jax.lax.rsqrt(0.9 + 0.1 * var + EPS)
                       * scale + bias)
  np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)


def test_layer_runs_flax_where_the_kernels_do_not_apply(monkeypatch):
  """Several devices, another backend or no library: flax's BatchNorm and
  ReLU, the same numbers as PLAIN's layer."""
  monkeypatch.setattr(onednn, 'available', lambda: False)
  assert not batchnorm.applies(jnp.ones((2, 3)))
  assert batchnorm.bn_relu(jnp.ones((2, 3)), jnp.ones(3), jnp.zeros(3),
                           EPS) is None
  fast, plain = _layers(4)
  x = _inputs((3, 5, 5, 4))[0]
  np.testing.assert_array_equal(fast(x, use_running_average=False),
                                plain(x, use_running_average=False))
  np.testing.assert_array_equal(fast.mean[...], plain.mean[...])


@needs_kernels
@pytest.mark.parametrize('column', [
    [1e30, -1e30, 2e30, 0.],   # E[x]^2 overflows float32: flax's var is NaN
    [np.inf, 1., 2., 3.],
    [np.nan, 1., 2., 3.],
])
def test_overflow_and_nan_reach_the_output_as_flax(column):
  """A diverging step must show as NaN (the trainer stops on a non-finite
  loss), not be clipped to a finite output."""
  x = jnp.asarray(np.array(column, np.float32)[:, None] *
                  np.ones((4, 16), np.float32))
  y, mean, var = _fused(x, jnp.ones(16), jnp.zeros(16))
  ry, rmean, rvar = _flax(x, jnp.ones(16), jnp.zeros(16))
  assert np.all(np.isnan(ry)) and np.all(np.isnan(y))
  np.testing.assert_array_equal(np.isnan(var), np.isnan(rvar))
  np.testing.assert_array_equal(mean, rmean)


@needs_kernels
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_resnet_fuses_each_residual_add_into_the_next_batchnorm(dtype):
  """resnet_preact20 in training: its 9 residual adds are the add kernels'
  (3 blocks feed a shortcut from the pre-activation, 6 the identity, whose
  gradients meet in the kernel), and the loss and gradients equal those of
  the same ops without them (XLA's adds, then the BatchNorm kernels): in
  float32 to rounding, in bfloat16 to the roundings the fused kernels skip
  (s + ds is rounded once, not twice)."""
  from kmnist_jax.models import factory  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(0).random((4, 28, 28, 1)),
                  jnp.float32)

  def loss_and_grads(o):
    model = factory.create_model('resnet_preact20', 10, seed=0, dtype=dtype,
                                 ops=o)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, r):
      r = jax.tree.map(lambda v: v, r)  # Variables of this trace level.
      m = nnx.merge(graphdef, p, r)
      return jnp.sum(m(x, train=True).astype(jnp.float32) ** 2)

    return loss, (params, rest)

  loss, args = loss_and_grads(ops.FAST)
  jaxpr = str(jax.make_jaxpr(jax.grad(loss))(*args))
  calls = lambda name: len(re.findall(rf'\b{name}\b', jaxpr))
  assert calls(batchnorm.ADD_FWD) == 9
  assert calls(batchnorm.BWD_ADD) == 6
  assert calls(batchnorm.FWD) == 10  # bn2 of each block and the first bn1
  assert calls(batchnorm.BWD) == 13  # and the 3 adds without a shortcut
  value, grads = jax.jit(jax.value_and_grad(loss))(*args)
  unfused = dataclasses.replace(ops.FAST, add_bn_relu=None)
  loss_u, args_u = loss_and_grads(unfused)
  assert not re.search(batchnorm.ADD_FWD,
                       str(jax.make_jaxpr(jax.grad(loss_u))(*args_u)))
  value_u, grads_u = jax.jit(jax.value_and_grad(loss_u))(*args_u)
  if dtype == jnp.float32:
    np.testing.assert_allclose(value, value_u, rtol=1e-6)
  else:  # The sums are the same bfloat16 values: the forward pass is too.
    np.testing.assert_array_equal(value, value_u)
  tol = 5e-2 if dtype == jnp.bfloat16 else 1e-4
  for g, gu in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_u)):
    scale_ = float(jnp.max(jnp.abs(gu))) + 1e-12
    np.testing.assert_allclose(np.asarray(g, np.float32) / scale_,
                               np.asarray(gu, np.float32) / scale_, atol=tol)
