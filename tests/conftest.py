"""Shared fixtures: a tiny synthetic KMNIST-format dataset, the real files."""

import os
import pathlib

import numpy as np
import pytest

SYNTHETIC_SIZES = {'train': 120, 'test': 40}
_CLASSMAP = 'おきすつなはまやれを'


@pytest.fixture
def synthetic_data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
  """A folder with KMNIST-named .npz files (train 120, test 40) and classmap.

  Images are random uint8 (seed 0); labels cycle through the 10 classes.
  """
  directory = tmp_path / 'synthetic'
  directory.mkdir()
  rng = np.random.default_rng(0)
  for split, n in SYNTHETIC_SIZES.items():
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    np.savez_compressed(directory / f'kmnist-{split}-imgs.npz', images)
    np.savez_compressed(directory / f'kmnist-{split}-labels.npz', labels)
  rows = ['index,codepoint,char'] + [
      f'{i},U+{ord(c):04X},{c}' for i, c in enumerate(_CLASSMAP)]
  (directory / 'kmnist_classmap.csv').write_text(
      '\n'.join(rows) + '\n', encoding='utf-8')
  return directory


@pytest.fixture
def real_data_dir() -> pathlib.Path:
  """The real KMNIST files from env KMNIST_JAX_DATA_DIR (else skip)."""
  env = os.environ.get('KMNIST_JAX_DATA_DIR', '')
  if not env:
    pytest.skip('real KMNIST files not available: set KMNIST_JAX_DATA_DIR')
  directory = pathlib.Path(env).expanduser()
  if not (directory / 'kmnist-test-imgs.npz').is_file():
    pytest.skip(f'real KMNIST files not available: {directory} lacks '
                'kmnist-test-imgs.npz')
  return directory
