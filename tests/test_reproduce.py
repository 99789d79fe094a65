"""experiments.reproduce: overrides, the table, an end-to-end k-NN run."""

import pathlib
import warnings

import numpy as np
import pandas as pd
import pytest

from experiments import reproduce
from kmnist_jax.data import datasets as data
from kmnist_jax.core.errors import UserError



def test_overrides():
  o = reproduce.parse_overrides(['num_epochs=3', 'knn:knn.k=5',
                                 'best:tta_shift=0'])
  assert o == {'': {'num_epochs': '3'}, 'knn': {'knn.k': '5'},
               'best': {'tta_shift': '0'}}
  c = reproduce.load_config('best', 'proxy', 2, o)
  assert (c.num_epochs, c.tta_shift, c.seed) == (3, 0, 2)
  assert c.train_split == 'test[:8000]'
  assert reproduce.load_config('knn', '', 0, o).knn.k == 5
  assert reproduce.parse_value('0.5', 1.0) == 0.5
  assert reproduce.parse_value('true', False) is True
  with pytest.raises(UserError, match='no such field'):
    reproduce.load_config('knn', '', 0, {'': {'bogus': '1'}})
  with pytest.raises(UserError, match='FIELD=VALUE'):
    reproduce.parse_overrides(['num_epochs'])
  with pytest.raises(UserError, match='does not exist'):
    reproduce.load_config('nope', '', 0, {})


def fake(config, seed, value, epochs=3, recipe=12, trained=True):
  return {'config': config, 'seed': seed, 'value': value, 'epochs': epochs,
          'recipe_epochs': recipe, 'trained': trained, 'wall_time': 90.0,
          'device': 'cpu X', 'release': 'dace6de6'}


def test_table():
  results = [fake('knn', s, 0.928, 0, 1, False) for s in range(3)] + [
      fake('keras_cnn', 0, 0.93), fake('keras_cnn', 1, 0.94)]
  df = reproduce.build_table(results, {'shake_shake26': 'too slow'},
                             ('kmnist',), 'not run (no K49 data offline)')
  assert list(df.columns[:9]) == [
      'model', 'KMNIST published', 'KMNIST ours', 'K49 published', 'K49 ours',
      'epochs', 'wall time / run', 'device', 'dataset release (md5)']
  assert len(df) == len(reproduce.ROWS)
  row = df.set_index('model')
  knn = row.loc['4-Nearest Neighbour Baseline']
  assert knn['KMNIST ours'] == '92.80 ± 0.00% (n=3)'
  assert knn['KMNIST published'] == '92.10%' and knn['epochs'] == '—'
  assert knn['K49 ours'] == 'not run (no K49 data offline)'
  keras = row.loc['Keras Simple CNN Benchmark']
  assert keras['KMNIST ours'] == f'93.50 ± {np.std([93, 94], ddof=1):.2f}% (n=2)'
  assert keras['epochs'] == 'KMNIST 3 of 12'
  assert keras['wall time / run'] == 'KMNIST 90 s'
  assert keras['dataset release (md5)'] == 'kmnist dace6de6'
  assert row.loc['Tuned SVM (RBF kernel)', 'KMNIST ours'] == 'not run'
  assert row.loc['ResNet18 + VGG Ensemble', 'KMNIST ours'].startswith(
      'no config')
  assert row.loc['Shake-Shake-26 2x96d (S-S-I), Cutout 14',
                 'KMNIST ours'] == 'skipped: too slow'
  assert row.loc['PreActResNet-18', 'KMNIST ours'] == 'not run'
  assert keras['kmnist_mean'] == pytest.approx(93.5)
  assert keras['kmnist_n'] == 2


def test_end_to_end_knn_smoke(tmp_path):
  d = tmp_path / 'data'
  d.mkdir()
  rng = np.random.default_rng(0)
  np.savez(d / 'kmnist-test-imgs.npz',
           rng.integers(0, 256, (8200, 28, 28), dtype=np.uint8))
  np.savez(d / 'kmnist-test-labels.npz',
           (np.arange(8200) % 10).astype(np.uint8))
  out = tmp_path / 'out'
  args = ['--name', 'smoke', '--variant', 'smoke', '--seeds', '2',
          '--datasets', 'kmnist', '--configs', 'knn,pca_knn',
          '--skip', 'keras_cnn=not needed here',
          '--workdir_root', str(tmp_path / 'runs'), '--data_dir', str(d),
          '--out_dir', str(out)]
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', data.DataWarning)
    assert reproduce.main(args) == 0
    sidecars = sorted((tmp_path / 'runs' / 'smoke').glob('*/seed*/'
                                                          'reproduce.json'))
    assert len(sidecars) == 4
    # Finished runs are collected, not run again.
    mtime = sidecars[0].stat().st_mtime_ns
    assert reproduce.main(args + ['--collect']) == 0
    assert sidecars[0].stat().st_mtime_ns == mtime
  md = (out / 'smoke.md').read_text()
  assert md.startswith('# Benchmark reproduction (smoke: KMNIST) on ')
  assert '| PCA + 4-kNN | 93.98% |' in md
  assert 'skipped: not needed here' in md
  df = pd.read_csv(out / 'smoke.csv')
  knn = df.set_index('model').loc['4-Nearest Neighbour Baseline']
  assert knn['kmnist_n'] == 2 and knn['kmnist_std'] == 0.0
  assert reproduce.main(['--override', 'oops']) == 2


def test_mnist_column():
  """`--datasets mnist`: the KMNIST rows' configs on MNIST, against the
  rois-codh MNIST column (and hysts' for ResNet-preact-20)."""
  assert reproduce.configs_for(['mnist'])[:4] == [
      ('knn', 'mnist'), ('pca_knn', 'mnist'), ('svm', 'mnist'),
      ('keras_cnn', 'mnist')]
  assert reproduce.run_dir('r', '', 'keras_cnn', 'mnist') == (
      pathlib.Path('r/full/mnist/keras_cnn'))
  assert reproduce.run_dir('r', 'proxy', 'k49_knn', 'k49') == (
      pathlib.Path('r/proxy/k49_knn'))
  c = reproduce.load_config('resnet_preact20_cutout', '', 1, {}, '', 'mnist')
  assert (c.dataset, c.input_mean, c.seed, c.train_split) == (
      'mnist', 0.1307, 1, 'train')
  results = [dict(fake('keras_cnn', s, 0.99, 12, 12), dataset='mnist',
                  release='2646ac64') for s in range(3)]
  results.append(fake('keras_cnn', 0, 0.9))  # a KMNIST run: not MNIST's
  df = reproduce.build_table(results, {}, ('mnist',))
  assert list(df.columns[:3]) == ['model', 'MNIST published', 'MNIST ours']
  assert 'KMNIST ours' not in df.columns
  row = df.set_index('model')
  keras = row.loc['Keras Simple CNN Benchmark']
  assert keras['MNIST published'] == '99.06%'
  assert keras['MNIST ours'] == '99.00 ± 0.00% (n=3)'
  assert keras['epochs'] == 'MNIST 12' and keras['mnist_n'] == 3
  assert keras['dataset release (md5)'] == 'mnist 2646ac64'
  assert row.loc['ResNet-preact-20, Cutout 14 (hysts)',
                 'MNIST published'] == '99.74%†'
  assert row.loc['4-Nearest Neighbour Baseline', 'MNIST ours'] == 'not run'
  fashion = reproduce.build_table([], {}, ('fashion_mnist',))
  assert fashion.set_index('model').loc['PCA + 4-kNN',
                                        'Fashion-MNIST published'] == '—'
