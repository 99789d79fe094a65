"""K49 (Kuzushiji-49): Keras simple CNN (Adadelta, 12 epochs).

The recipe of configs/keras_cnn.py on K49 (49 classes, scored by balanced
accuracy). Published: 89.36% K49 balanced accuracy (rois-codh/kmnist README
table, current release; 89.25% before the 2019-02-05 data fix).

  python -m kmnist_jax.main --config configs/k49_keras_cnn.py --workdir W

Expected wall time: about 20 s/epoch, 4 min for the 12 epochs on one GPU
(estimate).
There is no K49 data offline: `:proxy` trains on K49's
test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'keras_cnn.py', 'k49', arg)
