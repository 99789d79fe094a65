"""4-nearest-neighbour baseline on KMNIST (rois-codh benchmark script).

scikit-learn's KNeighborsClassifier(n_neighbors=4, weights='distance') on the
raw pixels, reproduced exactly in JAX (kmnist_jax.baselines.knn). No training, no
epochs, deterministic: every seed gives the same number.
Published: 92.10% KMNIST test accuracy, 83.65% K49 balanced accuracy
(rois-codh/kmnist README table, benchmarks/kuzushiji_mnist_knn.py).

  python -m kmnist_jax.main --config configs/knn.py --workdir W
  python -m kmnist_jax.main --config configs/knn.py:proxy --workdir W

Expected wall time: under a minute on one GPU (60,000 x 10,000 distances);
about 5 s on the offline proxy on a 2-core CPU.
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model = 'knn'
  c.knn = configlib.knn_config()  # k 4.
  c.num_epochs = 1  # Unused: nothing is trained.
  c.write_plots = False
  return configlib.apply_variant(c, arg)
