"""PreActResNet-18 on KMNIST, as in the KMNIST paper (arXiv:1812.01718).

The network of the manifold-mixup reference code (kmnist_jax.resnets) with
its optimiser: SGD, momentum 0.9, learning rate 0.1, weight decay 1e-4,
batch 100; no augmentation. The paper does not state its epoch count or
schedule: 200 epochs with cosine decay here.
Published: 97.82% KMNIST test accuracy, 96.64% K49 balanced accuracy
(rois-codh/kmnist README table, on the pre-2019-02-05 data release).

  python -m kmnist_jax.main --config configs/preact_resnet18.py --workdir W
  python -m kmnist_jax.main --config configs/preact_resnet18.py:proxy --workdir W

Expected wall time on one GPU: about 10 s/epoch, 35 min for the 200 epochs
(estimate, A100-class); on the offline proxy on a 2-core CPU about
60-90 s/epoch.
"""

from kmnist_jax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model = 'preact_resnet18'
  c.num_epochs = 200
  c.batch_size = 100
  c.optimizer = 'sgd'
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 1e-4
  c.lr_schedule = 'cosine'
  c.eval_batch_size = 500
  return configlib.apply_variant(c, arg)
