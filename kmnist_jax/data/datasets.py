"""KMNIST, Kuzushiji-49, MNIST and Fashion-MNIST: registry, downloads, loading.

Typical use::

  images, labels = data.load('kmnist', 'train[:90%]')  # uint8, int32

Files live in a data root with one folder per dataset, as torchvision and
TFDS lay them out (`<root>/kmnist`, `<root>/mnist`, ...). The root is
`data_dir` if given, else env `KMNIST_JAX_DATA_DIR`, else `~/.cache/kmnist_jax`.
A `data_dir` (or env folder) without such sub-folders is one dataset's flat
folder, as before. Missing files are downloaded by `kmnist_jax.data.download`
(env `KMNIST_JAX_MIRROR` first, then the official URLs, then public copies)
and kept only with their pinned size and checksums. A file that is another
registered dataset's (same name, other bytes) is refused, naming both.
"""

import csv
import gzip
import hashlib
import io
import math
import os
import pathlib
import re
import unicodedata
import warnings
import zipfile
import zlib

import numpy as np

from kmnist_jax.data import download as _download
# Re-exported: the public names of the former single module.
from kmnist_jax.data.download import ENV_DATA_DIR, ENV_MIRROR, ENV_MIRROR_ONLY
from kmnist_jax.data.download import DownloadError, PathLike, RemoteFile
from kmnist_jax.data.download import STALE_PART_S, md5sum, source_url
from kmnist_jax.core.errors import UserError, one_line
from kmnist_jax.data.registry import DATASETS, DatasetInfo, SplitFiles
from kmnist_jax.data.registry import get_info, label
from kmnist_jax.data.splits import SPLITS, Bound, SplitSpec
from kmnist_jax.data.splits import parse_split, resolve_split

__all__ = [
    'DATASETS', 'DataWarning', 'DatasetInfo', 'DownloadError', 'RemoteFile',
    'SplitFiles', 'SPLITS', 'Bound', 'SplitSpec', 'class_map', 'download',
    'file_checksums', 'get_info', 'label', 'load', 'md5sum', 'parse_split',
    'release_id', 'resolve_data_dir', 'resolve_split', 'source_url',
]

IMAGE_SHAPE = (28, 28)


class DataWarning(UserWarning):
  """A data file differs from the registered official release."""


def resolve_data_dir(name: 'str | DatasetInfo',
                     data_dir: PathLike | None = '') -> pathlib.Path:
  """The folder of dataset `name`'s files.

  `data_dir` if non-empty, else env KMNIST_JAX_DATA_DIR, else the cache
  root `~/.cache/kmnist_jax`. A folder with a sub-folder named after any
  registered dataset is a data root: the dataset's files are in
  `<root>/<name>`. Any other folder is one dataset's flat folder (the
  layout before data roots), used as it is.
  """
  info = get_info(name)
  given = data_dir or os.environ.get(ENV_DATA_DIR, '')
  if not given:
    return pathlib.Path.home() / '.cache' / 'kmnist_jax' / info.name
  folder = pathlib.Path(given).expanduser()
  if any((folder / d).is_dir() for d in {info.name, *DATASETS}):
    return folder / info.name
  return folder


# ----------------------------------------------------------------- downloads


def download(info: 'str | DatasetInfo', file: 'RemoteFile | str',
             dest_dir: PathLike) -> pathlib.Path:
  """Downloads one file of a dataset into `dest_dir`; returns its path.

  Args:
    info: dataset name or `DatasetInfo`.
    file: a `RemoteFile` or the name of one of the dataset's files.
    dest_dir: target folder, created if needed.

  Raises:
    DownloadError: no source (mirror, official URL, public copies) delivered
      the file with its pinned size and checksums; lists every source tried.
    UserError: unknown file name; the folder cannot be created or written.
  """
  return _download.download(get_info(info), file, dest_dir)


# ------------------------------------------------------------------- loading


def _candidates(info: DatasetInfo, split: str,
                role: str) -> list[tuple[str, RemoteFile | None]]:
  """File names that can provide `role` of `split`, preferred first.

  An idx .gz may also be present un-gzipped; where the release pins its
  uncompressed bytes, that file is checked against them too.
  """
  names = []
  for group in (info.files, info.idx_files or {}):
    if split in group:
      file = getattr(group[split], role)
      names.append((file.name, file))
      if file.name.endswith('.gz'):
        names.append((file.name.removesuffix('.gz'),
                      file if file.raw_sha256 else None))
  return names


def _split_files(info: DatasetInfo, split: str, directory: pathlib.Path
                 ) -> dict[str, tuple[pathlib.Path, RemoteFile | None]]:
  """Locates (downloading if missing) the images and labels of a split."""
  if split not in info.files:
    raise UserError(f'dataset {info.name!r} has no split {split!r}; expected '
                    f'one of: {", ".join(info.files)}')
  found, missing = {}, []
  for role in ('images', 'labels'):
    for name, remote in _candidates(info, split, role):
      if (directory / name).exists():
        found[role] = (directory / name, remote)
        break
    else:
      remote = getattr(info.files[split], role)
      found[role] = (directory / remote.name, remote)
      missing.append(remote)
  if missing:
    _download.download_all(info, missing, directory)
  return found


def _check_release(info: DatasetInfo, path: pathlib.Path,
                   remote: RemoteFile | None) -> None:
  """Warns when a file differs from the registered official release."""
  if remote is None or not remote.md5:
    return
  actual = md5sum(path)
  if actual == remote.md5:
    return
  if actual in info.outdated_md5s:
    warnings.warn(
        f'{path} is {info.outdated_md5s[actual]} (md5 {actual}); the dataset '
        'authors ask users to download again: delete the file and load again '
        f'to fetch the current release (md5 {remote.md5})',
        DataWarning, stacklevel=4)
  else:
    warnings.warn(
        f'{path} has md5 {actual}, expected {remote.md5} for the official '
        f'{remote.name}; results may not match published numbers',
        DataWarning, stacklevel=4)


def _registered_owner(md5: str, raw_sha256: str | None
                      ) -> tuple[str, str] | None:
  """(dataset, file name) of the registered file with these checksums."""
  for info in DATASETS.values():
    for group in (info.files, info.idx_files or {}):
      for split in group.values():
        for f in (split.images, split.labels):
          if md5 == f.md5 or (raw_sha256 and raw_sha256 == f.raw_sha256):
            return info.name, f.name
  return None


def _verify(info: DatasetInfo, path: pathlib.Path, remote: RemoteFile | None,
            raw: bytes | None = None) -> None:
  """Refuses another dataset's file, and a file of a release that pins its
  uncompressed bytes unless it has the official .gz md5 or those bytes;
  warns where an unpinned release differs (`_check_release`)."""
  md5 = md5sum(path)
  raw_sha256 = hashlib.sha256(raw).hexdigest() if raw is not None else None
  owner = _registered_owner(md5, raw_sha256)
  if owner is not None and owner[0] != info.name:
    raise UserError(
        f'{path} is {label(owner[0])}\'s {owner[1]} (by its checksum), but '
        f'dataset {info.name!r} ({label(info)}) was asked for: the two share '
        'file names, so keep each in its own folder of a data root '
        f'(<root>/{owner[0]}, <root>/{info.name})')
  if remote is None or not remote.raw_sha256:
    _check_release(info, path, remote)
    return
  if md5 == remote.md5 or raw_sha256 == remote.raw_sha256:
    return
  got = f'md5 {md5}' + (f', uncompressed sha256 {raw_sha256}'
                        if raw_sha256 else '')
  raise UserError(
      f'{path} is not the official {info.name} {remote.name} ({got}); '
      f'expected .gz md5 {remote.md5} or uncompressed sha256 '
      f'{remote.raw_sha256} (delete it to download again)')


def _require_nonempty(path: pathlib.Path, kind: str) -> None:
  if not path.is_file():
    raise UserError(f'{path} not found; expected {kind}')
  if path.stat().st_size == 0:
    raise UserError(f'{path} is empty (0 bytes); expected {kind} (delete it '
                    'to download again)')


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                KeyError)


def _read_npz(path: pathlib.Path) -> np.ndarray:
  kind = "a .npz archive with the array 'arr_0'"
  _require_nonempty(path, kind)
  try:
    archive = np.load(path, allow_pickle=False)
  except _READ_ERRORS as e:
    raise UserError(f'{path} is not a readable .npz archive ({one_line(e)}); '
                    f'expected {kind} (delete it to download again)') from None
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise UserError(f'{path} holds a bare array, not {kind}')
  with archive:
    if 'arr_0' not in archive.files:
      raise UserError(f"{path} has no array 'arr_0' (keys: "
                      f'{", ".join(archive.files) or "none"}); expected {kind}')
    try:
      return archive['arr_0']
    except _READ_ERRORS as e:
      raise UserError(
          f"{path}: cannot read 'arr_0' ({one_line(e)}); the file looks "
          'truncated or corrupt (delete it to download again)') from None


def _read_idx_bytes(path: pathlib.Path) -> bytes:
  """The uncompressed bytes of an idx file, gzipped ('.gz') or not."""
  _require_nonempty(path, _IDX_KIND)
  try:
    if path.name.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        return f.read()
    return path.read_bytes()
  except (OSError, EOFError, zlib.error) as e:
    raise UserError(f'{path} cannot be read ({one_line(e)}); expected '
                    f'{_IDX_KIND} (delete it to download again)') from None


_IDX_KIND = 'an MNIST idx file of unsigned bytes (magic 0x0801 or 0x0803)'


def _parse_idx(path: pathlib.Path, raw: bytes) -> np.ndarray:
  kind = _IDX_KIND
  if len(raw) < 4 or raw[:3] != b'\x00\x00\x08' or raw[3] not in (1, 3):
    raise UserError(
        f'{path} has a bad header {raw[:4].hex()!r}; expected {kind}')
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise UserError(f'{path} is truncated inside its header; expected {kind}')
  dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big')
               for i in range(ndim))
  if len(raw) - header != math.prod(dims):
    raise UserError(
        f'{path} holds {len(raw) - header} data bytes; expected '
        f'{math.prod(dims)} for shape {dims} (truncated or corrupt file)')
  return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()


def _read_verified(info: DatasetInfo, path: pathlib.Path,
                   remote: RemoteFile | None) -> np.ndarray:
  """The array in `path` (.npz or idx), once `_verify` accepts the file."""
  if path.suffix == '.npz':
    _verify(info, path, remote)
    return _read_npz(path)
  raw = _read_idx_bytes(path)
  _verify(info, path, remote, raw)
  return _parse_idx(path, raw)


def _validate(images: np.ndarray, labels: np.ndarray, image_path: pathlib.Path,
              label_path: pathlib.Path, num_classes: int) -> None:
  if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
    raise UserError(f'{image_path}: expected images of shape (N, 28, 28), got '
                    f'{images.shape}')
  if images.dtype != np.uint8:
    raise UserError(f'{image_path}: expected images of dtype uint8, got '
                    f'{images.dtype}')
  if labels.ndim != 1:
    raise UserError(f'{label_path}: expected labels of shape (N,), got '
                    f'{labels.shape}')
  if not np.issubdtype(labels.dtype, np.integer):
    raise UserError(f'{label_path}: expected integer labels, got dtype '
                    f'{labels.dtype}')
  if len(images) != len(labels):
    raise UserError(f'{image_path} has {len(images)} images but {label_path} '
                    f'has {len(labels)} labels; expected equal lengths')
  if labels.size:
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
      raise UserError(f'{label_path}: expected labels in [0, {num_classes}), '
                      f'found values from {low} to {high}')


def load(name: 'str | DatasetInfo', split: str,
         data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Loads a split, downloading and verifying missing files first.

  Args:
    name: 'kmnist', 'k49' or a `DatasetInfo`.
    split: tfds-style split, e.g. 'train', 'train[:90%]', 'test[8000:]'.
    data_dir: folder with the files; None or '' resolves as
      `resolve_data_dir` does.

  Returns:
    (images, labels): uint8 (N, 28, 28) and int32 (N,).

  Raises:
    UserError: bad split, missing/invalid files or failed downloads; the
      message names the file or split and what was expected.
  """
  info = get_info(name)
  spec = parse_split(split)
  directory = resolve_data_dir(info, data_dir)
  found = _split_files(info, spec.base, directory)
  (image_path, image_remote), (label_path, label_remote) = (
      found['images'], found['labels'])
  images = _read_verified(info, image_path, image_remote)
  labels = _read_verified(info, label_path, label_remote)
  _validate(images, labels, image_path, label_path, info.num_classes)
  rows = resolve_split(split, len(labels))
  if rows.stop - rows.start < len(labels):
    images, labels = images[rows].copy(), labels[rows]
  return images, labels.astype(np.int32)


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """`load` of `split` of `config`'s dataset and data folder."""
  return load(config.dataset, split, config.data_dir or None)


def load_indexed(config, split: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`load_split`, with the indices of the examples in their base split
  (`test[8000:]`: 8000, 8001, ...)."""
  images, labels = load_split(config, parse_split(split).base)
  rows = resolve_split(split, len(labels))
  return (images[rows], labels[rows],
          np.arange(rows.start, rows.stop, dtype=np.int64))


def file_checksums(name: 'str | DatasetInfo', split: str,
                   data_dir: PathLike | None = None) -> dict[str, str]:
  """md5 per file name of the files `load(name, split, data_dir)` reads."""
  info = get_info(name)
  directory = resolve_data_dir(info, data_dir)
  found = _split_files(info, parse_split(split).base, directory)
  return {path.name: md5sum(path) for path, _ in found.values()}


def release_id(name: 'str | DatasetInfo',
               data_dir: PathLike | None = None) -> str:
  """Short id of the data release: the first 8 hex digits of the md5 of the
  test images (of their uncompressed bytes for an idx file, so that a
  recompressed copy has the release's id)."""
  info = get_info(name)
  directory = resolve_data_dir(info, data_dir)
  path, _ = _split_files(info, 'test', directory)['images']
  if path.suffix == '.npz':
    return md5sum(path)[:8]
  return hashlib.md5(_read_idx_bytes(path)).hexdigest()[:8]


# ----------------------------------------------------------------- class map

_CODEPOINT_RE = re.compile(r'U\+([0-9A-Fa-f]{4,6})')


def _read_classmap(path: pathlib.Path,
                   num_classes: int) -> list[tuple[int, int, str]]:
  kind = f'a CSV with header index,codepoint,char and {num_classes} rows'
  _require_nonempty(path, kind)
  try:
    text = path.read_text(encoding='utf-8-sig')
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f'{path} cannot be read ({one_line(e)}); expected {kind}'
                    ) from None
  rows = [row for row in csv.reader(io.StringIO(text)) if row]
  if not rows or [c.strip() for c in rows[0]] != ['index', 'codepoint', 'char']:
    raise UserError(f'{path}: expected header index,codepoint,char, got '
                    f'{",".join(rows[0]) if rows else "nothing"!r}')
  if len(rows) - 1 != num_classes:
    raise UserError(f'{path}: expected {num_classes} class rows, got '
                    f'{len(rows) - 1}')
  classes = []
  for i, row in enumerate(rows[1:]):
    where = f'{path} row {i + 1}'
    if len(row) != 3:
      raise UserError(f'{where}: expected 3 columns index,codepoint,char, got '
                      f'{",".join(row)!r}')
    index, codepoint, char = (c.strip() for c in row)
    if index != str(i):
      raise UserError(f'{where}: expected index {i}, got {index!r}')
    match = _CODEPOINT_RE.fullmatch(codepoint)
    code = int(match.group(1), 16) if match else -1
    if not 0 <= code <= 0x10FFFF:
      raise UserError(f'{where}: expected a codepoint like U+304A, got '
                      f'{codepoint!r}')
    if unicodedata.category(chr(code)) in ('Cc', 'Cf', 'Cs', 'Zl', 'Zp'):
      raise UserError(f'{where}: {codepoint} is a control or format '
                      'character; expected a printable character')
    if char != chr(code):
      raise UserError(f'{where}: character {char!r} does not match '
                      f'{codepoint} (expected {chr(code)!r})')
    classes.append((i, code, char))
  return classes


def codepoint_text(code: int) -> str:
  """'U+304A' for a class's codepoint; '' for a multi-character label (-1)."""
  return f'U+{code:04X}' if code >= 0 else ''


def class_map(name: 'str | DatasetInfo',
              data_dir: PathLike | None = None) -> list[tuple[int, int, str]]:
  """(index, codepoint, char) per class, from the dataset's classmap CSV.

  A CSV present in the data folder is read and validated. Without one, the
  built-in table is used where the dataset has one (KMNIST), else the CSV is
  downloaded. A dataset without a class-map CSV (MNIST, Fashion-MNIST) has
  its `class_names`; a name longer than one character has codepoint -1.
  """
  info = get_info(name)
  if info.classmap is None:
    return [(i, ord(n) if len(n) == 1 else -1, n)
            for i, n in enumerate(info.class_names)]
  directory = resolve_data_dir(info, data_dir)
  path = directory / info.classmap.name
  if not path.exists():
    if len(info.fallback_chars) == info.num_classes:
      return [(i, ord(c), c) for i, c in enumerate(info.fallback_chars)]
    _download.download_all(info, [info.classmap], directory)
  return _read_classmap(path, info.num_classes)
