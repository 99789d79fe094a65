"""Every environment variable the program reads, checked before any work.

`check_environment` runs first in the CLI: a malformed value is one line,
`VARIABLE=value: expected ...`, instead of a traceback deep in JAX, urllib
or the cluster detection. The table `VARIABLES` names each one and what it
must hold; unset or empty variables take their defaults.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Callable, Mapping

from kmnist_jax.core.errors import UserError

SWITCH_VALUES = ('0', '1', 'false', 'true', 'off', 'on', 'no', 'yes')
# jax.config's platform names (JAX_PLATFORMS is a comma-separated list).
PLATFORMS = ('cpu', 'cuda', 'gpu', 'rocm', 'tpu', 'metal')


def switched_off(value: str) -> bool:
  """Whether an environment switch's value turns its feature off."""
  return value.lower() in ('0', 'false', 'off', 'no')


def _switch(value: str) -> str | None:
  if value.lower() in SWITCH_VALUES:
    return None
  return f'expected one of {", ".join(SWITCH_VALUES)}'


def _url(value: str) -> str | None:
  expected = ('expected the http://, https:// or file:// URL of a folder '
              'holding the dataset files')
  if any(c.isspace() or ord(c) < 32 for c in value):
    return f'white space or control characters; {expected}'
  try:
    parts = urllib.parse.urlsplit(value)
    parts.port  # pylint: disable=pointless-statement  # Raises if bad.
  except ValueError as e:
    return f'{e}; {expected}'
  if parts.scheme not in ('http', 'https', 'file') or (
      parts.scheme != 'file' and not parts.hostname):
    return expected
  return None


def _folder(value: str) -> str | None:
  path = os.path.expanduser(value)
  if os.path.exists(path) and not os.path.isdir(path):
    return 'not a folder; expected the folder holding the dataset files'
  return None


def _cache(value: str) -> str | None:
  if value.lower() in SWITCH_VALUES:
    return None
  path = os.path.expanduser(value)
  if os.path.exists(path) and not os.path.isdir(path):
    return (f'not a folder; expected one of {", ".join(SWITCH_VALUES)}, or a '
            'folder for the compilation cache')
  return None


def _platforms(value: str) -> str | None:
  names = [n.strip().lower() for n in value.split(',')]
  bad = [n for n in names if n not in PLATFORMS]
  if bad:
    return (f'unknown platform(s) {", ".join(map(repr, bad))}; expected a '
            f'comma-separated list of {", ".join(PLATFORMS)}')
  return None


def _count(low: int) -> Callable[[str], str | None]:
  def check(value: str) -> str | None:
    if value.strip().isdigit() and int(value) >= low:
      return None
    return f'expected an integer >= {low}'
  return check


VARIABLES: dict[str, Callable[[str], str | None]] = {
    'KMNIST_JAX_DATA_DIR': _folder,
    'KMNIST_JAX_MIRROR': _url,
    'KMNIST_JAX_MIRROR_ONLY': _switch,
    'KMNIST_JAX_COMPILATION_CACHE': _cache,
    'KMNIST_JAX_ONEDNN': _switch,
    'KMNIST_JAX_MALLOC': _switch,
    'JAX_PLATFORMS': _platforms,
    'JAX_PLATFORM_NAME': _platforms,
    # Read by the cluster detection (`distributed.detect_cluster`).
    'SLURM_NTASKS': _count(1),
    'SLURM_PROCID': _count(0),
    'OMPI_COMM_WORLD_SIZE': _count(1),
    'OMPI_COMM_WORLD_RANK': _count(0),
}


def check_environment(env: Mapping[str, str] | None = None) -> None:
  """Raises `UserError` (one line) for the first malformed variable."""
  env = os.environ if env is None else env
  for name, check in VARIABLES.items():
    value = env.get(name, '')
    if not value:
      continue
    problem = check(value)
    if problem:
      raise UserError(f'{name}={value!r}: {problem}')
