"""The rois-codh "Keras simple CNN" on KMNIST, with its published recipe.

Adadelta (lr 1.0, rho 0.95, eps 1e-7), batch 128, 12 epochs.
Published: 94.63% KMNIST test accuracy, 89.36% K49 balanced accuracy
(rois-codh/kmnist README table, current data release; 95.12% and 89.25% on
the pre-2019-02-05 release).

  python -m kmnist_jax.main --config configs/keras_cnn.py --workdir W
  python -m kmnist_jax.main --config configs/keras_cnn.py:proxy --workdir W

Expected runtime on a 2-core CPU: about 6 s/epoch on the offline proxy
(8,000 images; 76 s for the 12 epochs on 2026-11-26), about 45 s/epoch on
the full 60,000 (estimate). Expected wall time on one GPU: about 5 s/epoch,
1 min for the 12 epochs (estimate).
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model = 'keras_cnn'
  c.num_epochs = 12
  c.batch_size = 128
  c.optimizer = 'adadelta'
  c.learning_rate = 1.0
  c.rho = 0.95
  c.eps = 1e-7
  return configlib.apply_variant(c, arg)
