"""PreActResNet-18 + manifold mixup on KMNIST (KMNIST paper, arXiv:1812.01718).

configs/preact_resnet18.py with manifold mixup, alpha 2.0, mixing at a
uniformly drawn point among the input and the outputs of the first two
stages (the manifold-mixup code's `mixup_hidden` setting). 200 epochs.
Published: 98.83% KMNIST test accuracy, 97.33% K49 balanced accuracy
(rois-codh/kmnist README table, on the pre-2019-02-05 data release).

  python -m kmnist_jax.main --config configs/preact_resnet18_manifold_mixup.py --workdir W
  python -m kmnist_jax.main --config configs/preact_resnet18_manifold_mixup.py:proxy --workdir W

Expected wall time on one GPU: about 10 s/epoch, 35 min for the 200 epochs
(estimate, A100-class); on the offline proxy on a 2-core CPU about
60-90 s/epoch.
"""

from kmnist_jax import configlib


def get_config(arg=None):
  c = configlib.sibling_config(__file__, 'preact_resnet18.py', 'kmnist', arg)
  c.manifold_mixup_alpha = 2.0
  return c
