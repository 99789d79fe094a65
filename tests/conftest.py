"""Shared fixtures: a tiny synthetic KMNIST-format dataset, the real files."""

import os
import pathlib

import numpy as np
import pytest

# The suite runs two workers on two cores: OpenMP threads that spin between
# calls (kmnist_jax.cpu.openmp, which the CLI's runtime.setup applies) would
# hold a core the other worker needs. Set before anything loads libgomp;
# CLI subprocesses inherit it. tests/test_openmp.py checks the setting.
os.environ.setdefault('KMNIST_JAX_OMP_SPIN', '0')

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


def make_learnable_dir(directory: pathlib.Path, n_train=320, n_test=200,
                       seed=0, textured=False) -> pathlib.Path:
  """KMNIST-named files whose class is a bright 6x6 patch position + noise.

  The patch is flat (250) by default. Flat, its 5x5 windows are equal, and
  so are the convolution outputs over them, up to how XLA rounds each
  position: max pooling then routes the gradient by a last-bit tie that
  any change of summation order can flip. `textured=True` gives the patch
  noise (200-255) for tests that compare trainings to rounding.
  """
  directory.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for split, n in (('train', n_train), ('test', n_test)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
      r, col = 2 + 8 * (c // 4), 2 + 6 * (c % 4)
      images[i, r:r + 6, col:col + 6] = (
          rng.integers(200, 256, (6, 6)) if textured else 250)
    np.savez_compressed(directory / f'kmnist-{split}-imgs.npz', images)
    np.savez_compressed(directory / f'kmnist-{split}-labels.npz', labels)
  return directory


@pytest.fixture(scope='session')
def learnable_data_dir(tmp_path_factory) -> pathlib.Path:
  """`make_learnable_dir` once per session (train 320, test 200)."""
  return make_learnable_dir(tmp_path_factory.mktemp('learnable'))


def pytest_terminal_summary(terminalreporter):
  """Prints the seeds of the fault-injection tests (tests/faults)."""
  lines = []
  for reports in terminalreporter.stats.values():
    for report in reports:
      for name, value in getattr(report, 'user_properties', ()):
        if name == 'fault_seed' and getattr(report, 'when', '') == 'call':
          lines.append(f'{report.nodeid}: {value}')
  if lines:
    terminalreporter.write_sep('-', 'fault injection seeds')
    for line in lines:
      terminalreporter.write_line(line)
