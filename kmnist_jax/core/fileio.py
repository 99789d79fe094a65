"""Atomic file writes: a reader sees the old file or the new one, never half.

Every file the package writes (metrics, configs, results, plots, CSVs, models,
downloads, cached libraries) goes through `atomic_path`: the content goes to a
temporary file in the same folder, which is renamed over the target only once
it is complete; on any error the temporary file is removed and the target is
left as it was. The content is synced to disk before the rename, and the
folder after it, so that a power cut leaves the old file or the new one,
never a short one under the target's name. A folder at the target is
refused before any work. New files get the permissions the umask allows
(0666 & ~umask), as `open()` would give them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from typing import Any, Iterator


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def fsync(path: str) -> None:
  """Flushes a file's (or a folder's entries') data to disk; a file system
  that cannot sync folders is let be."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  except OSError:
    if not os.path.isdir(path):
      raise
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None
                ) -> Iterator[str]:
  """Yields a temporary path beside `path`; renames it to `path` on success.

  `mode`: permission bits of the result; default 0666 & ~umask (an executable
  such as a shared library passes 0o700, say).
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  base = os.path.basename(path)
  if os.path.isdir(path) and not os.path.islink(path):
    # The rename would fail after all the work, naming the temporary file.
    raise IsADirectoryError(errno.EISDIR, 'Is a directory', path)
  fd, tmp = tempfile.mkstemp(prefix=f'.{base}.', suffix='.tmp', dir=folder)
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)
    fsync(tmp)  # On disk before the name: a power cut leaves old or new.
    os.replace(tmp, path)
    fsync(folder)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  """Writes `obj` as indented JSON to `path` atomically."""
  write_text(path, json.dumps(obj, indent=2) + '\n')


def user_cache_dir(name: str) -> str:
  """`name` in the user cache folder ($XDG_CACHE_HOME or ~/.cache)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
  return os.path.join(base, 'kmnist_jax', name)


def private_dir(path: str) -> bool:
  """Creates folder `path` private (0700) if absent. True if it is safe.

  Safe: a folder (not a link) of this user that nobody else can write, so
  the compiled code cached in it is this user's own.
  """
  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
  except OSError:
    return False
  return private(st, stat.S_ISDIR)


def private(st: os.stat_result, kind=stat.S_ISREG) -> bool:
  """Whether `st` is of `kind`, this user's, and not writable by others."""
  return (kind(st.st_mode) and st.st_uid == os.getuid()
          and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
