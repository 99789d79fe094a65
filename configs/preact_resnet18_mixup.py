"""PreActResNet-18 + input mixup on KMNIST (KMNIST paper, arXiv:1812.01718).

configs/preact_resnet18.py with input mixup, alpha 1.0 (the manifold-mixup
code's setting for input mixup). 200 epochs, cosine decay.
Published: 98.41% KMNIST test accuracy, 97.04% K49 balanced accuracy
(rois-codh/kmnist README table, on the pre-2019-02-05 data release).

  python -m kmnist_jax.main --config configs/preact_resnet18_mixup.py --workdir W
  python -m kmnist_jax.main --config configs/preact_resnet18_mixup.py:proxy --workdir W

Expected wall time on one GPU: about 10 s/epoch, 35 min for the 200 epochs
(estimate, A100-class); on the offline proxy on a 2-core CPU about
60-90 s/epoch.
"""

from kmnist_jax import configlib


def get_config(arg=None):
  c = configlib.sibling_config(__file__, 'preact_resnet18.py', 'kmnist', arg)
  c.mixup_alpha = 1.0
  return c
