"""The speed code for XLA:CPU, behind one seam.

None of it changes a number: each piece computes what plain JAX computes
(bit for bit, or to float32 summation order), faster on this project's CPU
training runs. On a GPU or TPU backend every piece stands aside.

* `conv_general_dilated` (`cpu/conv.py`): a drop-in for
  `lax.conv_general_dilated`. A single-channel convolution (a model's first
  layer) runs as a sum of shifted copies of the image; the gradients come
  from oneDNN (`cpu/onednn.py`, C++ in `cpu/csrc/onednn_conv.cc`, compiled on
  first use and called through `jax.ffi`).
* `bn_relu` (`cpu/batchnorm.py`): a training-mode BatchNorm followed by
  ReLU, and its gradient, in C++ kernels (`cpu/csrc/batchnorm.cc`, built
  into the same library) that read the activations twice each way, where
  XLA:CPU's fusions of flax's BatchNorm take several passes; `add_bn_relu`,
  the same after a residual add, which it computes in the same passes.
* `dropout` (`cpu/rng.py`): inverted dropout whose mask is bit for bit
  `jax.random.bernoulli`'s, without the loop XLA:CPU cannot fuse.
* `malloc` (`cpu/malloc.py`): glibc malloc keeps freed memory, so XLA:CPU's
  per-step temporaries do not fault in fresh pages every step.
  `kmnist_jax.runtime.setup` applies it before JAX starts.

* `compiler` (`cpu/compiler.py`): the XLA compiler options of the jitted
  init (backend optimisation level 1: half the compile time).

The networks reach `conv_general_dilated`, `dropout`, `bn_relu` and
`add_bn_relu` through one seam,
`kmnist_jax.models.ops`, chosen when a model is built; nothing here imports
a model.

This package and `cpu.malloc` import only the standard library (the PyTorch
benchmark worker, which has no jax, uses `cpu.malloc`); `conv_general_dilated`,
`dropout` and `bn_relu` load their modules, and JAX, on first access.
"""

from __future__ import annotations

import importlib

_LAZY = {'conv_general_dilated': 'conv', 'dropout': 'rng', 'bernoulli': 'rng',
         'bn_relu': 'batchnorm', 'add_bn_relu': 'batchnorm'}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
  if name in _LAZY:
    module = importlib.import_module(f'{__name__}.{_LAZY[name]}')
    return getattr(module, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
