"""Every config: fields, variants, docstrings, and a `:smoke` run of each.

The smoke runs read synthetic KMNIST- and K49-format test files (8,200
random images; the loader warns about their md5 and goes on), so they need
no real data.
"""

import pathlib
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import reproduce
from kmnist_jax import main
from kmnist_jax.config import base as configlib
from kmnist_jax.core.errors import UserError
from kmnist_jax.data import datasets as data
from kmnist_jax.methods import registry
from kmnist_jax.train import augment

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py'))
BENCHMARK = ['knn', 'pca_knn', 'svm', 'keras_cnn', 'preact_resnet18',
             'preact_resnet18_mixup', 'preact_resnet18_manifold_mixup',
             'resnet_preact20_cutout', 'shake_shake26', 'best']
SPLIT_FIELDS = {'train_split', 'eval_split', 'test_split'}
# Two train steps compile far longer than they run: LLVM optimisation level
# 0 cuts the compile (shake-shake 54 s -> 28 s, the 20 runs on 2 workers
# 226 s -> 93 s). Only these smoke runs use it.
SMOKE_OPTIONS = {'xla_backend_optimization_level': 0}


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


# Values as the sources say (each config's docstring cites file and commit).
SOURCE_VALUES = {
    # vikasverma1077/manifold_mixup 7d367dc: train_classifier_mixup.py, README.
    'preact_resnet18': dict(
        batch_size=100, num_epochs=200, learning_rate=0.1, momentum=0.9,
        nesterov=True, weight_decay=1e-4, lr_schedule='multistep',
        lr_milestones='100,150', lr_decay=0.1),
    'preact_resnet18_mixup': dict(lr_schedule='multistep', mixup_alpha=1.0),
    'preact_resnet18_manifold_mixup': dict(lr_schedule='multistep',
                                           manifold_mixup_alpha=2.0),
    # hysts/pytorch_image_classification c3e9833.
    'resnet_preact20_cutout': dict(
        batch_size=128, num_epochs=200, learning_rate=0.2, nesterov=True,
        weight_decay=1e-4, lr_schedule='cosine', augment_translate=4,
        cutout_size=14, cutout_fill=0.1904, input_mean=0.1904, input_std=0.3475),
    'shake_shake26': dict(
        batch_size=128, num_epochs=200, learning_rate=0.2, nesterov=True,
        weight_decay=1e-4, lr_schedule='cosine', augment_translate=4,
        cutout_size=14, cutout_fill=0.1904, input_mean=0.1904, input_std=0.3475),
    # janzd/pytorch_image_classification a58e329.
    'k49_shake_shake26': dict(
        dataset='k49', model='shake_shake26_2x96d', batch_size=2048,
        num_epochs=1800, learning_rate=0.2, lr_schedule='cosine',
        augment_translate=4, cutout_size=14, cutout_fill=0.0,
        weight_decay=1e-4, input_mean=0.1904, input_std=0.3475),
    'k49_densenet100': dict(
        dataset='k49', model='densenet_bc100_k12', batch_size=1536,
        num_epochs=1500, learning_rate=0.1, nesterov=True, weight_decay=1e-4,
        augment_translate=4, cutout_size=0, input_mean=0.1904, input_std=0.3475),
    # ranihorev/Kuzushiji_MNIST 152ce0e KujuMNIST.ipynb, trained with
    # fastai v1's Learner defaults (fastai/fastai1 53080d4 basic_train.py).
    'vgg': dict(
        model='horev_vgg', batch_size=128, optimizer='adamw',
        learning_rate=3e-3, lr_schedule='constant', beta1=0.9, beta2=0.99,
        weight_decay=1e-2, input_mean=0.1904,
        input_std=0.3475, augment_translate=0, cutout_size=0,
        mixup_alpha=0.0),
    # Ours, unchanged by the recipes it builds on.
    'best': dict(weight_decay=5e-4, augment_translate=2, cutout_size=8,
                 cutout_fill=0.0, lr_schedule='onecycle', num_epochs=100,
                 input_mean=0.0, input_std=1.0),
}


@pytest.mark.parametrize('name', sorted(SOURCE_VALUES))
def test_recipe_values_as_their_sources(name):
  c = load(name)
  assert {k: c[k] for k in SOURCE_VALUES[name]} == SOURCE_VALUES[name]


def test_cutout_fill_is_the_value_of_the_square():
  # hysts cuts out after normalising: 0 there is the mean pixel, 0.1904.
  x = jnp.ones((2, 28, 28, 1))
  out = np.asarray(augment.cutout(x, jax.random.PRNGKey(0), 14, 0.1904))
  assert set(np.unique(out)) == {np.float32(0.1904), 1.0}
  assert np.array_equal(out == 1.0,
                        np.asarray(augment.cutout(x, jax.random.PRNGKey(0),
                                                  14)) == 1.0)
  c = configlib.base_config()
  assert c.cutout_fill == 0.0
  c.cutout_fill = 1.5
  with pytest.raises(UserError, match=r'^config.cutout_fill=1.5: expected a '
                     r'pixel value in \[0, 1\]$'):
    augment.check_config(c)


def test_reproduce_rows_name_existing_configs():
  named = {c for row in reproduce.ROWS
           for c in (row.kmnist_config, row.k49_config) if c}
  assert named <= set(CONFIGS)
  assert {c for c in CONFIGS if c.startswith('k49_')} <= named
  row, = [r for r in reproduce.ROWS if r.model == 'DenseNet-100 (k=12)']
  assert (row.kmnist_config, row.k49_config) == ('', 'k49_densenet100')


@pytest.mark.parametrize('name', CONFIGS)
def test_fields_variants_and_docstring(name):
  full, proxy, smoke = load(name), load(name, 'proxy'), load(name, 'smoke')
  for c in (full, proxy, smoke):
    expected = configlib.base_config()
    if c.model in configlib.MODEL_SLICES:  # The method's slice, and only it.
      part = configlib.MODEL_SLICES[c.model]
      expected[part] = configlib.SLICES[part]()
    assert set(dict(leaves(c))) == set(dict(leaves(expected)))
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
  c = load(name, 'smoke')
  c.data_dir = str(synthetic_dir)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', data.DataWarning)
    state, m = main.train_and_evaluate(c, str(tmp_path / 'w'), SMOKE_OPTIONS)
  info = data.get_info(c.dataset)
  n_eval = int(c.eval_split.split(':')[1].rstrip(']')) - 8000
  assert m['eval']['num_examples'] == n_eval
  assert np.array(m['eval']['confusion_matrix']).shape == (info.num_classes,) * 2
  assert 0.0 <= m['eval']['accuracy'] <= 1.0
  assert np.isfinite(m['eval']['loss'])
  if not registry.get(c.model).trains:
    assert state is None
  else:
    assert int(state.step) == m['steps_per_epoch'] >= 1
    assert np.isfinite(m['train']['loss'])


# ------------------------------------------------- MNIST and Fashion-MNIST

SHARED_DATA = REPO.parent / 'shared' / 'data'
# Every recipe: the K49 configs that are a KMNIST config on K49
# (`sibling_config`) are that config's recipe, run under its own name.
RECIPES = [n for n in CONFIGS if not (
    n.startswith('k49_')
    and 'sibling_config(' in (REPO / 'configs' / f'{n}.py').read_text())]


def _shared_root(dataset):
  if not (SHARED_DATA / dataset / 't10k-images-idx3-ubyte.gz').is_file():
    pytest.skip(f'{dataset} files not available in {SHARED_DATA / dataset}')
  return SHARED_DATA


@pytest.mark.parametrize('dataset', ['mnist', 'fashion_mnist'])
@pytest.mark.parametrize('name', RECIPES)
def test_smoke_run_on_other_datasets(name, dataset, tmp_path, monkeypatch):
  """Every recipe runs on MNIST and Fashion-MNIST (`:<dataset>,smoke`), from
  the real files in a data root, with that dataset's constants."""
  root = _shared_root(dataset)
  c = load(name, f'{dataset},smoke')
  c.data_dir = str(root)
  info = data.get_info(dataset)
  assert c.dataset == dataset
  assert (c.input_mean, c.input_std) in ((0.0, 1.0), (info.mean, info.std))
  assert c.cutout_fill in (0.0, info.mean)
  with warnings.catch_warnings():
    warnings.simplefilter('error', data.DataWarning)  # the official bytes
    state, m = main.train_and_evaluate(c, str(tmp_path / 'w'), SMOKE_OPTIONS)
  assert m['eval']['num_examples'] == 64
  assert 0.0 <= m['eval']['accuracy'] <= 1.0
  assert np.isfinite(m['eval']['loss'])
  if state is not None:
    assert int(state.step) == m['steps_per_epoch'] == 2


def test_dataset_argument_moves_the_recipe_constants():
  kmnist, mnist = load('resnet_preact20_cutout'), load(
      'resnet_preact20_cutout', 'mnist,proxy')
  assert (kmnist.input_mean, kmnist.input_std, kmnist.cutout_fill) == (
      0.1904, 0.3475, 0.1904)
  assert (mnist.dataset, mnist.input_mean, mnist.input_std,
          mnist.cutout_fill) == ('mnist', 0.1307, 0.3081, 0.1307)
  assert (mnist.train_split, mnist.eval_split) == ('test[:8000]',
                                                    'test[8000:]')
  # hysts' MNIST recipe: no random crop, 100 epochs; the proxy keeps them.
  assert (mnist.augment_translate, mnist.num_epochs) == (0, 100)
  assert (kmnist.augment_translate, kmnist.num_epochs) == (4, 200)
  assert load('shake_shake26', 'mnist,smoke').num_epochs == 1
  fashion = load('shake_shake26', 'fashion_mnist')
  assert (fashion.input_mean, fashion.input_std) == (0.2860, 0.3530)
  # Explicit values that are no dataset's constants stay.
  best = load('best', 'mnist')
  assert (best.input_mean, best.input_std, best.cutout_fill) == (0., 1., 0.)
  assert load('preact_resnet18_mixup', 'mnist').dataset == 'mnist'
  assert load('k49_keras_cnn').dataset == 'k49'
  for bad in ('mnist,k49', 'proxy,smoke', 'mnsit'):
    with pytest.raises(ValueError, match='valid: proxy, smoke, a dataset'):
      load('keras_cnn', bad)


def test_another_datasets_constants_are_refused(tmp_path):
  c = load('resnet_preact20_cutout', 'smoke')
  c.dataset = 'mnist'  # As --config.dataset=mnist leaves it.
  with pytest.raises(UserError, match=r"KMNIST's recipe constants.*"
                     r"config.dataset is 'mnist'.*configs/<exp>.py:mnist"):
    main.train_and_evaluate(c, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()
