"""Process-level settings: the persistent compilation cache and malloc.

Imports nothing beyond the standard library at module level, so that the
PyTorch benchmark worker (experiments/torch_models.py, its own environment)
can apply the same malloc settings.
"""

from __future__ import annotations

import ctypes
import logging
import os

MALLOC_ENV = 'KMNIST_JAX_MALLOC'
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_malloc_kept = False


def user_cache_dir(name: str) -> str:
  """`name` in the user cache folder ($XDG_CACHE_HOME or ~/.cache)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'kmnist_jax', name)


def switched_off(value: str) -> bool:
  """Whether an environment switch's value turns its feature off."""
  return value.lower() in ('0', 'false', 'off', 'no')


def cache_dir() -> str:
  return user_cache_dir('jax_compilation_cache')


def keep_freed_memory() -> bool:
  """Makes glibc's malloc keep freed memory for reuse. True if applied.

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
  glibc only (a no-op elsewhere); `KMNIST_JAX_MALLOC=0` switches it off.
  Call it before JAX starts its threads (the first `jax.devices()` or
  computation): a thread that already has an arena keeps it.
  """
  global _malloc_kept
  if switched_off(os.environ.get(MALLOC_ENV, '1')):
    return False
  try:
    if not os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc'):
      return False
    mallopt = ctypes.CDLL(None).mallopt
  except (AttributeError, OSError, ValueError):
    return False
  _malloc_kept = all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
  return _malloc_kept


def describe_malloc() -> str:
  """One line for reports: the malloc settings of this process."""
  if _malloc_kept:
    return 'glibc malloc keeps freed memory (kmnist_jax.runtime)'
  return f'the C library\'s defaults ({MALLOC_ENV}=0, not glibc, or not set)'


def setup() -> None:
  """malloc (`keep_freed_memory`), then JAX's persistent compilation cache.

  Call it first, before JAX starts its threads. The cache lives in the user
  cache folder; set `KMNIST_JAX_COMPILATION_CACHE=0` to switch it off, or
  to a folder to move it.
  """
  keep_freed_memory()
  quiet_orbax_logs()
  setting = os.environ.get('KMNIST_JAX_COMPILATION_CACHE', '1')
  if not setting or switched_off(setting):
    return
  path = setting if setting not in ('1', 'true', 'on', 'yes') else cache_dir()
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return  # An unwritable cache only costs compile time.
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


class _QuietOrbax(logging.Filter):
  """Drops Orbax's per-save INFO chatter from the console; keeps warnings."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or '/orbax/' not in (
        record.pathname or '')


def quiet_orbax_logs() -> None:
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
    handler.addFilter(_QuietOrbax())
