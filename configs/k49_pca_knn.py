"""K49 (Kuzushiji-49): PCA + 4-NN (60 components).

The recipe of configs/pca_knn.py on K49 (49 classes, scored by balanced
accuracy). Published: 86.80% K49 balanced accuracy (rois-codh/kmnist README
table, issues #10 and #13).

  python -m kmnist_jax.main --config configs/k49_pca_knn.py --workdir W

Expected wall time: No training; about a minute on one GPU. There is no K49
data offline: `:proxy` trains on K49's test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'pca_knn.py', 'k49', arg)
