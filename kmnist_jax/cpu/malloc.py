"""glibc malloc settings for XLA:CPU, applied before JAX starts.

Imports only the standard library: the PyTorch benchmark worker
(experiments/torch_worker.py, its own environment without jax) applies the
same settings. On a GPU they are not applied: whether JAX will pick one is
judged from the environment, without starting JAX (`accelerator_expected`).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import os
import re

from kmnist_jax.core.environment import switched_off

ENV = 'KMNIST_JAX_MALLOC'
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_GPU_PLUGIN = re.compile(r'(cuda|rocm)', re.IGNORECASE)
# Models left with the C library's defaults, and why. A DenseNet's
# concatenations make each block's buffers larger than the last, so the
# holes a step frees in one heap never fit the next request: that heap grew
# to 20.6 GB peak RSS for DenseNet-BC-100 at batch 64, against 4.0 GB with
# the defaults (experiments/memory.py has today's figures).
STOCK_FOR = dict.fromkeys(
    ('densenet_bc100_k12', 'densenet100_k12'),
    'buffers that grow block by block fragment one heap')
_kept = False
_skipped = ''


def _gpu_plugins() -> list[str]:
  """Installed JAX plugins for a GPU (jax[cuda12], jax[cuda13], ROCm)."""
  names = [e.name for e in importlib.metadata.entry_points(group='jax_plugins')]
  names += [d.metadata['Name'] or '' for d in importlib.metadata.distributions()
            if re.fullmatch(r'jax[-_](cuda|rocm)\d*[-_]plugin',
                            d.metadata['Name'] or '', re.IGNORECASE)]
  return sorted({n for n in names if _GPU_PLUGIN.search(n)})


def _gpu_devices() -> list[str]:
  """GPU device files this process can see (NVIDIA, AMD)."""
  if os.environ.get('CUDA_VISIBLE_DEVICES', None) in ('', '-1'):
    nvidia = []
  else:
    nvidia = glob.glob('/dev/nvidia[0-9]*')
  return sorted(nvidia + glob.glob('/dev/kfd'))


def accelerator_expected() -> str:
  """Why JAX will run on a GPU or TPU, judged without starting JAX; '' if not.

  `JAX_PLATFORMS` decides when set (its first entry is the default backend);
  otherwise JAX picks a GPU when a GPU plugin is installed and a GPU device
  is visible.
  """
  platforms = os.environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    first = platforms.split(',')[0].strip()
    return '' if first == 'cpu' else f'JAX_PLATFORMS={platforms}'
  devices = _gpu_devices()  # First: a glob is cheaper than the metadata.
  plugins = _gpu_plugins() if devices else []
  if plugins:
    return f'GPU plugin {plugins[0]} and {devices[0]}'
  return ''


def stock_for(models) -> str:
  """Why `models` keep the C library's defaults ('' if they need not)."""
  return next((f'not for {m}: {STOCK_FOR[m]}' for m in models
               if m in STOCK_FOR), '')


def keep_freed_memory(models=()) -> bool:
  """Makes glibc's malloc keep freed memory for reuse. True if applied.

  `models`: the model names this process will run. The setting is not
  applied when one of them is in `STOCK_FOR`: what a process keeps is
  bounded by its peak use only while freed blocks are reused, which a
  DenseNet's ever-larger buffers defeat.

  XLA:CPU allocates the temporaries of one execution as one buffer (84 MB
  for the keras_cnn train step at batch 128) and frees it when the
  execution ends. glibc serves a request that large with a fresh mmap and
  unmaps it on free (always above 32 MiB, and from the arenas of threads
  other than the main one whenever their heap cannot hold it), so every
  step faults in all its pages again: 20,500 minor faults per keras_cnn
  step, a quarter to a third of its time on this project's 2-core machine
  (experiments/throughput.py, section `malloc`).

  Here every thread allocates from the main heap (one arena), never with
  mmap, and the heap is never trimmed: the next step reuses the same pages.
  The process keeps the memory it freed, up to its peak use. Process-wide;
  glibc only (a no-op elsewhere); `KMNIST_JAX_MALLOC=0` switches it off, and
  it is not applied where JAX will run on a GPU or TPU
  (`accelerator_expected`). Call it before JAX starts its threads (the first
  `jax.devices()` or computation): a thread that already has an arena keeps
  it.
  """
  global _kept, _skipped
  if switched_off(os.environ.get(ENV, '1')):
    return False
  accelerator = accelerator_expected()
  _skipped = (f'not for an accelerator: {accelerator}' if accelerator else
              stock_for(models))
  if _skipped:
    return False
  try:
    if not os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc'):
      return False
    mallopt = ctypes.CDLL(None).mallopt
  except (AttributeError, OSError, ValueError):
    return False
  _kept = all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
  return _kept


def describe() -> str:
  """One line for reports: the malloc settings of this process."""
  if _kept:
    return 'glibc malloc keeps freed memory (kmnist_jax.cpu.malloc)'
  if _skipped:
    return f'the C library\'s defaults ({_skipped})'
  return f'the C library\'s defaults ({ENV}=0, not glibc, or not set)'
