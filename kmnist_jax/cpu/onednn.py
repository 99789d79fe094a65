"""oneDNN convolutions on XLA:CPU, through `jax.ffi`.

XLA:CPU computes the gradients of keras_cnn's second convolution about half
as fast as oneDNN, the CPU kernel library PyTorch uses. `csrc/onednn_conv.cc`
wraps oneDNN's input-gradient and weight-gradient convolutions, and its
forward convolution (for the opt-in bfloat16 passes), as XLA FFI handlers;
`kmnist_jax.cpu.conv` calls them. The same library holds the
BatchNorm+ReLU kernels of `csrc/batchnorm.cc` (no oneDNN in them;
`kmnist_jax.cpu.batchnorm` calls them). On first use the files are compiled
with the C++ compiler against jaxlib's FFI headers and the `onednn-cpu-gomp`
wheel's libdnnl, into the user cache folder (`~/.cache/kmnist_jax/onednn`),
once per source, jax, compiler and library. The folder is created private
(0700); a library there that is not this user's, or that others can write,
is never loaded but rebuilt. The handlers check the ranks, shapes and
element types of their buffers and return an error for any mismatch.

`available()` says whether the handlers are registered. When they are not
(no CPU backend, no libdnnl, no compiler, `KMNIST_JAX_ONEDNN=0`) it logs the
reason once and the gradients are XLA's. Results match XLA's to float32
rounding, not bit for bit.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import tempfile

import jax
import numpy as np

from kmnist_jax.core import environment
from kmnist_jax.core import fileio

ENV = 'KMNIST_JAX_ONEDNN'
FWD, BWD, BWD_DATA, BWD_WEIGHTS = (
    'kmnist_conv_fwd', 'kmnist_conv_bwd', 'kmnist_conv_bwd_data',
    'kmnist_conv_bwd_weights')
# The BatchNorm+ReLU kernels (`cpu/batchnorm.py`), built into the same library.
BN_RELU_FWD, BN_RELU_BWD = 'kmnist_bn_relu_fwd', 'kmnist_bn_relu_bwd'
ADD_BN_RELU_FWD, BN_RELU_BWD_ADD = ('kmnist_add_bn_relu_fwd',
                                    'kmnist_bn_relu_bwd_add')
_TARGETS = (FWD, BWD, BWD_DATA, BWD_WEIGHTS, BN_RELU_FWD, BN_RELU_BWD,
            ADD_BN_RELU_FWD, BN_RELU_BWD_ADD)
_CSRC = os.path.join(os.path.dirname(__file__), 'csrc')
_SOURCE = os.path.join(_CSRC, 'onednn_conv.cc')
_BN_SOURCE = os.path.join(_CSRC, 'batchnorm.cc')
_HEADER = os.path.join(_CSRC, 'onednn_checks.h')  # Included by _SOURCE.
_LIB = 'libdnnl.so.3'
_WHEEL = 'onednn-cpu-gomp'


def enabled_by_env() -> bool:
  return not environment.switched_off(os.environ.get(ENV, '1'))


def find_libdnnl() -> str | None:
  """Path of the `onednn-cpu-gomp` wheel's libdnnl.so.3, if installed."""
  try:
    dist = importlib.metadata.distribution(_WHEEL)
  except importlib.metadata.PackageNotFoundError:
    return None
  for f in dist.files or ():
    if f.name == _LIB:
      path = str(dist.locate_file(f))
      if os.path.exists(path):
        return path
  return None


def build(libdnnl: str, cache_root: str | None = None) -> str:
  """Compiles the FFI library (once; cached by content) and returns its path.

  Raises RuntimeError with the compiler's message when compilation fails.
  A cached library is used only when it is this user's and nobody else can
  write it or its folder; otherwise it is rebuilt, in a private folder.
  """
  compiler = os.environ.get('CXX') or shutil.which('g++') or shutil.which(
      'c++')
  if not compiler:
    raise RuntimeError('no C++ compiler (g++ or $CXX) on PATH')
  include = jax.ffi.include_dir()
  source = b''
  for path in (_SOURCE, _BN_SOURCE, _HEADER):
    with open(path, 'rb') as f:
      source += f.read()
  key = hashlib.sha256(b'\0'.join([
      source, jax.__version__.encode(), include.encode(),
      os.path.realpath(libdnnl).encode(), compiler.encode()])).hexdigest()[:16]
  root = cache_root or fileio.user_cache_dir('onednn')
  if not fileio.private_dir(root):
    # Unwritable, or others' to change: build for this process only.
    root = tempfile.mkdtemp(prefix='kmnist_jax_onednn_')  # 0700
  target = os.path.join(root, f'onednn_conv-{key}.so')
  if _cached(target):
    return target
  libdir = os.path.dirname(libdnnl)
  # Compile into a temporary file, then rename: concurrent processes and
  # interrupted builds never leave a half-written library behind.
  with fileio.atomic_path(target, mode=0o700) as tmp:
    cmd = [compiler, '-O3', '-std=c++17', '-shared', '-fPIC', '-w', '-fopenmp',
           f'-I{include}', _SOURCE, _BN_SOURCE, '-o', tmp, f'-L{libdir}', f'-l:{_LIB}',
           f'-Wl,-rpath,{libdir}']
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f'{compiler} failed: {proc.stderr.strip()[-500:]}')
    record = _record(tmp)
  # Written after the library is in place: a library without its record,
  # or whose size or digest differ from it, is never loaded but rebuilt.
  fileio.write_text(target + RECORD_SUFFIX, record)
  return target


RECORD_SUFFIX = '.sha256'


def _record(path: str) -> str:
  """'<size> <sha256>' of a file: what `build` checks before reuse."""
  digest = hashlib.sha256()
  size = 0
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
      size += len(block)
  return f'{size} {digest.hexdigest()}\n'


def _cached(target: str) -> bool:
  """Whether `target` is a whole library this user built: private, with a
  private record of its size and digest that it matches. A truncated or
  damaged library (a power cut mid-build, a disk fault) would crash the
  process that loads it with a bus error; it is rebuilt with one warning."""
  try:
    if not (fileio.private(os.lstat(target)) and
            fileio.private(os.lstat(target + RECORD_SUFFIX))):
      return False
    with open(target + RECORD_SUFFIX, encoding='ascii') as f:
      recorded = f.read()
    if _record(target) == recorded:
      return True
  except (OSError, UnicodeDecodeError):
    return False
  logging.warning('kmnist_jax: %s does not match its record %s (damaged); '
                  'rebuilding it', target, RECORD_SUFFIX)
  return False


def _reason_unavailable() -> str | None:
  """None when the handlers were registered, else why not."""
  if not enabled_by_env():
    return f'{ENV}=0'
  if jax.default_backend() != 'cpu':
    return f'backend is {jax.default_backend()}, not cpu'
  libdnnl = find_libdnnl()
  if libdnnl is None:
    return f'{_WHEEL} is not installed (pip install {_WHEEL})'
  try:
    lib = ctypes.CDLL(build(libdnnl))
    for name in _TARGETS:
      jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                  platform='cpu')
  except (OSError, RuntimeError, AttributeError) as e:
    return f'could not build or load the FFI library: {e}'
  return None


@functools.cache
def _status() -> str | None:
  reason = _reason_unavailable()
  if reason:
    logging.warning('kmnist_jax: XLA convolutions (oneDNN off: %s)', reason)
  return reason


def available() -> bool:
  """True when the oneDNN FFI handlers are registered for this process."""
  return _status() is None


def describe() -> str:
  """One line for reports: which kernels compute the convolution gradients."""
  if available():
    version = importlib.metadata.version(_WHEEL)
    return f'oneDNN ({_WHEEL} {version}, kmnist_jax.cpu.onednn)'
  return f'XLA (oneDNN off: {_status()})'


def _attrs(strides, pads):
  return dict(stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
              pad_top=np.int64(pads[0][0]), pad_left=np.int64(pads[1][0]))


def conv_fwd(x, w, strides, pads, y_shape, out_dtype=None):
  """y = conv(x, w), of `out_dtype` (default x's: float32 or, for bfloat16
  operands, bfloat16 or float32). In float32, training's forward pass where
  `conv.onednn_forward` says."""
  out = jax.ShapeDtypeStruct(tuple(y_shape), out_dtype or x.dtype)
  return jax.ffi.ffi_call(FWD, out)(x, w, **_attrs(strides, pads))


def conv_bwd(x, w, dy, strides, pads, out_dtype=None):
  """(dx, dw) in one call: dy is reordered for oneDNN once, not twice."""
  dt = out_dtype or x.dtype
  out = (jax.ShapeDtypeStruct(x.shape, dt), jax.ShapeDtypeStruct(w.shape, dt))
  return jax.ffi.ffi_call(BWD, out)(x, w, dy, **_attrs(strides, pads))


def conv_bwd_data(dy, w, strides, pads, x_shape, out_dtype=None):
  out = jax.ShapeDtypeStruct(tuple(x_shape), out_dtype or dy.dtype)
  return jax.ffi.ffi_call(BWD_DATA, out)(dy, w, **_attrs(strides, pads))


def conv_bwd_weights(x, dy, strides, pads, w_shape, out_dtype=None):
  out = jax.ShapeDtypeStruct(tuple(w_shape), out_dtype or x.dtype)
  return jax.ffi.ffi_call(BWD_WEIGHTS, out)(x, dy, **_attrs(strides, pads))
