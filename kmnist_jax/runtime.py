"""Process-level settings: malloc, OpenMP, the compilation cache, logs.

Imports nothing beyond the standard library at module level, so that the
PyTorch benchmark worker (experiments/torch_worker.py, its own environment)
can use `kmnist_jax.cpu.malloc`, which imports it.
"""

from __future__ import annotations

import logging
import os

from kmnist_jax.core.environment import switched_off
from kmnist_jax.core.fileio import private_dir, user_cache_dir


def cache_dir() -> str:
  return user_cache_dir('jax_compilation_cache')


def setup(models=()) -> None:
  """malloc (`cpu.malloc.keep_freed_memory` for `models`), OpenMP's wait
  policy (`cpu.openmp.spin_waits`), then JAX's compilation cache.

  Call it first, before JAX starts its threads. The cache lives in the user
  cache folder, created private (0700); set `KMNIST_JAX_COMPILATION_CACHE=0`
  to switch it off, or to a folder to move it. A folder that is not this
  user's, or that others can write, is not used: its compiled code could be
  anyone's.
  """
  from kmnist_jax.cpu import malloc  # pylint: disable=g-import-not-at-top
  from kmnist_jax.cpu import openmp  # pylint: disable=g-import-not-at-top
  malloc.keep_freed_memory(models)
  openmp.spin_waits()  # Before libgomp loads (with oneDNN, on first use).
  quiet_orbax_logs()
  setting = os.environ.get('KMNIST_JAX_COMPILATION_CACHE', '1')
  if not setting or switched_off(setting):
    return
  path = setting if setting not in ('1', 'true', 'on', 'yes') else cache_dir()
  if not private_dir(path):
    # An unusable cache only costs compile time.
    logging.warning('kmnist_jax: no compilation cache: %s is not a folder '
                    'of this user that only this user can write', path)
    return
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


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _OwnInfoOnly(logging.Filter):
  """Keeps every warning and error, and kmnist_jax's own INFO lines (its
  progress); drops the libraries' INFO lines (the JAX backends it could not
  start: tpu, proxy; Orbax's saves)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or os.path.abspath(
        record.pathname or '').startswith(_PACKAGE)


def quiet_library_logs() -> None:
  """Console: warnings, and INFO from kmnist_jax only (the CLI's default)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _OwnInfoOnly) for f in handler.filters):
    handler.addFilter(_OwnInfoOnly())
