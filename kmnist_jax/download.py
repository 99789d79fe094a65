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
import gzip
import hashlib
import http.client
import os
import pathlib
import sys
import time
import urllib.error
import urllib.request
import zlib

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
    # MNIST: torchvision's `MNIST.mirrors` in its order (the PyTorch S3 copy,
    # then LeCun's page), then TFDS's (tensorflow_datasets image_classification
    # mnist.py `_MNIST_URL`, the CVDF bucket).
    'https://ossci-datasets.s3.amazonaws.com/mnist/':
        ('http://yann.lecun.com/exdb/mnist/',
         'https://storage.googleapis.com/cvdf-datasets/mnist/'),
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

# MNIST and Fashion-MNIST share their four file names (and with KMNIST's idx
# release), so they are pinned per dataset: (size, md5, sha256) of the
# official .gz, then (size, sha256) of its uncompressed bytes. .gz sizes and
# sha256s: TFDS url_checksums (mnist.txt, fashion_mnist.txt), equal to
# torchvision's prototype `_CHECKSUMS`; .gz md5s: torchvision's `resources`;
# uncompressed: computed from the official bytes (their md5s are the ones
# that circulate for the releases). A recompressed copy passes by the latter.
# The first source of a folder that is not the dataset's own site.
FIRST_SOURCE_LABELS = {
    'https://ossci-datasets.s3.amazonaws.com/mnist/': 'torchvision copy',
}

PINNED_IDX: dict[str, dict[str, tuple[int, str, str, int, str]]] = {
    'mnist': {
        'train-images-idx3-ubyte.gz': (
            9_912_422, 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
            '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
            47_040_016,
            'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db'),
        'train-labels-idx1-ubyte.gz': (
            28_881, 'd53e105ee54ea40749a09fcbcd1e9432',
            '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c',
            60_008,
            '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5'),
        't10k-images-idx3-ubyte.gz': (
            1_648_877, '9fb629c4189551a2d022fa330f9573f3',
            '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
            7_840_016,
            '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7'),
        't10k-labels-idx1-ubyte.gz': (
            4_542, 'ec29112dd5afa0611ce80d1b7f02629c',
            'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6',
            10_008,
            'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2'),
    },
    'fashion_mnist': {
        'train-images-idx3-ubyte.gz': (
            26_421_880, '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
            '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
            47_040_016,
            'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888'),
        'train-labels-idx1-ubyte.gz': (
            29_515, '25c81989df183df01b3e8a0aad5dffbe',
            'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
            60_008,
            'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9'),
        't10k-images-idx3-ubyte.gz': (
            4_422_102, 'bef4ecab320f06d8554ea6380940ec79',
            '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
            7_840_016,
            '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b'),
        't10k-labels-idx1-ubyte.gz': (
            5_148, 'bb300cfdad3c16e7a12a480ee83cd310',
            '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
            10_008,
            '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34'),
    },
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
  # An idx .gz whose uncompressed bytes are pinned: a recompressed copy with
  # these bytes is the same release.
  raw_size: int | None = None
  raw_sha256: str | None = None


def pinned(base: str, name: str, dataset: str = '') -> RemoteFile:
  """The official file `base + name` with its pinned size and checksums
  (from `PINNED_IDX[dataset]` where the dataset has its own table)."""
  if dataset in PINNED_IDX:
    return RemoteFile(name, base + name, *PINNED_IDX[dataset][name])
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
    progress = _Progress(file.name, expected)
    try:
      while chunk := resp.read1(_CHUNK):
        received += len(chunk)
        if limit is not None and received > limit:
          raise _Rejected(f'sent more than the expected {limit} bytes; '
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
