"""ResNet-preact-20 with Cutout 14 on KMNIST (hysts).

hysts' recipe: SGD with Nesterov momentum 0.9, learning rate 0.2 with cosine
annealing, weight decay 5e-4, batch 128, Cutout 14, 200 epochs.
Published: 99.18% KMNIST test accuracy (0.82% error, median of 3 runs;
hysts README "Results on Kuzushiji-MNIST", on the pre-2019-02-05 data
release); no K49 number published.

  python -m kmnist_jax.main --config configs/resnet_preact20_cutout.py --workdir W
  python -m kmnist_jax.main --config configs/resnet_preact20_cutout.py:proxy --workdir W

Expected wall time on one GPU: 24 min for the 200 epochs on a GTX 1080 Ti
(hysts), less on current GPUs; on the offline proxy on a 2-core CPU about
10-15 s/epoch.
"""

from kmnist_jax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model = 'resnet_preact20'
  c.num_epochs = 200
  c.batch_size = 128
  c.optimizer = 'sgd'
  c.learning_rate = 0.2
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 5e-4
  c.lr_schedule = 'cosine'
  c.cutout_size = 14
  return configlib.apply_variant(c, arg)
