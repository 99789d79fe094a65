"""kmnist_jax.cpu.onednn: oneDNN's convolutions, its build, its cache, its
checks."""

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kmnist_jax.cpu import conv
from kmnist_jax.cpu import onednn

NHWC = ('NHWC', 'HWIO', 'NHWC')

needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason='oneDNN FFI not available here')


@needs_onednn
@pytest.mark.parametrize('x_shape, w_shape, strides, padding', [
    ((16, 26, 26, 32), (3, 3, 32, 64), (1, 1), 'VALID'),       # keras conv2
    ((8, 28, 28, 1), (3, 3, 1, 32), (1, 1), 'VALID'),           # keras conv1
    ((8, 12, 12, 16), (4, 4, 16, 32), (2, 2), ((1, 1), (1, 1))),  # seed conv2
    ((3, 9, 7, 5), (3, 2, 5, 6), (1, 2), 'SAME'),     # asymmetric SAME pads
    ((2, 10, 9, 4), (3, 3, 4, 3), (2, 3), ((2, 0), (0, 3))),  # crops a row
    ((2, 12, 13, 3), (2, 2, 3, 4), (3, 3), 'VALID'),  # unused last rows
    ((1, 6, 6, 7), (1, 1, 7, 5), (1, 1), 'VALID'),    # 1x1
    # The ResNets' kernel families (nnx.Conv's explicit pads):
    ((4, 28, 28, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1))),  # 3x3 s1
    ((4, 28, 28, 16), (3, 3, 16, 32), (2, 2), ((1, 1), (1, 1))),  # 3x3 s2
    ((4, 28, 28, 16), (1, 1, 16, 32), (2, 2), ((0, 0), (0, 0))),  # 1x1 s2
    ((2, 14, 14, 96), (1, 1, 96, 96), (1, 1), ((0, 0), (0, 0))),  # 1x1 s1
    ((2, 7, 7, 256), (3, 3, 256, 512), (2, 2), ((1, 1), (1, 1))),  # to 512
    ((2, 4, 4, 512), (3, 3, 512, 512), (1, 1), ((1, 1), (1, 1))),  # 512
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

  # Float32 rounding grows with the length of each sum: kh*kw*cin terms for
  # the output, kh*kw*cout for the input gradient (4608 at 512 channels).
  kh, kw, cin, cout = w_shape
  tol_y, tol_dx = (1e-5 * max(1.0, n / 1000) for n in (kh * kw * cin,
                                                       kh * kw * cout))
  y, y_ref = jax.jit(ours)(x, w), jax.jit(ref)(x, w)
  assert y.shape == y_ref.shape and y.dtype == jnp.float32
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=tol_y)
  g = jnp.asarray(r.standard_normal(y_ref.shape, np.float32))
  vjp = jax.jit(lambda f, x, w, g: jax.vjp(f, x, w)[1](g), static_argnums=0)
  assert 'kmnist_conv_bwd' in vjp.lower(ours, x, w, g).as_text()
  (dx, dw), (dx_ref, dw_ref) = vjp(ours, x, w, g), vjp(ref, x, w, g)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=tol_dx)
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
@pytest.mark.skipif(not onednn.enabled_by_env(),
                    reason=f'switched off by {onednn.ENV}=0')
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
  assert sorted(os.listdir(tmp_path)) == [os.path.basename(path),
                                         os.path.basename(path) + '.sha256']
  blocked = tmp_path / 'a_file'
  blocked.write_text('')  # the cache folder cannot be made below a file
  elsewhere = onednn.build(lib, cache_root=str(blocked / 'cache'))
  assert os.path.exists(elsewhere) and not elsewhere.startswith(str(tmp_path))
  monkeypatch.setenv('CXX', 'false')  # a "compiler" that always fails
  with pytest.raises(RuntimeError, match='false failed'):
    onednn.build(lib, cache_root=str(tmp_path / 'other'))
  assert os.listdir(tmp_path / 'other') == []  # no half-written library


# --- The cached library: private, this user's own ---------------------------

_FAKE_CXX = '''#!/bin/sh
# Writes "built" to the file after -o: a stand-in for the C++ compiler.
while [ "$#" -gt 0 ]; do
  if [ "$1" = "-o" ]; then printf built > "$2"; fi
  shift
done
'''


@pytest.fixture
def fake_cxx(tmp_path, monkeypatch):
  """A fake compiler, so that these tests need neither g++ nor oneDNN."""
  cxx = tmp_path / 'fake_cxx'
  cxx.write_text(_FAKE_CXX)
  cxx.chmod(0o700)
  monkeypatch.setenv('CXX', str(cxx))
  return '/nowhere/libdnnl.so.3'


def _mode(path):
  return os.stat(path).st_mode & 0o777


def test_cache_folder_and_library_are_created_private(tmp_path, fake_cxx):
  root = tmp_path / 'cache' / 'onednn'
  path = onednn.build(fake_cxx, cache_root=str(root))
  assert os.path.dirname(path) == str(root)
  assert _mode(root) == 0o700 and _mode(path) == 0o700
  assert open(path).read() == 'built'
  assert sorted(os.listdir(root)) == [os.path.basename(path),
                                      os.path.basename(path) + '.sha256']


@pytest.mark.parametrize('plant', ['writable_by_others', 'symlink'])
def test_a_library_others_could_have_written_is_rebuilt(tmp_path, fake_cxx,
                                                        plant):
  root = tmp_path / 'onednn'
  path = onednn.build(fake_cxx, cache_root=str(root))
  os.remove(path)
  if plant == 'symlink':
    (tmp_path / 'planted.so').write_text('planted')
    os.symlink(tmp_path / 'planted.so', path)
  else:
    with open(path, 'w') as f:
      f.write('planted')
    os.chmod(path, 0o666)
  assert onednn.build(fake_cxx, cache_root=str(root)) == path
  assert not os.path.islink(path) and open(path).read() == 'built'
  assert _mode(path) == 0o700
  assert (tmp_path / 'planted.so').read_text() == 'planted' if (
      plant == 'symlink') else True


def test_a_cache_folder_others_can_write_is_not_used(tmp_path, fake_cxx):
  shared = tmp_path / 'shared'
  shared.mkdir()
  shared.chmod(0o777)
  path = onednn.build(fake_cxx, cache_root=str(shared))
  assert not path.startswith(str(shared)) and os.listdir(shared) == []
  assert _mode(os.path.dirname(path)) == 0o700 and _mode(path) == 0o700
  assert open(path).read() == 'built'


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty',
                                    'no_record', 'record_garbage'])
def test_a_damaged_cached_library_is_rebuilt_with_one_warning(
    tmp_path, fake_cxx, damage, caplog):
  """A library cut short by a power cut would crash the loading process
  (a bus error): its size and digest are checked against the record written
  after the build, and it is rebuilt."""
  root = tmp_path / 'onednn'
  path = onednn.build(fake_cxx, cache_root=str(root))
  record = path + '.sha256'
  assert open(record).read() == ('5 ' + hashlib.sha256(b'built').hexdigest()
                                 + '\n')
  if damage == 'truncated':
    with open(path, 'r+b') as f:
      f.truncate(2)
  elif damage == 'garbage':
    with open(path, 'wb') as f:
      f.write(b'\0' * 5)
  elif damage == 'empty':
    open(path, 'wb').close()
  elif damage == 'no_record':
    os.remove(record)
  else:
    with open(record, 'w') as f:
      f.write('nonsense')
  with caplog.at_level('WARNING'):
    assert onednn.build(fake_cxx, cache_root=str(root)) == path
  assert open(path).read() == 'built' and _mode(path) == 0o700
  assert open(record).read().startswith('5 ')
  warned = [r.getMessage() for r in caplog.records if 'rebuilding' in
            r.getMessage()]
  assert len(warned) == (damage in ('truncated', 'garbage', 'empty',
                                    'record_garbage')), warned


# --- The handlers check their buffers ---------------------------------------

_ATTRS = dict(stride_h=np.int64(1), stride_w=np.int64(1), pad_top=np.int64(0),
              pad_left=np.int64(0))


def _call(target, outs, *args, **attrs):
  outs = [jax.ShapeDtypeStruct(s, d) for s, d in outs]
  return jax.ffi.ffi_call(target, outs)(*args, **{**_ATTRS, **attrs})


def _f32(*shape):
  return jnp.ones(shape, jnp.float32)


@needs_onednn
def test_handlers_run_on_consistent_buffers():
  x, w, dy = _f32(2, 8, 8, 3), _f32(3, 3, 3, 4), _f32(2, 6, 6, 4)
  f32 = jnp.float32
  dx, = _call(onednn.BWD_DATA, [((2, 8, 8, 3), f32)], dy, w)
  dw, = _call(onednn.BWD_WEIGHTS, [((3, 3, 3, 4), f32)], x, dy)
  dx2, dw2 = _call(onednn.BWD, [((2, 8, 8, 3), f32), ((3, 3, 3, 4), f32)],
                   x, w, dy)
  assert float(dx[0, 4, 4, 0]) == 36.0 and float(dw[1, 1, 0, 0]) == 72.0
  np.testing.assert_array_equal(dx, dx2)
  np.testing.assert_array_equal(dw, dw2)


@needs_onednn
@pytest.mark.parametrize('target, outs, args, attrs, message', [
    # The weights' input channels (5) against dx's (3).
    (onednn.BWD_DATA, [(2, 8, 8, 3)], [(2, 6, 6, 4), (3, 3, 5, 4)], {},
     r"weights' input channels \(5\) differ from the input's \(3\)"),
    # dx larger than the windows cover: the implied padding is negative.
    (onednn.BWD_DATA, [(2, 9, 9, 3)], [(2, 6, 6, 4), (3, 3, 3, 4)], {},
     r"output gradient's size \(6x6\) does not fit"),
    (onednn.BWD_DATA, [(2, 8, 8, 3)], [(3, 6, 6, 4), (3, 3, 3, 4)], {},
     r"output gradient's batch \(3\) differs from the input's \(2\)"),
    (onednn.BWD_DATA, [(2, 8, 8, 3)], [(2, 6, 6, 5), (3, 3, 3, 4)], {},
     r"output gradient's channels \(5\) differ from the weights' \(4\)"),
    (onednn.BWD_DATA, [(2, 8, 8, 3)], [(2, 6, 24), (3, 3, 3, 4)], {},
     'dy must have rank 4, not 3'),
    (onednn.BWD_DATA, [(2, 8, 8, 3)], [(2, 6, 6, 4), (3, 3, 3, 4)],
     dict(stride_h=np.int64(0)), 'strides out of range: 0x1'),
    (onednn.BWD_DATA, [(2, 8, 8, 3)], [(2, 6, 6, 4), (3, 3, 3, 4)],
     dict(pad_left=np.int64(-1)), 'top/left padding out of range'),
    (onednn.BWD_WEIGHTS, [(3, 3, 2, 4)], [(2, 8, 8, 3), (2, 6, 6, 4)], {},
     r"weights' input channels \(2\) differ from the input's \(3\)"),
    # dy smaller than the input needs: a row no window covers.
    (onednn.BWD_WEIGHTS, [(3, 3, 3, 4)], [(2, 8, 8, 3), (2, 5, 5, 4)], {},
     r"output gradient's size \(5x5\) does not fit"),
    (onednn.BWD, [(2, 8, 8, 3), (3, 3, 3, 4)],
     [(2, 8, 8, 3), (3, 3, 3, 4), (2, 6, 6, 4, 1)], {},
     'dy must have rank 4, not 5'),
    (onednn.BWD, [(2, 8, 7, 3), (3, 3, 3, 4)],
     [(2, 8, 8, 3), (3, 3, 3, 4), (2, 6, 6, 4)], {},
     "dx's shape differs from x's"),
    (onednn.BWD, [(2, 8, 8, 3), (3, 3, 3, 8)],
     [(2, 8, 8, 3), (3, 3, 3, 4), (2, 6, 6, 4)], {},
     "dw's shape differs from w's"),
])
def test_handlers_refuse_inconsistent_buffers(target, outs, args, attrs,
                                              message):
  """An error naming the mismatch, not a read or write past a buffer."""
  outs = [(s, jnp.float32) for s in outs]
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match='INVALID_ARGUMENT: kmnist_conv: .*' + message):
    jax.block_until_ready(_call(target, outs, *[_f32(*s) for s in args],
                                **attrs))


@needs_onednn
@pytest.mark.parametrize('which', ['argument', 'result'])
def test_handlers_refuse_other_element_types(which):
  dy, w = _f32(2, 6, 6, 4), _f32(3, 3, 3, 4)
  out_dtype = jnp.float32
  if which == 'argument':
    dy = dy.astype(jnp.int32)
  else:
    out_dtype = jnp.int32
  name = 'dy' if which == 'argument' else 'dx'
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match=f'INVALID_ARGUMENT: kmnist_conv: {name} must be '
                     'float32'):
    jax.block_until_ready(_call(onednn.BWD_DATA, [((2, 8, 8, 3), out_dtype)],
                                dy, w))


# --- bfloat16 passes (config.matmul_precision='bfloat16') ---------------------


def _rounded(a):
  return a.astype(jnp.bfloat16).astype(jnp.float32)


@needs_onednn
@pytest.mark.parametrize('x_shape, w_shape, strides, padding', [
    ((4, 28, 28, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1))),  # 3x3 s1
    ((4, 28, 28, 16), (3, 3, 16, 32), (2, 2), ((1, 1), (1, 1))),  # 3x3 s2
    ((4, 28, 28, 16), (1, 1, 16, 32), (2, 2), ((0, 0), (0, 0))),  # 1x1 s2
    ((2, 14, 14, 96), (1, 1, 96, 96), (1, 1), ((0, 0), (0, 0))),  # 1x1 s1
    ((2, 4, 4, 512), (3, 3, 512, 512), (1, 1), ((1, 1), (1, 1))),  # 512
    # Weight gradients by the matrix product (onednn_conv.cc's Gemm):
    ((2, 7, 7, 256), (3, 3, 256, 512), (2, 2), ((1, 1), (1, 1))),  # to 512
    ((2, 7, 7, 128), (3, 3, 128, 64), (1, 1), ((1, 1), (1, 1))),  # 7x7
    ((2, 14, 14, 128), (1, 1, 128, 256), (2, 2), ((0, 0), (0, 0))),  # 1x1 s2
    ((16, 26, 26, 32), (3, 3, 32, 64), (1, 1), 'VALID'),       # keras conv2
    ((8, 12, 12, 16), (4, 4, 16, 32), (2, 2), ((1, 1), (1, 1))),  # seed conv2
])
def test_bf16_passes_are_float32_sums_of_rounded_operands(x_shape, w_shape,
                                                          strides, padding):
  """Under jax.default_matmul_precision('bfloat16'): oneDNN's bfloat16
  forward pass and gradients, float32 results equal to float32 sums of the
  operands rounded to bfloat16 (products of two bfloat16 numbers are exact
  in float32), up to the order of the sums."""
  r = np.random.default_rng(7)
  x = jnp.asarray(r.standard_normal(x_shape, np.float32))
  w = jnp.asarray(r.standard_normal(w_shape, np.float32) * 0.2)
  g = None

  def ours(x, w):
    return conv.conv_general_dilated(x, w, strides, padding,
                                     dimension_numbers=NHWC)

  def exact(x, w):
    return lax.conv_general_dilated(x, w, strides, padding,
                                    dimension_numbers=NHWC,
                                    precision=lax.Precision.HIGHEST)

  vjp = jax.jit(lambda f, x, w, g: jax.vjp(f, x, w)[1](g), static_argnums=0)
  with jax.default_matmul_precision('bfloat16'):
    y = jax.jit(ours)(x, w)
    g = jnp.asarray(r.standard_normal(y.shape, np.float32))
    dx, dw = vjp(ours, x, w, g)
    hlo = vjp.lower(ours, x, w, g).as_text()
    fwd_hlo = jax.jit(ours).lower(x, w).as_text()
  assert onednn.FWD in fwd_hlo and onednn.BWD in hlo
  y_ref = exact(_rounded(x), _rounded(w))
  dx_ref, dw_ref = vjp(exact, _rounded(x), _rounded(w), _rounded(g))
  for ours_v, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
    assert ours_v.dtype == jnp.float32 and ours_v.shape == ref.shape
    np.testing.assert_allclose(ours_v, ref, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(ref).max()))
  # Not the float32 convolution: the operands were rounded.
  assert float(jnp.abs(y - exact(x, w)).max()) > 1e-4
  # Run to run, the same bits.
  with jax.default_matmul_precision('bfloat16'):
    np.testing.assert_array_equal(vjp(ours, x, w, g)[1], dw)


@needs_onednn
def test_handlers_take_bfloat16_inputs_with_float32_results():
  bf, f32 = jnp.bfloat16, jnp.float32
  x, w = jnp.ones((2, 8, 8, 3), bf), jnp.ones((3, 3, 3, 4), bf)
  dy = jnp.ones((2, 6, 6, 4), bf)
  y, = _call(onednn.FWD, [((2, 6, 6, 4), f32)], x, w)
  assert y.dtype == f32 and float(y[0, 0, 0, 0]) == 27.0
  yb, = _call(onednn.FWD, [((2, 6, 6, 4), bf)], x, w)
  assert yb.dtype == bf and float(yb[1, 5, 5, 3]) == 27.0
  dx, dw = _call(onednn.BWD, [((2, 8, 8, 3), f32), ((3, 3, 3, 4), f32)],
                 x, w, dy)
  assert float(dx[0, 4, 4, 0]) == 36.0 and float(dw[1, 1, 0, 0]) == 72.0
  y32, = _call(onednn.FWD, [((2, 6, 6, 4), f32)], x.astype(f32),
               w.astype(f32))
  np.testing.assert_array_equal(y32, y)


@needs_onednn
@pytest.mark.parametrize('args, outs, message', [
    # Inputs of two element types.
    ([((2, 8, 8, 3), jnp.bfloat16), ((3, 3, 3, 4), jnp.float32)],
     [((2, 6, 6, 4), jnp.float32)], 'w must be bfloat16, as the other inputs'),
    # float32 inputs, a bfloat16 result.
    ([((2, 8, 8, 3), jnp.float32), ((3, 3, 3, 4), jnp.float32)],
     [((2, 6, 6, 4), jnp.bfloat16)], 'float32 inputs need float32 results'),
])
def test_handlers_refuse_mixed_element_types(args, outs, message):
  with pytest.raises(jax.errors.JaxRuntimeError,
                     match='INVALID_ARGUMENT: kmnist_conv: ' + message):
    jax.block_until_ready(_call(onednn.FWD, outs,
                                *[jnp.ones(s, d) for s, d in args]))


_WGRAD_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from kmnist_jax.cpu import conv
r = np.random.default_rng(3)
out = {}
for name, xs, ws, st, pad, dt in [
    ('deep', (3, 7, 7, 128), (3, 3, 128, 24), (2, 2), ((1, 1), (1, 1)),
     jnp.float32),  # An odd batch: halves of 1 and 2 images.
    ('image', (3, 9, 8, 1), (3, 2, 1, 5), (1, 2), ((2, 0), (0, 1)),
     jnp.float32),
    ('bf16', (2, 6, 5, 40), (2, 3, 40, 8), (1, 1), ((1, 0), (1, 1)),
     jnp.bfloat16)]:
  x = jnp.asarray(r.standard_normal(xs, np.float32)).astype(dt)
  w = jnp.asarray(r.standard_normal(ws, np.float32) * 0.2).astype(dt)
  f = lambda x, w: conv.conv_general_dilated(
      x, w, st, pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  y, vjp = jax.vjp(f, x, w)
  g = jnp.asarray(r.standard_normal(y.shape, np.float32)).astype(dt)
  dx, dw = jax.jit(lambda x, w, g: jax.vjp(f, x, w)[1](g))(x, w, g)
  out[name + '_dx'] = np.asarray(dx, np.float32)
  out[name + '_dw'] = np.asarray(dw, np.float32)
np.savez(sys.argv[1], **out)
"""


@needs_onednn
def test_weight_gradients_by_matrix_product_equal_the_convolutions(tmp_path):
  """KMNIST_JAX_ONEDNN_WGRAD=gemm computes every weight gradient as cols(x)^T
  . dy (onednn_conv.cc's Gemm: windows clipped by padding and strides, a
  single-channel image, bfloat16), =split as two convolutions over the
  halves of the batch (Split; an odd batch too), =conv as one oneDNN
  convolution: the same gradients up to the order of the sums."""
  import subprocess
  import sys
  runs = {}
  for mode in ('gemm', 'split', 'conv'):
    out = tmp_path / f'{mode}.npz'
    env = dict(os.environ, KMNIST_JAX_ONEDNN_WGRAD=mode)
    proc = subprocess.run([sys.executable, '-c', _WGRAD_SCRIPT, str(out)],
                          env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs[mode] = dict(np.load(out))
  ref = runs['conv']
  for mode in ('gemm', 'split'):
    ours = runs[mode]
    assert sorted(ours) == sorted(ref) and len(ours) == 6
    for k in ref:
      bf16 = k.startswith('bf16')
      scale = float(np.abs(ref[k]).max())
      assert scale > 0.1, k
      np.testing.assert_allclose(ours[k], ref[k], rtol=0,
                                 atol=(1e-2 if bf16 else 1e-5) * scale,
                                 err_msg=f'{mode} {k}')
