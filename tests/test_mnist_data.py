"""MNIST and Fashion-MNIST: idx files verified by their official .gz or their
uncompressed bytes, the data root, the wrong dataset refused, downloads.

The real files come from ../shared/data/<dataset> (recompressed copies of the
official releases: their .gz bytes differ, their uncompressed bytes are the
official ones); tests that need them skip where they are absent.
"""

import gzip
import hashlib
import pathlib
import shutil
import socket

import numpy as np
import pytest

from kmnist_jax.data import datasets as data
from kmnist_jax.data import download
from kmnist_jax.core.errors import UserError

from mirror_server import MirrorServer  # pylint: disable=g-bad-import-order

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'
TEST_FILES = ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


def _shared(dataset: str) -> pathlib.Path:
  folder = SHARED / dataset
  if not all((folder / f).is_file() for f in TEST_FILES):
    pytest.skip(f'{dataset} files not available in {folder}')
  return folder


def _copy_test_files(dataset: str, dest: pathlib.Path) -> pathlib.Path:
  dest.mkdir(parents=True, exist_ok=True)
  for name in TEST_FILES:
    shutil.copy(_shared(dataset) / name, dest / name)
  return dest


def _raw(path: pathlib.Path) -> bytes:
  with gzip.open(path, 'rb') as f:
    return f.read()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
  """The mirror only (a closed port unless a test serves one), no waits."""
  monkeypatch.setattr(download, 'BACKOFF_S', 0.0)
  monkeypatch.setattr(download, 'TIMEOUT_S', 5.0)
  monkeypatch.setattr(download, 'PUBLIC_COPIES', {})
  monkeypatch.setenv(data.ENV_MIRROR, f'http://127.0.0.1:{_free_port()}')
  monkeypatch.setenv(data.ENV_MIRROR_ONLY, '1')
  monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)


def test_registry():
  mnist, fashion = data.get_info('mnist'), data.get_info('fashion_mnist')
  assert (mnist.num_classes, mnist.metric, mnist.title) == (
      10, 'accuracy', 'MNIST')
  assert data.class_map('mnist')[7] == (7, ord('7'), '7')
  assert data.class_map('fashion_mnist')[9] == (9, -1, 'Ankle boot')
  assert len(data.class_map('fashion_mnist')) == 10
  gz = mnist.files['test'].images
  assert gz.url == ('https://ossci-datasets.s3.amazonaws.com/mnist/'
                    't10k-images-idx3-ubyte.gz')
  assert (gz.size, gz.md5, gz.raw_size) == (
      1_648_877, '9fb629c4189551a2d022fa330f9573f3', 7_840_016)
  assert fashion.files['train'].labels.md5 == (
      '25c81989df183df01b3e8a0aad5dffbe')
  assert fashion.files['test'].images.url == (
      'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
      't10k-images-idx3-ubyte.gz')
  # KMNIST's idx release shares the names, not the bytes.
  kmnist_gz = data.get_info('kmnist').idx_files['test'].images
  assert kmnist_gz.name == gz.name and kmnist_gz.md5 != gz.md5


def test_sources_in_order(monkeypatch):
  """torchvision's mirrors in its order, then TFDS's."""
  monkeypatch.delenv(data.ENV_MIRROR)
  monkeypatch.setattr(download, 'PUBLIC_COPIES',
                      {'https://ossci-datasets.s3.amazonaws.com/mnist/': (
                          'http://yann.lecun.com/exdb/mnist/',
                          'https://storage.googleapis.com/cvdf-datasets/'
                          'mnist/')})
  name = 'train-labels-idx1-ubyte.gz'
  assert download.sources(data.get_info('mnist').files['train'].labels) == [
      ('torchvision copy', f'https://ossci-datasets.s3.amazonaws.com/mnist/'
                           f'{name}'),
      ('public copy', f'http://yann.lecun.com/exdb/mnist/{name}'),
      ('public copy', f'https://storage.googleapis.com/cvdf-datasets/mnist/'
                      f'{name}')]


@pytest.mark.parametrize('dataset', ['mnist', 'fashion_mnist'])
def test_recipe_constants_are_the_training_sets(dataset):
  """The registry's mean and std are the training images' own, rounded as
  the recipes round them."""
  folder = _shared(dataset)
  if not (folder / 'train-images-idx3-ubyte.gz').is_file():
    pytest.skip(f'{dataset} train images not available in {folder}')
  images, labels = data.load(dataset, 'train', folder.parent)
  assert images.shape == (60_000, 28, 28) and len(labels) == 60_000
  pixels = images / 255.0
  info = data.get_info(dataset)
  assert round(pixels.mean(), 4) == info.mean
  assert round(pixels.std(), 4) == info.std
  assert np.bincount(labels).min() >= 5000


@pytest.mark.parametrize('dataset', ['mnist', 'fashion_mnist'])
@pytest.mark.parametrize('gz', [True, False])
def test_idx_gz_and_raw_verified_by_uncompressed_bytes(dataset, gz, tmp_path):
  """A recompressed .gz, or the file un-gzipped, is the release: accepted by
  the pinned sha256 of its uncompressed bytes (its .gz md5 is not the
  official one)."""
  src = _shared(dataset)
  folder = tmp_path / dataset
  folder.mkdir()
  for name in TEST_FILES:
    pinned = data.get_info(dataset).files['test']
    remote = pinned.images if 'images' in name else pinned.labels
    assert data.md5sum(src / name) != remote.md5  # recompressed
    raw = _raw(src / name)
    assert hashlib.sha256(raw).hexdigest() == remote.raw_sha256
    if gz:
      shutil.copy(src / name, folder / name)
    else:
      (folder / name.removesuffix('.gz')).write_bytes(raw)
  images, labels = data.load(dataset, 'test[:100]', tmp_path)
  assert images.shape == (100, 28, 28) and images.dtype == np.uint8
  assert labels.dtype == np.int32
  want = {'mnist': [7, 2, 1, 0, 4], 'fashion_mnist': [9, 2, 1, 1, 6]}
  assert labels[:5].tolist() == want[dataset]
  assert data.release_id(dataset, tmp_path) == {
      'mnist': '2646ac64', 'fashion_mnist': '8181f547'}[dataset]


def _regzip(path: pathlib.Path, raw: bytes) -> None:
  with gzip.open(path, 'wb', compresslevel=1) as f:
    f.write(raw)


@pytest.mark.parametrize('damage', ['tampered', 'truncated', 'short_raw'])
def test_tampered_or_truncated_file_is_refused(damage, tmp_path):
  folder = _copy_test_files('mnist', tmp_path / 'mnist')
  path = folder / 't10k-images-idx3-ubyte.gz'
  raw = _raw(path)
  if damage == 'tampered':  # one pixel changed, a valid gzip
    _regzip(path, raw[:1000] + bytes([raw[1000] ^ 1]) + raw[1001:])
    message = 'is not the official mnist t10k-images-idx3-ubyte.gz'
  elif damage == 'truncated':  # a cut download
    path.write_bytes(path.read_bytes()[:50_000])
    message = 'cannot be read'
  else:  # a valid gzip of too few bytes
    _regzip(path, raw[:-784])
    message = 'is not the official mnist'
  with pytest.raises(UserError) as error:
    data.load('mnist', 'test', tmp_path)
  text = str(error.value)
  assert message in text and str(path) in text and '\n' not in text
  if damage != 'truncated':
    assert 'expected .gz md5 9fb629c4189551a2d022fa330f9573f3 or ' in text
    assert 'uncompressed sha256 0fa7898d' in text


def test_wrong_datasets_files_are_refused_naming_both(tmp_path):
  """The same file names, another dataset's bytes: never trained on."""
  fashion_in_mnist = _copy_test_files('fashion_mnist', tmp_path / 'a' / 'mnist')
  with pytest.raises(UserError) as error:
    data.load('mnist', 'test', fashion_in_mnist.parent)
  text = str(error.value)
  assert "is Fashion-MNIST's t10k-images-idx3-ubyte.gz" in text
  assert "dataset 'mnist' (MNIST) was asked for" in text
  # KMNIST asked for, a flat folder holding MNIST's idx files (KMNIST's idx
  # release has the same names).
  flat = _copy_test_files('mnist', tmp_path / 'flat')
  with pytest.raises(UserError, match=r"is MNIST's t10k-images-idx3-ubyte.gz "
                     r".*dataset 'kmnist' \(KMNIST\) was asked for"):
    data.load('kmnist', 'test', flat)


def test_data_root_and_flat_folder(monkeypatch, tmp_path):
  """KMNIST_JAX_DATA_DIR (or data_dir) names a data root with a folder per
  dataset, or, as before, one dataset's flat folder."""
  root = tmp_path / 'root'
  _copy_test_files('mnist', root / 'mnist')
  _copy_test_files('fashion_mnist', root / 'fashion_mnist')
  assert data.resolve_data_dir('mnist', root) == root / 'mnist'
  assert data.resolve_data_dir('kmnist', root) == root / 'kmnist'
  monkeypatch.setenv(data.ENV_DATA_DIR, str(root))
  assert data.load('mnist', 'test[:3]')[1].tolist() == [7, 2, 1]
  assert data.load('fashion_mnist', 'test[:3]')[1].tolist() == [9, 2, 1]
  flat = tmp_path / 'flat'
  flat.mkdir()
  assert data.resolve_data_dir('kmnist', flat) == flat
  monkeypatch.setenv(data.ENV_DATA_DIR, str(flat))
  assert data.resolve_data_dir('kmnist') == flat
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.delenv(data.ENV_DATA_DIR)
  assert data.resolve_data_dir('fashion_mnist') == (
      tmp_path / 'home' / '.cache' / 'kmnist_jax' / 'fashion_mnist')


def test_flat_kmnist_data_dir_still_works(monkeypatch):
  """The flat KMNIST folder of earlier releases, through the env."""
  kmnist = SHARED / 'kmnist'
  if not (kmnist / 'kmnist-test-imgs.npz').is_file():
    pytest.skip(f'KMNIST files not available in {kmnist}')
  monkeypatch.setenv(data.ENV_DATA_DIR, str(kmnist))
  images, labels = data.load('kmnist', 'test[8000:]')
  assert images.shape == (2000, 28, 28) and len(labels) == 2000
  monkeypatch.setenv(data.ENV_DATA_DIR, str(SHARED))  # the root
  np.testing.assert_array_equal(data.load('kmnist', 'test[8000:]')[1], labels)


def test_download_accepts_a_recompressed_copy_and_refuses_other_bytes(
    monkeypatch, tmp_path):
  """Verified before a file gets its name: the official .gz, or a copy whose
  uncompressed bytes are pinned; a tampered copy is refused, naming every
  source tried, and leaves nothing behind."""
  served = _copy_test_files('mnist', tmp_path / 'served')
  server = MirrorServer(served)
  try:
    monkeypatch.setenv(data.ENV_MIRROR, server.url)
    dest = tmp_path / 'root'
    (dest / 'kmnist').mkdir(parents=True)  # a data root: files go in mnist/
    images, labels = data.load('mnist', 'test[:2]', dest)
    assert labels.tolist() == [7, 2] and images.shape == (2, 28, 28)
    assert sorted(p.name for p in (dest / 'mnist').iterdir()) == sorted(
        TEST_FILES)
    bad = served / 't10k-labels-idx1-ubyte.gz'
    raw = _raw(bad)
    _regzip(bad, raw[:8] + bytes([(raw[8] + 1) % 10]) + raw[9:])
    other = tmp_path / 'other'
    with pytest.raises(data.DownloadError) as error:
      data.load('mnist', 'test', other)
    text = str(error.value)
    assert 't10k-labels-idx1-ubyte.gz' in text and '\n' not in text
    assert f'$KMNIST_JAX_MIRROR {server.url}/t10k-labels-idx1-ubyte.gz' in text
    assert 'checksum mismatch' in text
    # A new folder is one dataset's flat folder, as data_dir was before.
    assert (other / 't10k-images-idx3-ubyte.gz').is_file()
    assert not (other / 't10k-labels-idx1-ubyte.gz').exists()
    assert list(other.glob('.*.tmp')) == []
  finally:
    server.close()


def test_fashion_mnist_train_predict_and_plots_show_class_names(tmp_path):
  """Train (:smoke), predict and plot on Fashion-MNIST: the predict table
  and the plots carry its class names, with no codepoint."""
  # pylint: disable=g-import-not-at-top
  import pandas as pd
  from kmnist_jax.config import base as configlib
  from kmnist_jax import main
  from kmnist_jax.inference import predict
  root = _shared('fashion_mnist').parent
  c = configlib.load_config_file('configs/keras_cnn.py', 'fashion_mnist,smoke')
  c.data_dir, c.write_plots = str(root), True
  workdir = str(tmp_path / 'w')
  main.train_and_evaluate(c, workdir)
  plots = sorted(p.name for p in (tmp_path / 'w' / 'plots').iterdir())
  assert 'samples.png' in plots and 'class_distribution.png' in plots
  images, labels = data.load('fashion_mnist', 'test[:4]', root)
  np.save(tmp_path / 'four.npy', images)
  predictor = predict.Predictor.from_workdir(workdir)
  table = predictor.predict([str(tmp_path / 'four.npy')])
  names = set(data.get_info('fashion_mnist').class_names)
  assert set(table['top1_char']) <= names and len(table) == 4
  assert set(table['top1_codepoint']) == {''}
  text = predict.format_table(table, 3)
  assert 'U+' not in text and any(n in text for n in names)
  assert isinstance(table, pd.DataFrame) and labels.shape == (4,)


def test_download_shows_a_bar_on_a_terminal_only(tmp_path):
  """Through a pseudo-terminal a download draws a bar with its rate and
  ETA; without one (the tests above) it prints nothing."""
  # pylint: disable=g-import-not-at-top
  import os
  import pty
  import subprocess
  import sys
  served = _copy_test_files('mnist', tmp_path / 'served')
  server = MirrorServer(served)
  try:
    leader, follower = pty.openpty()
    env = dict(os.environ, KMNIST_JAX_MIRROR=server.url,
               KMNIST_JAX_MIRROR_ONLY='1')
    env.pop('KMNIST_JAX_PROGRESS', None)
    code = ('from kmnist_jax.data import datasets as data; '
            f'print(data.load("mnist", "test[:2]", {str(tmp_path / "d")!r})'
            '[1].tolist())')
    proc = subprocess.run([sys.executable, '-c', code], stdout=follower,
                          stderr=follower, env=env, timeout=120, check=False)
    os.close(follower)
    out = b''
    while True:
      try:
        chunk = os.read(leader, 1 << 16)
      except OSError:
        break
      if not chunk:
        break
      out += chunk
    os.close(leader)
  finally:
    server.close()
  text = out.decode('utf-8', 'replace')
  assert proc.returncode == 0, text
  import re
  assert re.search(r't10k-images-idx3-ubyte.gz \|█+\| (\d+)/\1 \[', text), text
  assert 'kB/s]' in text and '[7, 2]' in text
