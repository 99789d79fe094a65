"""Every config: fields, variants, docstrings, and a `:smoke` run of each.

The smoke runs read synthetic KMNIST- and K49-format test files (8,200
random images; the loader warns about their md5 and goes on), so they need
no real data.
"""

import pathlib
import warnings

import ml_collections
import numpy as np
import pytest

from kmnist_jax import configlib
from kmnist_jax import data
from kmnist_jax import knn
from kmnist_jax import main
from kmnist_jax.cpu import compiler

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py'))
BENCHMARK = ['knn', 'pca_knn', 'keras_cnn', 'preact_resnet18',
             'preact_resnet18_mixup', 'preact_resnet18_manifold_mixup',
             'resnet_preact20_cutout', 'shake_shake26', 'best']
SPLIT_FIELDS = {'train_split', 'eval_split', 'test_split'}


def load(name, arg=''):
  return configlib.load_config_file(str(REPO / 'configs' / f'{name}.py'), arg)


def leaves(c, prefix=''):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from leaves(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


@pytest.fixture(scope='module')
def synthetic_dir(tmp_path_factory):
  """KMNIST and K49 test files: 8,200 images, labels cycling all classes."""
  d = tmp_path_factory.mktemp('synthetic_test_splits')
  rng = np.random.default_rng(0)
  for name, classes in (('kmnist', 10), ('k49', 49)):
    np.savez(d / f'{name}-test-imgs.npz',
             rng.integers(0, 256, (8200, 28, 28), dtype=np.uint8))
    np.savez(d / f'{name}-test-labels.npz',
             (np.arange(8200) % classes).astype(np.uint8))
  return d


def test_every_benchmark_row_has_both_datasets():
  for name in BENCHMARK:
    assert name in CONFIGS and f'k49_{name}' in CONFIGS
    assert load(name).dataset == 'kmnist'
    assert load(f'k49_{name}').dataset == 'k49'


@pytest.mark.parametrize('name', CONFIGS)
def test_fields_variants_and_docstring(name):
  full, proxy, smoke = load(name), load(name, 'proxy'), load(name, 'smoke')
  for c in (full, proxy, smoke):
    assert set(dict(leaves(c))) == set(dict(leaves(configlib.base_config())))
    assert all(v is not None for _, v in leaves(c))
  assert (proxy.train_split, proxy.eval_split, proxy.test_split) == (
      'test[:8000]', 'test[8000:]', '')
  diff = {k for k, v in leaves(full) if proxy[k] != v}
  assert diff <= SPLIT_FIELDS
  assert smoke.num_epochs == 1 and smoke.test_split == ''
  with pytest.raises(ValueError, match='unknown config variant'):
    load(name, 'bogus')
  doc = (REPO / 'configs' / f'{name}.py').read_text()
  doc = doc.split('"""')[1]
  assert 'python -m kmnist_jax.main --config configs/' in doc
  if name in BENCHMARK or name.startswith('k49_'):
    assert 'ublished' in doc  # "Published: ..." or "No published number".
    assert 'GPU' in doc and 'wall time' in doc.lower()
  if name in BENCHMARK and name != 'best':
    assert '%' in doc and 'epoch' in doc.lower()


@pytest.mark.parametrize('name', CONFIGS)
def test_smoke_run(name, synthetic_dir, tmp_path, monkeypatch):
  # Two train steps compile far longer than they run: LLVM optimisation
  # level 0 cuts the compile (shake-shake 54 s -> 28 s, the 20 runs on 2
  # workers 226 s -> 93 s). Only these smoke runs use it.
  monkeypatch.setattr(compiler, 'COMPILER_OPTIONS',
                      {'xla_backend_optimization_level': 0})
  c = load(name, 'smoke')
  c.data_dir = str(synthetic_dir)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', data.DataWarning)
    state, m = main.train_and_evaluate(c, str(tmp_path / 'w'))
  info = data.get_info(c.dataset)
  n_eval = int(c.eval_split.split(':')[1].rstrip(']')) - 8000
  assert m['eval']['num_examples'] == n_eval
  assert np.array(m['eval']['confusion_matrix']).shape == (info.num_classes,) * 2
  assert 0.0 <= m['eval']['accuracy'] <= 1.0
  assert np.isfinite(m['eval']['loss'])
  if c.model in knn.METHODS:
    assert state is None
  else:
    assert int(state.step) == m['steps_per_epoch'] >= 1
    assert np.isfinite(m['train']['loss'])
