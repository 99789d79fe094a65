"""Verified downloads of dataset files from a list of sources.

A file is tried from each source in turn: `$KMNIST_JAX_MIRROR` (a base URL
with the same file names) when set, the official URL, then the public copies
in `PUBLIC_COPIES`. It streams to a temporary file beside its final name and
gets that name only once its size, md5 and sha256 match the pinned values.
A source that answers with an HTTP client error, too many bytes or other bytes
is skipped with a warning; network failures, server errors and truncated
transfers are retried, `RETRIES` times, after a growing pause.
"""

import dataclasses
import hashlib
import http.client
import os
import pathlib
import sys
import time
import urllib.error
import urllib.request

from absl import logging

from kmnist_jax import fileio
from kmnist_jax.errors import UserError, one_line

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
}

# Pinned (size, md5, sha256) of every official file. Sizes and md5s: the
# git-annex keys and md5sums of datasets-mila/datasets--kmnist (a DataLad copy
# of all 14 files; its md5s equal those of rois-codh/kmnist's README, the
# torchvision KMNIST class and the local copies). sha256s, by source:
#  [local] computed from the official files in this project's offline data
#    folder (their md5s match);
#  [tv] pytorch/vision torchvision/prototype/datasets/_builtin/mnist.py
#    (KMNIST._CHECKSUMS) and ankane/torchvision-ruby
#    lib/torchvision/datasets/kmnist.rb, which agree;
#  [pin] the PINNED_SHA256 tables of two public download scripts found by
#    code search (repository not named by the search index; their sha256 of
#    the [local] files and of k49_classmap.csv equal ours);
#  [csv] k49_classmap.csv rebuilt from data.DATASETS['k49'].fallback_chars
#    in kmnist_classmap.csv's format: 697 bytes with the pinned md5.
# No sha256 of k49-test-imgs.npz or k49-test-labels.npz is published anywhere
# we could find: those two are checked by size and md5 only.
PINNED: dict[str, tuple[int, str, str | None]] = {
    'kmnist-train-imgs.npz': (  # [pin]
        18_384_171, 'a183fbc01ed9a345513b145673d3d0bb',
        '11d69e17c8fd294905864aef177fd10c2185e5a3655f4da03d72ea5a64c17a72'),
    'kmnist-train-labels.npz': (  # [local]
        29_700, 'b0e1d240e8afec72b50437fc3bc5908a',
        'a325c877035602cb9b9ba54f4194a2a1b5f718026a463db5b5e0cdc124c03720'),
    'kmnist-test-imgs.npz': (  # [local]
        3_079_479, 'dace6de62ca8b90843cc45366337d02e',
        '692d824896bec8f3c357ebf7a0fe904ed67ac632ce953d0b58f7fbef7bb27d87'),
    'kmnist-test-labels.npz': (  # [local]
        5_304, '3ae489a79983d0fe386152684e3b5412',
        '660f13a4705431ea2a6391c41ecbe384cd0d932c595a101ec4f3b8989e785046'),
    'kmnist_classmap.csv': (  # [local]
        151, '899202f6e8dc29a321ac210a03d0f2f1',
        '88ba4be4bd52d986ae100b425d5c28437c81829c87800c5832a2253edc758374'),
    'train-images-idx3-ubyte.gz': (  # [tv]
        18_165_135, 'bdb82020997e1d708af4cf47b453dcf7',
        '51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4'),
    'train-labels-idx1-ubyte.gz': (  # [tv]
        29_497, 'e144d726b3acfaa3e44228e80efcd344',
        'e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17'),
    't10k-images-idx3-ubyte.gz': (  # [tv]
        3_041_136, '5c965bf0a639b31b8f53240b1b52f4d7',
        'edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5'),
    't10k-labels-idx1-ubyte.gz': (  # [tv]
        5_120, '7320c461ea6c1c855c0b718fb2a4b134',
        '20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c'),
    'k49-train-imgs.npz': (  # [pin]
        66_117_696, '7ac088b20481cf51dcd01ceaab89d821',
        '1c42adc463ed8efe598cf002f6ecafbca6d8c38f0551f7a35e0b23755fca1c8d'),
    'k49-train-labels.npz': (  # [pin]
        164_485, '44a8e1b893f81e63ff38d73cad420f7a',
        'fbfef4750ce9aa70b6072f0bca7daa9e80e2d79b379d5ae923265a63396260e4'),
    'k49-test-imgs.npz': (10_971_201, 'd352e201d846ce6b94f42c990966f374', None),
    'k49-test-labels.npz': (27_450, '4da6f7a62e67a832d5eb1bd85c5ee448', None),
    'k49_classmap.csv': (  # [csv], [pin]
        697, 'f7d0d0391f68bdf0fe4cf160ceb85753',
        '95f5a2cfbfba1721f566059cf77c22808898b63044a5f9a08de9d8a2950eed84'),
}

PathLike = str | os.PathLike[str]


class DownloadError(UserError):
  """Files could not be downloaded from any source."""

  def __init__(self, message: str, reason: str = ''):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """A downloadable file at its official `url`; `None` where not known."""
  name: str
  url: str
  size: int | None = None
  md5: str | None = None
  sha256: str | None = None


def pinned(base: str, name: str) -> RemoteFile:
  """The official file `base + name` with its pinned size and checksums."""
  return RemoteFile(name, base + name, *PINNED[name])


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
  found.append(('official', file.url))
  folder = file.url[:len(file.url) - len(file.name)]
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


class _Progress:
  """A one-line progress display, shown only when stderr is a terminal."""

  def __init__(self, name: str, total: int | None):
    self.name, self.total, self.last = name, total, 0.0
    self.enabled = sys.stderr.isatty()

  def update(self, done: int, final: bool = False) -> None:
    now = time.monotonic()
    if not self.enabled or (not final and now - self.last < 0.2):
      return
    self.last = now
    total = f'/{self.total / 1e6:.1f}' if self.total else ''
    end = '\n' if final else ''
    sys.stderr.write(f'\r{self.name}: {done / 1e6:.1f}{total} MB{end}')
    sys.stderr.flush()


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


def _stream(file: RemoteFile, url: str, tmp: str, timeout: float) -> None:
  """Writes `url` to `tmp`; raises unless it has the pinned size and hashes."""
  md5, sha256, received = hashlib.md5(), hashlib.sha256(), 0
  with open(tmp, 'wb') as out, _open(url, timeout) as resp:
    length = resp.headers.get('Content-Length')
    announced = int(length) if length and length.isdigit() else None
    if None not in (announced, file.size) and announced != file.size:
      raise _Rejected(f'announced {announced} bytes; expected {file.size}')
    expected = file.size if file.size is not None else announced
    progress = _Progress(file.name, expected)
    try:
      while chunk := resp.read1(_CHUNK):
        received += len(chunk)
        if file.size is not None and received > file.size:
          raise _Rejected(f'sent more than the expected {file.size} bytes; '
                          'stopped reading')
        out.write(chunk)
        md5.update(chunk)
        sha256.update(chunk)
        progress.update(received)
    except (OSError, http.client.HTTPException) as e:
      raise _Transient(f'transfer interrupted: {one_line(e)}') from None
    progress.update(received, final=True)
  if expected is not None and received < expected:
    raise _Transient(f'transfer truncated: got {received} of {expected} bytes')
  for algorithm, want, got in (('md5', file.md5, md5.hexdigest()),
                               ('sha256', file.sha256, sha256.hexdigest())):
    if want and got != want:
      raise _Rejected(f'checksum mismatch for {file.name}: expected '
                      f'{algorithm} {want}, got {got} ({received} bytes)')


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
  files = [info.classmap] + [f for g in groups for s in g.values()
                             for f in (s.images, s.labels)]
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
