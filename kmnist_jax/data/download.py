"""Verified downloads of dataset files from a list of sources.

A file is tried from each source in turn: `$KMNIST_JAX_MIRROR` (a base URL
with the same file names) when set, the official URL, then the public copies
in `PUBLIC_COPIES`. It streams to a temporary file beside its final name and
gets that name only once its size, md5 and sha256 match the pinned values.
A source that answers with an HTTP client error, too many bytes or other bytes
is skipped with a warning; network failures, server errors and truncated
transfers are retried, `RETRIES` times, after a growing pause.
"""

import gzip
import hashlib
import http.client
import os
import pathlib
import time
import urllib.error
import urllib.request
import zlib

from absl import logging

from kmnist_jax.core import console
from kmnist_jax.core import fileio
from kmnist_jax.core.errors import UserError, one_line
# Re-exported: the pinned files were defined here.
from kmnist_jax.data.registry import PINNED, PINNED_IDX, RemoteFile, pinned  # pylint: disable=unused-import

ENV_DATA_DIR = 'KMNIST_JAX_DATA_DIR'
ENV_MIRROR = 'KMNIST_JAX_MIRROR'
# Set to 1: use only $KMNIST_JAX_MIRROR (tests; sites that allow one host).
ENV_MIRROR_ONLY = 'KMNIST_JAX_MIRROR_ONLY'

# Download behaviour; tests lower these.
RETRIES = 3  # retries after the first round over all sources
BACKOFF_S = 1.0  # wait before retry round k is BACKOFF_S * 2**k
TIMEOUT_S = 60.0
# A partial download untouched this long was left by a killed run; an active
# one is written to at least every TIMEOUT_S.
STALE_PART_S = 3600.0
_CHUNK = 1 << 16

# Public copies of an official folder, tried after the official URL. Each is
# named with the public code that downloads from it. No independent host
# serving the same bytes was found (the Hugging Face tanganke/kmnist parquet
# files and the Dropbox KMNIST.tar.gz of cs-giung/giung2 hold other formats).
PUBLIC_COPIES: dict[str, tuple[str, ...]] = {
    # ankane/torchvision-ruby lib/torchvision/datasets/kmnist.rb (`mirrors`,
    # since "Fixed download for KMNIST dataset", 2025-08-07): the official
    # folder over HTTPS.
    'http://codh.rois.ac.jp/kmnist/dataset/kmnist/':
        ('https://codh.rois.ac.jp/kmnist/dataset/kmnist/',),
    # MNIST: torchvision's `MNIST.mirrors` in its order (the PyTorch S3 copy,
    # then LeCun's page), then TFDS's (tensorflow_datasets image_classification
    # mnist.py `_MNIST_URL`, the CVDF bucket).
    'https://ossci-datasets.s3.amazonaws.com/mnist/':
        ('http://yann.lecun.com/exdb/mnist/',
         'https://storage.googleapis.com/cvdf-datasets/mnist/'),
}

# The first source of a folder that is not the dataset's own site.
FIRST_SOURCE_LABELS = {
    'https://ossci-datasets.s3.amazonaws.com/mnist/': 'torchvision copy',
}

PathLike = str | os.PathLike[str]


class DownloadError(UserError):
  """Files could not be downloaded from any source."""

  def __init__(self, message: str, reason: str = ''):
    super().__init__(message)
    self.reason = reason


# ----------------------------------------------------------------- checksums

_md5_cache: dict[tuple[str, int, int], str] = {}


def _hash_file(path: pathlib.Path, algorithm: str) -> str:
  digest = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def md5sum(path: PathLike) -> str:
  """md5 of a file, cached per (path, size, mtime)."""
  path = pathlib.Path(path)
  stat = path.stat()
  key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
  if key not in _md5_cache:
    _md5_cache[key] = _hash_file(path, 'md5')
  return _md5_cache[key]


# ------------------------------------------------------------------- sources


def sources(file: RemoteFile) -> list[tuple[str, str]]:
  """(label, URL) of every source of `file`, in the order they are tried."""
  found = []
  mirror = os.environ.get(ENV_MIRROR, '')
  if mirror:
    found.append((f'${ENV_MIRROR}', mirror.rstrip('/') + '/' + file.name))
    if os.environ.get(ENV_MIRROR_ONLY, '') not in ('', '0'):
      return found
  folder = file.url[:len(file.url) - len(file.name)]
  found.append((FIRST_SOURCE_LABELS.get(folder, 'official'), file.url))
  found += [('public copy', base + file.name)
            for base in PUBLIC_COPIES.get(folder, ())]
  return found


def source_url(file: RemoteFile) -> str:
  """The first source tried: the mirror URL if set, else the official one."""
  return sources(file)[0][1]


def fail_message(files: list[RemoteFile], directory: pathlib.Path,
                 reason: str) -> str:
  names = ', '.join(f.name for f in files)
  urls = ' '.join(source_url(f) for f in files)
  return (f'cannot download {names} ({reason}); download {urls} and put them '
          f'in {directory} (or set {ENV_DATA_DIR} to a folder holding them)')


# ------------------------------------------------------------------ fetching


class _Transient(Exception):
  """A failure worth retrying (network, server error, truncated transfer)."""


class _Rejected(Exception):
  """The source does not have the file or serves other bytes: skip it."""


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
  try:
    return urllib.request.urlopen(url, timeout=timeout)
  except urllib.error.HTTPError as e:
    if e.code >= 500 or e.code in (408, 429):
      raise _Transient(f'HTTP {e.code} {e.reason}') from None
    raise _Rejected(f'answered HTTP {e.code} {e.reason}; expected the file '
                    'there') from None
  except urllib.error.URLError as e:
    raise _Transient(one_line(str(e.reason))) from None
  except (OSError, http.client.HTTPException) as e:
    raise _Transient(one_line(e)) from None


def _max_bytes(file: RemoteFile) -> int | None:
  """The most bytes a source may send for `file`: its pinned size, or for a
  release pinned by its uncompressed bytes, those (plus gzip's overhead) as
  a recompressed copy may be larger than the official .gz."""
  if file.raw_sha256 and file.raw_size:
    return max(file.size or 0, file.raw_size + (1 << 16))
  return file.size


def _stream(file: RemoteFile, url: str, tmp: str, timeout: float) -> None:
  """Writes `url` to `tmp`; raises unless it has the pinned size and hashes
  (or, where pinned, the uncompressed bytes: `_same_content`)."""
  md5, sha256, received = hashlib.md5(), hashlib.sha256(), 0
  limit = _max_bytes(file)
  with open(tmp, 'wb') as out, _open(url, timeout) as resp:
    length = resp.headers.get('Content-Length')
    announced = int(length) if length and length.isdigit() else None
    if None not in (announced, limit) and (
        announced > limit if file.raw_sha256 else announced != file.size):
      raise _Rejected(f'announced {announced} bytes; expected {file.size}')
    expected = announced if file.raw_sha256 or file.size is None else (
        file.size)
    # A bar with rate and ETA on a terminal (kB), nothing elsewhere.
    with console.Bar((expected or 0) // 1000, file.name, unit='kB') as bar:
      try:
        while chunk := resp.read1(_CHUNK):
          received += len(chunk)
          if limit is not None and received > limit:
            raise _Rejected(f'sent more than the expected {limit} bytes; '
                            'stopped reading')
          out.write(chunk)
          md5.update(chunk)
          sha256.update(chunk)
          bar.update(received // 1000 - bar.n)
      except (OSError, http.client.HTTPException) as e:
        raise _Transient(f'transfer interrupted: {one_line(e)}') from None
  if expected is not None and received < expected:
    raise _Transient(f'transfer truncated: got {received} of {expected} bytes')
  for algorithm, want, got in (('md5', file.md5, md5.hexdigest()),
                               ('sha256', file.sha256, sha256.hexdigest())):
    if want and got != want and not _same_content(file, tmp):
      raise _Rejected(f'checksum mismatch for {file.name}: expected '
                      f'{algorithm} {want}, got {got} ({received} bytes)')


def _same_content(file: RemoteFile, path: str) -> bool:
  """Whether the .gz at `path` uncompresses to `file`'s pinned bytes."""
  if not file.raw_sha256:
    return False
  digest, size = hashlib.sha256(), 0
  try:
    with gzip.open(path, 'rb') as f:
      while chunk := f.read(1 << 20):
        size += len(chunk)
        if size > file.raw_size:
          return False
        digest.update(chunk)
  except (OSError, EOFError, zlib.error):
    return False
  return digest.hexdigest() == file.raw_sha256


def _fetch_once(file: RemoteFile, url: str, directory: pathlib.Path,
                timeout: float) -> pathlib.Path:
  """One attempt from one source; never leaves a temporary file behind."""
  final = directory / file.name
  try:
    with fileio.atomic_path(final) as tmp:
      _stream(file, url, tmp, timeout)
  except OSError as e:
    raise UserError(
        f'cannot write {file.name} into {directory} '
        f'({one_line(e.strerror or e)}); expected a writable folder (set '
        f'{ENV_DATA_DIR}) or put the file there yourself from {url}') from None
  return final


def fetch(file: RemoteFile, dest_dir: PathLike) -> pathlib.Path:
  """Downloads `file` into `dest_dir` from the first source that has it.

  Raises:
    DownloadError: no source delivered the file; lists every source tried
      with its last failure.
    UserError: the folder cannot be created or written.
  """
  directory = pathlib.Path(dest_dir).expanduser()
  tried = sources(file)
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(
        f'cannot create data folder {directory} for {file.name} '
        f'({one_line(e.strerror or e)}); expected a writable folder (set '
        f'{ENV_DATA_DIR}) or put the file there yourself from '
        f'{tried[0][1]}') from None
  _remove_stale_parts(directory, file.name)
  notes, live, rounds = {}, list(tried), 0
  while live and rounds <= RETRIES:
    if rounds:
      time.sleep(BACKOFF_S * 2 ** (rounds - 1))
    rounds += 1
    for label, url in list(live):
      try:
        return _fetch_once(file, url, directory, TIMEOUT_S)
      except _Transient as e:
        notes[url] = one_line(e)
      except _Rejected as e:
        notes[url] = one_line(e)
        live.remove((label, url))
        logging.warning('skipped %s %s for %s: %s', label, url, file.name,
                        notes[url])
  reason = 'tried ' + ', '.join(f'{label} {url} ({notes[url]})'
                                for label, url in tried)
  if live:
    reason += f'; gave up after {rounds} attempts'
  raise DownloadError(fail_message([file], directory, reason), reason)


def _remove_stale_parts(directory: pathlib.Path, name: str) -> None:
  """Deletes the partial files of `name` that killed runs left behind."""
  for part in directory.glob(f'.{name}.*'):
    if not part.name.endswith('.tmp') and '.part-' not in part.name:
      continue
    try:
      if time.time() - part.stat().st_mtime > STALE_PART_S:
        part.unlink()
    except OSError:
      pass  # Another run removed or renamed it.


# ------------------------------------------------------------ dataset files


def download(info, file: 'RemoteFile | str', dest_dir: PathLike
             ) -> pathlib.Path:
  """`fetch` for a file of the dataset `info` (a `data.DatasetInfo`)."""
  if isinstance(file, str):
    file = _file_by_name(info, file)
  return fetch(file, dest_dir)


def _file_by_name(info, name: str) -> RemoteFile:
  groups = [info.files, info.idx_files or {}]
  files = [f for f in [info.classmap] if f] + [
      f for g in groups for s in g.values() for f in (s.images, s.labels)]
  for f in files:
    if f.name == name:
      return f
  raise UserError(f'{name!r} is not a file of dataset {info.name!r}; expected '
                  f'one of: {", ".join(f.name for f in files)}')


def download_all(info, files: list[RemoteFile],
                 directory: pathlib.Path) -> None:
  """Downloads `files`; a failure names every file not yet downloaded."""
  for i, file in enumerate(files):
    try:
      download(info, file, directory)
    except DownloadError as e:
      if len(files) - i == 1:
        raise
      raise DownloadError(fail_message(files[i:], directory, e.reason),
                          e.reason) from None
