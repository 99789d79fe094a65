"""K49 (Kuzushiji-49): 4-nearest-neighbour baseline.

The recipe of configs/knn.py on K49 (49 classes, scored by balanced accuracy).
Published: 83.65% K49 balanced accuracy (rois-codh/kmnist README table).

  python -m kmnist_jax.main --config configs/k49_knn.py --workdir W

Expected wall time: No training; under a minute on one GPU (232,365 x 38,547
distances).
There is no K49 data offline: `:proxy` trains on K49's
test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'knn.py', 'k49', arg)
