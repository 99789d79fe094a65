"""The rois-codh k-NN baselines in scikit-learn, beside ours, on the same files.

An independent check of `configs/knn.py` and `configs/pca_knn.py` on a full
MNIST-format dataset (60,000 / 10,000): the idx files are read here with
gzip and numpy alone, then

* 4-NN: rois-codh benchmarks/kuzushiji_mnist_knn.py,
  `KNeighborsClassifier(n_neighbors=4, weights='distance')` on raw pixels;
* PCA + 4-kNN: rois-codh issue #13, `PCA(n_components=60, random_state=0)`
  with scikit-learn's default solver, then the same 4-NN; and the same with
  `svd_solver='randomized'`, the solver that default picked before
  scikit-learn 1.5 ('auto' now picks 'covariance_eigh' for 60,000 x 784).

Each is compared prediction for prediction with our workdir's
`probabilities_test.npz` (written by `--mode eval`):

  .venv/bin/python -m kmnist_jax.main --config configs/knn.py:mnist --workdir W/knn
  .venv/bin/python -m kmnist_jax.main --mode eval --workdir W/knn
  (the same for pca_knn)
  .venv/bin/python -m experiments.sklearn_baselines --data_dir ../shared/data/mnist \
      --knn_workdir W/knn --pca_workdir W/pca_knn --out experiments/results/mnist/sklearn_knn
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import sys
import time

import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

if __name__ == '__main__' and not __package__:  # A file, not -m.
  print('run it from the repository root as: python -m '
        'experiments.sklearn_baselines [options]', file=sys.stderr)
  sys.exit(2)

# pylint: disable=wrong-import-position
from kmnist_jax.cpu import features


def read_idx(path: pathlib.Path) -> np.ndarray:
  """An idx file (gzipped or not) as a uint8 array, by its header."""
  opener = gzip.open if path.name.endswith('.gz') else open
  with opener(path, 'rb') as f:
    raw = f.read()
  ndim = raw[3]
  dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir: pathlib.Path):
  def get(stem):
    gz = data_dir / f'{stem}.gz'
    return read_idx(gz if gz.exists() else data_dir / stem)
  return (get('train-images-idx3-ubyte').reshape(60000, -1),
          get('train-labels-idx1-ubyte'),
          get('t10k-images-idx3-ubyte').reshape(10000, -1),
          get('t10k-labels-idx1-ubyte'))


def ours(workdir: str) -> np.ndarray | None:
  if not workdir:
    return None
  with np.load(pathlib.Path(workdir) / 'probabilities_test.npz') as z:
    order = np.argsort(z['indices'])
    return np.argmax(z['probabilities'][order], axis=1)


def compare(name: str, pred: np.ndarray, y: np.ndarray,
            mine: np.ndarray | None, seconds: float) -> dict:
  row = {'method': name, 'sklearn_accuracy': float((pred == y).mean()),
         'sklearn_seconds': round(seconds, 1)}
  if mine is not None:
    row['ours_accuracy'] = float((mine == y).mean())
    row['predictions_differing'] = int((mine != pred).sum())
  print(json.dumps(row), flush=True)
  return row


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--data_dir', required=True)
  p.add_argument('--knn_workdir', default='')
  p.add_argument('--pca_workdir', default='')
  p.add_argument('--out', default='')
  args = p.parse_args(argv)
  x, y, xt, yt = load(pathlib.Path(args.data_dir))
  rows = []
  t = time.time()
  knn = KNeighborsClassifier(n_neighbors=4, weights='distance')
  pred = knn.fit(x, y).predict(xt)
  rows.append(compare('4-NN', pred, yt, ours(args.knn_workdir),
                      time.time() - t))
  mine = ours(args.pca_workdir)
  for solver in ('auto', 'randomized'):
    t = time.time()
    pca = PCA(n_components=60, random_state=0, svd_solver=solver).fit(x)
    knn = KNeighborsClassifier(n_neighbors=4, weights='distance')
    pred = knn.fit(pca.transform(x), y).predict(pca.transform(xt))
    rows.append(compare(f'PCA + 4-kNN (svd_solver={solver!r}: '
                        f'{getattr(pca, "_fit_svd_solver", solver)})', pred,
                        yt, mine, time.time() - t))
  if args.out:
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {'data_dir': args.data_dir, 'sklearn': sklearn.__version__,
            'cpu': features.describe()}
    out.with_suffix('.json').write_text(json.dumps(
        {'meta': meta, 'rows': rows}, indent=1) + '\n')
    print(f'wrote {out.with_suffix(".json")}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
