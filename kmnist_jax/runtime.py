"""Process-level JAX settings: the persistent compilation cache."""

from __future__ import annotations

import logging
import os

import jax


def user_cache_dir(name: str) -> str:
  """`name` in the user cache folder ($XDG_CACHE_HOME or ~/.cache)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'kmnist_jax', name)


def switched_off(value: str) -> bool:
  """Whether an environment switch's value turns its feature off."""
  return value.lower() in ('0', 'false', 'off', 'no')


def cache_dir() -> str:
  return user_cache_dir('jax_compilation_cache')


def setup() -> None:
  """Enables JAX's persistent compilation cache in the user cache folder.

  Set `KMNIST_JAX_COMPILATION_CACHE=0` to switch it off, or to a folder to
  move it.
  """
  quiet_orbax_logs()
  setting = os.environ.get('KMNIST_JAX_COMPILATION_CACHE', '1')
  if not setting or switched_off(setting):
    return
  path = setting if setting not in ('1', 'true', 'on', 'yes') else cache_dir()
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return  # An unwritable cache only costs compile time.
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
