"""Tests for kmnist_jax.data.datasets and kmnist_jax.data.splits."""

import dataclasses
import gzip
import hashlib
import os
import pathlib
import shutil
import socket
import threading
import time
import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from kmnist_jax.data import datasets as data
from kmnist_jax.data import download
from kmnist_jax.core.errors import UserError

from mirror_server import MirrorServer  # pylint: disable=g-bad-import-order

_PUBLIC_COPIES = dict(download.PUBLIC_COPIES)  # before tests replace it

REAL_MD5 = {
    'kmnist-test-imgs.npz': 'dace6de62ca8b90843cc45366337d02e',
    'kmnist-test-labels.npz': '3ae489a79983d0fe386152684e3b5412',
    'kmnist-train-labels.npz': 'b0e1d240e8afec72b50437fc3bc5908a',
    'kmnist_classmap.csv': '899202f6e8dc29a321ac210a03d0f2f1',
}
LEGACY_MD5 = 'c8fe4d39f842711ac6cc8c1b4be5ee21'
_IMAGES = 'kmnist-test-imgs.npz'
_LABELS = 'kmnist-test-labels.npz'


def _md5(path: pathlib.Path) -> str:
  return hashlib.md5(path.read_bytes()).hexdigest()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _fast_offline_downloads(monkeypatch):
  """No real network in tests (the mirror only, on a closed local port, no
  public copies), no backoff waits, short timeouts."""
  monkeypatch.setattr(download, 'BACKOFF_S', 0.0)
  monkeypatch.setattr(download, 'TIMEOUT_S', 5.0)
  monkeypatch.setattr(download, 'PUBLIC_COPIES', {})
  monkeypatch.setenv(data.ENV_MIRROR, f'http://127.0.0.1:{_free_port()}')
  monkeypatch.setenv(data.ENV_MIRROR_ONLY, '1')


def _local_info(directory: pathlib.Path, checksums: bool = True,
                name: str = 'synth', official: str = '',
                size: int | None = None) -> data.DatasetInfo:
  """A registry entry for the files in `directory` (as written by conftest),
  officially at `official` (default: a closed local port). `size` replaces
  every pinned size."""
  official = official or f'http://127.0.0.1:{_free_port()}/official/'

  def remote(file_name: str) -> data.RemoteFile:
    path = directory / file_name
    if not checksums or not path.exists():
      return data.RemoteFile(file_name, official + file_name)
    blob = path.read_bytes()
    return data.RemoteFile(file_name, official + file_name,
                           len(blob) if size is None else size,
                           hashlib.md5(blob).hexdigest(),
                           hashlib.sha256(blob).hexdigest())

  kmnist = data.DATASETS['kmnist']
  files, idx_files = ({
      split: data.SplitFiles(remote(f.images.name), remote(f.labels.name))
      for split, f in groups.items()
  } for groups in (kmnist.files, kmnist.idx_files))
  return dataclasses.replace(kmnist, name=name, files=files,
                             classmap=remote('kmnist_classmap.csv'),
                             outdated_md5s={}, idx_files=idx_files)


@pytest.fixture
def serve(monkeypatch):
  """serve(root) starts a server for `root` and points the mirror at it."""
  servers = []

  def start(root: pathlib.Path) -> MirrorServer:
    server = MirrorServer(root)
    servers.append(server)
    monkeypatch.setenv(data.ENV_MIRROR, server.url)
    return server

  yield start
  for server in servers:
    server.close()


def _leftovers(directory: pathlib.Path) -> list[str]:
  return sorted(p.name for p in directory.glob('.*.tmp'))


# ------------------------------------------------------------------ registry


def test_registry_entries():
  kmnist, k49 = data.get_info('kmnist'), data.get_info('k49')
  assert (kmnist.num_classes, kmnist.metric) == (10, 'accuracy')
  assert (k49.num_classes, k49.metric) == (49, 'balanced_accuracy')
  assert kmnist.files['test'].images.url == (
      'http://codh.rois.ac.jp/kmnist/dataset/kmnist/kmnist-test-imgs.npz')
  assert k49.files['train'].labels.url == (
      'http://codh.rois.ac.jp/kmnist/dataset/k49/k49-train-labels.npz')
  assert k49.classmap.url == (
      'http://codh.rois.ac.jp/kmnist/dataset/k49/k49_classmap.csv')
  registered = {f.name: f.md5 for s in kmnist.files.values()
                for f in (s.images, s.labels)}
  assert registered['kmnist-train-imgs.npz'] == (
      'a183fbc01ed9a345513b145673d3d0bb')
  for name, md5 in REAL_MD5.items():
    if name != 'kmnist_classmap.csv':
      assert registered[name] == md5
  idx = kmnist.idx_files['test']
  assert (idx.images.name, idx.images.md5) == (
      't10k-images-idx3-ubyte.gz', '5c965bf0a639b31b8f53240b1b52f4d7')
  assert data.get_info(kmnist) is kmnist


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(UserError, match=r"unknown dataset 'mnsit'.*kmnist, k49, "
                     "mnist, fashion_mnist"):
    data.get_info('mnsit')


def test_registered_checksums_match_real_files(real_data_dir):
  info = data.get_info('kmnist')
  files = [info.classmap] + [f for s in info.files.values()
                             for f in (s.images, s.labels)]
  checked = 0
  for file in files:
    path = real_data_dir / file.name
    if not path.exists():
      continue
    blob = path.read_bytes()
    assert file.size == len(blob), file.name
    assert file.md5 == hashlib.md5(blob).hexdigest(), file.name
    assert file.sha256 == hashlib.sha256(blob).hexdigest(), file.name
    checked += 1
  assert checked >= 3


def test_resolve_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
  assert data.resolve_data_dir('k49') == (
      tmp_path / 'home' / '.cache' / 'kmnist_jax' / 'k49')
  monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path / 'env'))
  assert data.resolve_data_dir('kmnist', '') == tmp_path / 'env'
  assert data.resolve_data_dir('kmnist', None) == tmp_path / 'env'
  assert data.resolve_data_dir('kmnist', tmp_path / 'x') == tmp_path / 'x'


def test_every_file_has_pinned_size_md5_and_sha256():
  no_sha256 = set()
  for info in data.DATASETS.values():
    groups = [info.files, info.idx_files or {}]
    files = [f for f in [info.classmap] if f] + [
        f for g in groups for split in g.values()
        for f in (split.images, split.labels)]
    for file in files:
      assert file.size and file.size > 0, file.name
      if info.name in ('mnist', 'fashion_mnist'):  # and its uncompressed bytes
        assert file.raw_size > file.size and len(file.raw_sha256) == 64
      assert len(file.md5 or '') == 32, file.name
      if file.sha256 is None:
        no_sha256.add(file.name)
      else:
        assert len(file.sha256) == 64, file.name
  # Published nowhere we could find: size and md5 only.
  assert no_sha256 == {'k49-test-imgs.npz', 'k49-test-labels.npz'}
  idx = data.get_info('kmnist').idx_files['test'].images
  assert (idx.size, idx.sha256) == (
      3_041_136,
      'edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5')
  assert data.get_info('k49').classmap.size == 697


def test_sources_in_order(monkeypatch):
  monkeypatch.setattr(download, 'PUBLIC_COPIES', _PUBLIC_COPIES)
  monkeypatch.delenv(data.ENV_MIRROR_ONLY)
  monkeypatch.setenv(data.ENV_MIRROR, 'http://m.test/k/')
  kmnist, k49 = data.get_info('kmnist'), data.get_info('k49')
  assert download.sources(kmnist.files['train'].images) == [
      ('$KMNIST_JAX_MIRROR', 'http://m.test/k/kmnist-train-imgs.npz'),
      ('official', 'http://codh.rois.ac.jp/kmnist/dataset/kmnist/'
                   'kmnist-train-imgs.npz'),
      ('public copy', 'https://codh.rois.ac.jp/kmnist/dataset/kmnist/'
                      'kmnist-train-imgs.npz')]
  assert [label for label, _ in download.sources(k49.classmap)] == [
      '$KMNIST_JAX_MIRROR', 'official']
  monkeypatch.setenv(data.ENV_MIRROR_ONLY, '1')
  assert download.sources(k49.classmap) == [
      ('$KMNIST_JAX_MIRROR', 'http://m.test/k/k49_classmap.csv')]
  monkeypatch.delenv(data.ENV_MIRROR)
  assert [label for label, _ in download.sources(k49.classmap)] == [
      'official']


# ----------------------------------------------------------------- class map


def test_k49_builtin_class_map_is_the_official_csv(tmp_path):
  classes = data.class_map('k49', tmp_path)  # no CSV, nothing downloaded
  assert len(classes) == 49 and list(tmp_path.iterdir()) == []
  assert classes[0] == (0, 0x3042, 'あ') and classes[48] == (48, 0x309D, 'ゝ')
  assert classes[44:47] == [(44, 0x3090, 'ゐ'), (45, 0x3091, 'ゑ'),
                            (46, 0x3092, 'を')]
  # Written like kmnist_classmap.csv, the table is the pinned official CSV.
  text = 'index,codepoint,char\n' + ''.join(
      f'{i},U+{code:04X},{char}\n' for i, code, char in classes)
  blob = text.encode('utf-8')
  pinned = data.get_info('k49').classmap
  assert len(blob) == pinned.size
  assert hashlib.md5(blob).hexdigest() == pinned.md5
  assert hashlib.sha256(blob).hexdigest() == pinned.sha256
  (tmp_path / 'k49_classmap.csv').write_bytes(blob)
  assert data.class_map('k49', tmp_path) == classes


def test_builtin_class_map_matches_real_csv(real_data_dir, tmp_path):
  real = data.class_map('kmnist', real_data_dir)
  assert data.class_map('kmnist', tmp_path) == real  # built-in, no CSV
  assert real[0] == (0, 0x304A, 'お')
  assert ''.join(c for _, _, c in real) == 'おきすつなはまやれを'


def test_class_map_reads_csv(synthetic_data_dir):
  classes = data.class_map('kmnist', synthetic_data_dir)
  assert [i for i, _, _ in classes] == list(range(10))
  assert classes[9] == (9, 0x3092, 'を')


@pytest.mark.parametrize('text, message', [
    ('idx,cp,char\n0,U+304A,お\n', 'expected header index,codepoint,char'),
    ('index,codepoint,char\n0,U+304A,お\n', 'expected 10 class rows, got 1'),
    ('', 'is empty'),
])
def test_class_map_errors(tmp_path, text, message):
  (tmp_path / 'kmnist_classmap.csv').write_text(text, encoding='utf-8')
  with pytest.raises(UserError, match=message) as error:
    data.class_map('kmnist', tmp_path)
  assert 'kmnist_classmap.csv' in str(error.value)


@pytest.mark.parametrize('row, message', [
    ('5,U+304A,お', 'expected index 0'),
    ('0,304A,お', 'expected a codepoint like U\\+304A'),
    ('0,U+304A,き', 'does not match U\\+304A'),
    ('0,U+304A', 'expected 3 columns'),
])
def test_class_map_row_errors(synthetic_data_dir, row, message):
  path = synthetic_data_dir / 'kmnist_classmap.csv'
  lines = path.read_text(encoding='utf-8').splitlines()
  path.write_text('\n'.join([lines[0], row] + lines[2:]), encoding='utf-8')
  with pytest.raises(UserError, match=message) as error:
    data.class_map('kmnist', synthetic_data_dir)
  assert 'kmnist_classmap.csv row 1' in str(error.value)


# -------------------------------------------------------------------- splits


@pytest.mark.parametrize('split, n, expected', [
    ('train', 60000, (0, 60000)),
    ('test', 10000, (0, 10000)),
    ('train[:90%]', 60000, (0, 54000)),
    ('train[90%:]', 60000, (54000, 60000)),
    ('train[54000:]', 60000, (54000, 60000)),
    ('test[:8000]', 10000, (0, 8000)),
    ('test[8000:]', 10000, (8000, 10000)),
    ('test[10%:20%]', 10000, (1000, 2000)),
    ('test[-2000:]', 10000, (8000, 10000)),
    ('test[:-10%]', 10000, (0, 9000)),
    ('test[:]', 10, (0, 10)),
    ('test[:50%]', 7, (0, 4)),  # 3.5 rounds to even, as tfds
    ('test[:50%]', 5, (0, 2)),  # 2.5 rounds to even
    ('test[:33%]', 10, (0, 3)),
    ('test[:100%]', 10, (0, 10)),
    ('test[-100%:]', 10, (0, 10)),
])
def test_resolve_split(split, n, expected):
  assert data.resolve_split(split, n) == slice(*expected)


@pytest.mark.parametrize('split, n, message', [
    ('', 10, 'malformed split'),
    ('train[', 10, 'malformed split'),
    ('train[:]x', 10, 'malformed split'),
    ('train[1.5:]', 10, 'malformed split'),
    ('train[--1:]', 10, 'malformed split'),
    (' train', 10, 'malformed split'),
    ('train[5]', 10, 'malformed split'),
    ('val', 10, "unknown split 'val'"),
    ('TRAIN[:5]', 10, "unknown split 'TRAIN'"),
    ('train[:101%]', 10, 'between -100% and 100%'),
    ('train[70000:]', 60000, 'bound 70000 is out of range'),
    ('test[:-11]', 10, 'bound -11 is out of range'),
    ('test[5:4]', 10, 'selects no examples'),
    ('test[:0]', 10, 'selects no examples'),
    ('test[1%:2%]', 10, 'selects no examples'),
])
def test_bad_splits(split, n, message):
  with pytest.raises(UserError, match=message) as error:
    data.resolve_split(split, n)
  assert repr(split) in str(error.value)
  assert '\n' not in str(error.value)


_BOUND = st.one_of(
    st.none(),
    st.integers(-130, 130).map(lambda v: f'{v}%'),
    st.integers(-200, 200).map(str))


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text(max_size=30))
def test_parse_split_any_text(text):
  try:
    spec = data.parse_split(text)
  except UserError as error:
    assert '\n' not in str(error)
  else:
    assert spec.base in data.SPLITS


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.sampled_from(['train', 'test']), _BOUND, _BOUND,
                  st.integers(1, 150))
def test_resolve_split_matches_python_slicing(base, start, stop, n):
  split = f'{base}[{start or ""}:{stop or ""}]'
  try:
    rows = data.resolve_split(split, n)
  except UserError as error:
    assert split in str(error)
    return
  assert 0 <= rows.start < rows.stop <= n
  if not (start or '').endswith('%') and not (stop or '').endswith('%'):
    expected = range(n)[slice(*(None if b is None else int(b)
                                for b in (start, stop)))]
    assert range(n)[rows] == expected


# ------------------------------------------------------------------ download


def test_download_and_load(serve, synthetic_data_dir, tmp_path, capsys):
  info = _local_info(synthetic_data_dir)
  server = serve(synthetic_data_dir)
  target = tmp_path / 'new' / 'dir'
  images, labels = data.load(info, 'test[10:30]', target)
  want = np.load(synthetic_data_dir / 'kmnist-test-imgs.npz')['arr_0']
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  np.testing.assert_array_equal(images, want[10:30])
  np.testing.assert_array_equal(labels, np.arange(10, 30) % 10)
  assert sorted(server.log) == [_IMAGES, _LABELS]
  assert sorted(p.name for p in target.iterdir()) == sorted(server.log)
  assert capsys.readouterr().err == ''  # no progress line without a terminal
  data.load(info, 'test', target)  # present now: no new request
  assert len(server.log) == 2
  assert data.file_checksums(info, 'test', target) == {
      f.name: f.md5 for f in (info.files['test'].images,
                              info.files['test'].labels)}


def test_checksum_mismatch(serve, synthetic_data_dir, tmp_path):
  dest = tmp_path / 'dest'
  info = _local_info(synthetic_data_dir)
  server = serve(synthetic_data_dir)
  server.plan['kmnist-test-labels.npz'] = ['wrong']
  source = synthetic_data_dir / 'kmnist-test-labels.npz'
  bad_md5 = hashlib.md5(bytes(b ^ 0xFF for b in source.read_bytes())
                        ).hexdigest()
  with pytest.raises(UserError) as error:
    data.download(info, 'kmnist-test-labels.npz', dest)
  message = str(error.value)
  assert 'checksum mismatch for kmnist-test-labels.npz' in message
  assert _md5(source) in message and bad_md5 in message
  assert list(dest.iterdir()) == []
  assert server.log == ['kmnist-test-labels.npz']  # not retried


def test_truncated_transfer_is_retried(serve, synthetic_data_dir, tmp_path):
  dest = tmp_path / 'dest'
  info = _local_info(synthetic_data_dir)
  server = serve(synthetic_data_dir)
  name = 'kmnist-test-imgs.npz'
  server.plan[name] = ['truncate', 'truncate']
  path = data.download(info, name, dest)
  assert path == dest / name
  assert _md5(path) == _md5(synthetic_data_dir / name)
  assert server.log == [name] * 3
  assert _leftovers(dest) == []


def test_truncated_transfer_gives_up(serve, synthetic_data_dir, tmp_path):
  dest = tmp_path / 'dest'
  info = _local_info(synthetic_data_dir)
  server = serve(synthetic_data_dir)
  name = 'kmnist-test-imgs.npz'
  server.plan[name] = ['truncate'] * (download.RETRIES + 1)
  with pytest.raises(data.DownloadError, match='transfer truncated') as error:
    data.download(info, name, dest)
  assert f'{server.url}/{name}' in str(error.value)
  assert str(dest) in str(error.value)
  assert len(server.log) == download.RETRIES + 1
  assert list(dest.iterdir()) == []


def test_http_500_then_success(serve, synthetic_data_dir, tmp_path):
  dest = tmp_path / 'dest'
  info = _local_info(synthetic_data_dir)
  server = serve(synthetic_data_dir)
  server.plan['kmnist-test-labels.npz'] = ['500']
  _, labels = data.load(info, 'test', dest)
  assert len(labels) == 40
  assert server.log.count('kmnist-test-labels.npz') == 2


def test_http_404_is_not_retried(serve, synthetic_data_dir, tmp_path):
  info = _local_info(synthetic_data_dir)
  empty = tmp_path / 'served'
  empty.mkdir()
  server = serve(empty)
  with pytest.raises(UserError, match='HTTP 404') as error:
    data.download(info, 'kmnist-test-imgs.npz', tmp_path / 'dest')
  assert 'kmnist-test-imgs.npz' in str(error.value)
  assert server.log == ['kmnist-test-imgs.npz']


def test_server_down_names_files_urls_and_folder(monkeypatch,
                                                 synthetic_data_dir, tmp_path):
  dest = tmp_path / 'dest'
  info = _local_info(synthetic_data_dir)
  host = f'http://127.0.0.1:{_free_port()}'
  mirror = f'{host}/base/'
  monkeypatch.setenv(data.ENV_MIRROR, mirror)
  started = time.monotonic()
  with pytest.raises(data.DownloadError) as error:
    data.load(info, 'train[:10%]', dest)
  message = str(error.value)
  assert '\n' not in message
  for name in ('kmnist-train-imgs.npz', 'kmnist-train-labels.npz'):
    assert name in message
    assert f'{host}/base/{name}' in message
  assert str(dest) in message and 'KMNIST_JAX_DATA_DIR' in message
  assert 'gave up after' in message
  assert list(dest.iterdir()) == []
  assert time.monotonic() - started < 10


def _three_sources(monkeypatch, root, mirror, official, public):
  """`root`'s files with mirror, official and public-copy URLs set."""
  monkeypatch.delenv(data.ENV_MIRROR_ONLY)
  monkeypatch.setenv(data.ENV_MIRROR, mirror)
  info = _local_info(root, official=official + '/')
  monkeypatch.setattr(download, 'PUBLIC_COPIES', {official + '/': (
      public + '/',)})
  return info


def test_falls_back_through_sources(monkeypatch, synthetic_data_dir,
                                    tmp_path, caplog):
  empty = tmp_path / 'empty'
  empty.mkdir()
  mirror, official, public = (MirrorServer(root) for root in (
      empty, synthetic_data_dir, synthetic_data_dir))
  try:
    info = _three_sources(monkeypatch, synthetic_data_dir, mirror.url,
                          official.url, public.url)
    official.plan[_LABELS] = ['wrong']
    with caplog.at_level('WARNING'):
      path = data.download(info, _LABELS, tmp_path / 'dest')
  finally:
    for server in (mirror, official, public):
      server.close()
  assert _md5(path) == _md5(synthetic_data_dir / _LABELS)
  assert (mirror.log, official.log, public.log) == ([_LABELS],) * 3
  notes = [r.getMessage() for r in caplog.records]
  assert len(notes) == 2, notes
  assert f'$KMNIST_JAX_MIRROR {mirror.url}/{_LABELS}' in notes[0]
  assert 'HTTP 404' in notes[0]
  assert f'official {official.url}/{_LABELS}' in notes[1]
  assert 'checksum mismatch' in notes[1]
  assert _leftovers(tmp_path / 'dest') == []


def test_offline_message_lists_every_source(monkeypatch, synthetic_data_dir,
                                            tmp_path):
  mirror, official, public = (f'http://127.0.0.1:{_free_port()}/{kind}'
                              for kind in ('m', 'o', 'p'))
  info = _three_sources(monkeypatch, synthetic_data_dir, mirror, official,
                        public)
  started = time.monotonic()
  with pytest.raises(data.DownloadError) as error:
    data.load(info, 'test', tmp_path / 'dest')
  message = str(error.value)
  assert '\n' not in message
  for label, url in (('$KMNIST_JAX_MIRROR', mirror),
                     ('official', official), ('public copy', public)):
    assert f'{label} {url}/{_IMAGES} (' in message, message
  assert 'gave up after 4 attempts' in message
  assert _LABELS in message and str(tmp_path / 'dest') in message
  assert time.monotonic() - started < 10


def test_stream_past_expected_size_stops(serve, synthetic_data_dir,
                                         tmp_path):
  dest = tmp_path / 'dest'
  info = _local_info(synthetic_data_dir)
  server = serve(synthetic_data_dir)
  server.plan[_IMAGES] = ['endless']
  size = info.files['test'].images.size
  with pytest.raises(data.DownloadError) as error:
    data.download(info, _IMAGES, dest)
  assert f'sent more than the expected {size} bytes' in str(error.value)
  assert server.log == [_IMAGES]  # skipped, not retried
  # It hung up early: far less than the 64 MiB on offer was taken.
  deadline = time.monotonic() + 10
  while server.sent.get(_IMAGES, 0) < 1 and time.monotonic() < deadline:
    time.sleep(0.01)
  assert server.sent[_IMAGES] < server.endless_bytes // 2
  assert list(dest.iterdir()) == []


def test_announced_size_mismatch_is_skipped(serve, synthetic_data_dir,
                                            tmp_path):
  info = _local_info(synthetic_data_dir, size=100)
  server = serve(synthetic_data_dir)
  with pytest.raises(data.DownloadError) as error:
    data.download(info, _LABELS, tmp_path / 'dest')
  blob = (synthetic_data_dir / _LABELS).read_bytes()
  assert f'announced {len(blob)} bytes; expected 100' in str(error.value)
  assert server.log == [_LABELS]


@pytest.mark.parametrize('umask', [0o002, 0o022])
def test_download_gets_umask_permissions(serve, synthetic_data_dir, tmp_path,
                                         umask):
  info = _local_info(synthetic_data_dir)
  serve(synthetic_data_dir)
  old = os.umask(umask)
  try:
    path = data.download(info, _LABELS, tmp_path / 'shared')
  finally:
    os.umask(old)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_official_urls_without_mirror(monkeypatch):
  monkeypatch.delenv(data.ENV_MIRROR)
  file = data.get_info('kmnist').classmap
  assert data.source_url(file) == (
      'http://codh.rois.ac.jp/kmnist/dataset/kmnist/kmnist_classmap.csv')
  monkeypatch.setenv(data.ENV_MIRROR, 'http://m.test/a/')
  assert data.source_url(file) == 'http://m.test/a/kmnist_classmap.csv'


def test_final_path_never_holds_partial_file(serve, synthetic_data_dir,
                                             tmp_path):
  dest = tmp_path / 'dest'
  info = _local_info(synthetic_data_dir)
  server = serve(synthetic_data_dir)
  name = 'kmnist-train-imgs.npz'
  server.plan[name] = ['pause']
  result = {}
  thread = threading.Thread(
      target=lambda: result.update(path=data.download(info, name, dest)))
  thread.start()
  try:
    assert server.paused.wait(10)
    deadline = time.monotonic() + 10
    while not any(p.stat().st_size for p in dest.glob('.*.tmp')):
      assert time.monotonic() < deadline
      time.sleep(0.01)
    assert not (dest / name).exists()
    assert len(_leftovers(dest)) == 1
  finally:
    server.release.set()
    thread.join(10)
  assert result['path'] == dest / name
  assert _md5(result['path']) == _md5(synthetic_data_dir / name)
  assert _leftovers(dest) == []


def test_unwritable_destination(synthetic_data_dir, tmp_path):
  info = _local_info(synthetic_data_dir)
  blocker = tmp_path / 'file'
  blocker.write_text('not a folder')
  with pytest.raises(UserError, match='cannot create data folder') as error:
    data.download(info, 'kmnist-test-imgs.npz', blocker / 'data')
  assert 'kmnist-test-imgs.npz' in str(error.value)


def test_acceptance_mirror_download(serve, monkeypatch, real_data_dir,
                                    tmp_path):
  server = serve(real_data_dir)
  monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path))
  images, labels = data.load('kmnist', 'test[8000:]')
  with np.load(real_data_dir / 'kmnist-test-labels.npz') as official:
    want_labels = official['arr_0'][8000:]
  with np.load(real_data_dir / 'kmnist-test-imgs.npz') as official:
    want_images = official['arr_0'][8000:]
  assert images.shape == (2000, 28, 28) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, want_labels)
  np.testing.assert_array_equal(images, want_images)
  assert sorted(server.log) == [_IMAGES, _LABELS]
  for name in server.log:
    assert _md5(tmp_path / name) == REAL_MD5[name]
  data.download('kmnist', 'kmnist_classmap.csv', tmp_path)
  assert data.class_map('kmnist') == data.class_map('kmnist', real_data_dir)
  assert data.file_checksums('kmnist', 'test[8000:]') == {
      n: REAL_MD5[n] for n in (_IMAGES, _LABELS)}
  assert data.release_id('kmnist') == 'dace6de6'
  assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------- loading


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
  header = bytes([0, 0, 8, array.ndim]) + b''.join(
      d.to_bytes(4, 'big') for d in array.shape)
  blob = header + np.ascontiguousarray(array, np.uint8).tobytes()
  if path.name.endswith('.gz'):
    with gzip.open(path, 'wb', compresslevel=1) as f:
      f.write(blob)
  else:
    path.write_bytes(blob)


@pytest.mark.parametrize('gz', [True, False])
def test_npz_and_idx_agree_synthetic(synthetic_data_dir, tmp_path, gz):
  info = _local_info(synthetic_data_dir, checksums=False)
  images, labels = data.load(info, 'test', synthetic_data_dir)
  suffix = '.gz' if gz else ''
  _write_idx(tmp_path / f't10k-images-idx3-ubyte{suffix}', images)
  _write_idx(tmp_path / f't10k-labels-idx1-ubyte{suffix}', labels)
  idx_images, idx_labels = data.load(info, 'test[5:]', tmp_path)
  np.testing.assert_array_equal(idx_images, images[5:])
  np.testing.assert_array_equal(idx_labels, labels[5:])
  assert idx_images.dtype == np.uint8 and idx_labels.dtype == np.int32


def test_npz_and_idx_agree_real(real_data_dir, tmp_path):
  images, labels = data.load('kmnist', 'test', real_data_dir)
  gz_dir, raw_dir = tmp_path / 'gz', tmp_path / 'raw'
  gz_dir.mkdir()
  raw_dir.mkdir()
  _write_idx(gz_dir / 't10k-images-idx3-ubyte.gz', images)
  _write_idx(gz_dir / 't10k-labels-idx1-ubyte.gz', labels)
  _write_idx(raw_dir / 't10k-images-idx3-ubyte', images)
  _write_idx(raw_dir / 't10k-labels-idx1-ubyte', labels)
  # Re-gzipped files differ from the published .gz bytes: one md5 warning each.
  with pytest.warns(data.DataWarning, match='has md5'):
    gz_images, gz_labels = data.load('kmnist', 'test', gz_dir)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    raw_images, raw_labels = data.load('kmnist', 'test', raw_dir)
  for got_images, got_labels in ((gz_images, gz_labels),
                                 (raw_images, raw_labels)):
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def _npz(path, array=None, **arrays):
  if array is not None:
    arrays['arr_0'] = array
  np.savez(path, **arrays)


_GOOD_IMAGES = np.zeros((4, 28, 28), np.uint8)
_GOOD_LABELS = np.array([0, 1, 2, 9], np.uint8)


def _corrupt_npz(path):
  _npz(path, _GOOD_IMAGES)
  blob = path.read_bytes()
  path.write_bytes(blob[:len(blob) // 2])


@pytest.mark.parametrize('writer, bad_file, message', [
    (lambda d: _npz(d / _IMAGES, np.zeros((4, 28, 27), np.uint8)), _IMAGES,
     r'expected images of shape \(N, 28, 28\), got \(4, 28, 27\)'),
    (lambda d: _npz(d / _IMAGES, np.zeros((4, 784), np.uint8)), _IMAGES,
     r'expected images of shape \(N, 28, 28\)'),
    (lambda d: _npz(d / _IMAGES, np.zeros((4, 28, 28), np.float32)), _IMAGES,
     'expected images of dtype uint8, got float32'),
    (lambda d: _npz(d / _LABELS, np.zeros((4, 1), np.uint8)), _LABELS,
     r'expected labels of shape \(N,\)'),
    (lambda d: _npz(d / _LABELS, np.zeros(4, np.float32)), _LABELS,
     'expected integer labels, got dtype float32'),
    (lambda d: _npz(d / _LABELS, np.array([0, 1, 10, 2])), _LABELS,
     r'expected labels in \[0, 10\), found values from 0 to 10'),
    (lambda d: _npz(d / _LABELS, np.array([0, -1, 3, 2], np.int8)), _LABELS,
     r'expected labels in \[0, 10\), found values from -1 to 3'),
    (lambda d: _npz(d / _LABELS, np.zeros(3, np.uint8)), _LABELS,
     'has 4 images but .* has 3 labels; expected equal lengths'),
    (lambda d: (d / _IMAGES).write_bytes(b''), _IMAGES,
     r'is empty \(0 bytes\)'),
    (lambda d: (d / _IMAGES).write_bytes(b'hello world' * 9), _IMAGES,
     'is not a readable .npz archive'),
    (lambda d: _corrupt_npz(d / _IMAGES), _IMAGES,
     'is not a readable .npz archive'),
    (lambda d: _npz(d / _IMAGES, x=_GOOD_IMAGES), _IMAGES,
     "has no array 'arr_0' \\(keys: x\\)"),
    (lambda d: np.save(d / 'a.npy', _GOOD_IMAGES) or
     (d / 'a.npy').rename(d / _IMAGES), _IMAGES, 'holds a bare array'),
])
def test_validation_errors(tmp_path, writer, bad_file, message):
  _npz(tmp_path / _IMAGES, _GOOD_IMAGES)
  _npz(tmp_path / _LABELS, _GOOD_LABELS)
  writer(tmp_path)
  info = _local_info(tmp_path, checksums=False)
  with pytest.raises(UserError, match=message) as error:
    data.load(info, 'test', tmp_path)
  assert bad_file in str(error.value)
  assert '\n' not in str(error.value)


def test_good_arrays_load(tmp_path):
  _npz(tmp_path / _IMAGES, _GOOD_IMAGES)
  _npz(tmp_path / _LABELS, _GOOD_LABELS)
  images, labels = data.load(_local_info(tmp_path, checksums=False), 'test',
                             tmp_path)
  assert images.shape == (4, 28, 28)
  np.testing.assert_array_equal(labels, [0, 1, 2, 9])


@pytest.mark.parametrize('blob, gz, message', [
    (b'\x00\x00\x09\x01\x00\x00\x00\x04abcd', False, 'bad header'),
    (b'\x00\x00\x08\x01\x00\x00', False, 'truncated inside its header'),
    (b'\x00\x00\x08\x01\x00\x00\x00\x05abcd', False,
     'holds 4 data bytes; expected 5'),
    (gzip.compress(b'\x00\x00\x08\x01\x00\x00\x00\x04abcd', mtime=0)[:-9], True,
     'cannot be read'),
])
def test_idx_errors(tmp_path, blob, gz, message):
  _npz(tmp_path / _IMAGES, _GOOD_IMAGES)
  name = 't10k-labels-idx1-ubyte' + ('.gz' if gz else '')
  (tmp_path / name).write_bytes(blob)
  info = _local_info(tmp_path, checksums=False)
  with pytest.raises(UserError, match=message) as error:
    data.load(info, 'test', tmp_path)
  assert name in str(error.value)


def test_unknown_split_base(synthetic_data_dir):
  with pytest.raises(UserError, match="unknown split 'validation'"):
    data.load('kmnist', 'validation[:10]', synthetic_data_dir)


def test_md5_is_cached_per_path_size_mtime(tmp_path, monkeypatch):
  path = tmp_path / 'f.bin'
  path.write_bytes(b'abc')
  calls = []
  real_hash = download._hash_file
  monkeypatch.setattr(download, '_hash_file',
                      lambda p, a: calls.append(p) or real_hash(p, a))
  assert data.md5sum(path) == hashlib.md5(b'abc').hexdigest()
  assert data.md5sum(path) == hashlib.md5(b'abc').hexdigest()
  assert len(calls) == 1
  path.write_bytes(b'abcd')
  os.utime(path, ns=(1, 1))
  assert data.md5sum(path) == hashlib.md5(b'abcd').hexdigest()
  assert len(calls) == 2


def test_modified_official_file_warns(synthetic_data_dir):
  with pytest.warns(data.DataWarning, match='has md5') as caught:
    images, _ = data.load('kmnist', 'test', synthetic_data_dir)
  assert len(images) == 40
  messages = sorted(str(w.message) for w in caught)
  assert len(messages) == 2
  assert 'kmnist-test-imgs.npz has md5' in messages[0]
  assert 'expected 3ae489a79983d0fe386152684e3b5412' in messages[1]


def test_legacy_release_warns_once(real_data_dir, tmp_path):
  legacy = real_data_dir.parent / 'kmnist-legacy' / 'kmnist-test-imgs.npz'
  if not legacy.is_file():
    pytest.skip(f'legacy KMNIST release not available at {legacy}')
  assert _md5(legacy) == LEGACY_MD5
  shutil.copy(legacy, tmp_path)
  shutil.copy(real_data_dir / 'kmnist-test-labels.npz', tmp_path)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    images, labels = data.load('kmnist', 'test', tmp_path)
  assert len(caught) == 1
  message = str(caught[0].message)
  assert issubclass(caught[0].category, data.DataWarning)
  assert 'pre-2019-02-05' in message and 'download again' in message
  assert 'kmnist-test-imgs.npz' in message
  assert images.shape == (10000, 28, 28) and len(labels) == 10000
