"""Shake-Shake-26 2x96d (S-S-I) with Cutout 14 on KMNIST (hysts).

hysts' recipe: SGD with Nesterov momentum 0.9, learning rate 0.2 with cosine
annealing, weight decay 1e-4, batch 128, Cutout 14, 200 epochs.
Published: 99.34% KMNIST test accuracy (0.66% error, median of 3 runs; hysts
README "Results on Kuzushiji-MNIST", on the pre-2019-02-05 data release),
the best published single model; 98.29% K49 balanced accuracy (janzd,
rois-codh README table).

  python -m kmnist_jax.main --config configs/shake_shake26.py --workdir W
  python -m kmnist_jax.main --config configs/shake_shake26.py:proxy --workdir W

Expected wall time on one GPU: 6 h 46 min for the 200 epochs on a GTX 1080 Ti
(hysts), about 2 h on an A100-class GPU (estimate); on the offline proxy on a
2-core CPU 29 min/epoch (measured, idle).
"""

from kmnist_jax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model = 'shake_shake26_2x96d'
  c.num_epochs = 200
  c.batch_size = 128
  c.optimizer = 'sgd'
  c.learning_rate = 0.2
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 1e-4
  c.lr_schedule = 'cosine'
  c.cutout_size = 14
  c.eval_batch_size = 500
  return configlib.apply_variant(c, arg)
