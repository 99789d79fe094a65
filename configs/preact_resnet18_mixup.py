"""PreActResNet-18 + input mixup on KMNIST (KMNIST paper, arXiv:1812.01718).

configs/preact_resnet18.py (SGD 0.1, Nesterov momentum 0.9, weight decay
1e-4, batch 100, 200 epochs, x0.1 at epochs 100 and 150) with input mixup,
alpha 1.0: the "How to run Supervised Input Mixup" command of
vikasverma1077/manifold_mixup supervised/README.md at commit
7d367dcd2a3e839bac2b4ace88a7c5fa42eee4b6 (`--mixup --mixup_alpha 1.0
--epochs 200 --batch_size 100 --schedule 100 150 --gammas 0.1 0.1`). One
Beta(1, 1) weight per batch (train_classifier_mixup.py `mixup_data`).
What the source does not settle: see configs/preact_resnet18.py.
Published: 98.41% KMNIST test accuracy, 97.04% K49 balanced accuracy
(rois-codh/kmnist README table, on the pre-2019-02-05 data release).

  python -m kmnist_jax.main --config configs/preact_resnet18_mixup.py --workdir W
  python -m kmnist_jax.main --config configs/preact_resnet18_mixup.py:proxy --workdir W

Expected wall time on one GPU: about 10 s/epoch, 35 min for the 200 epochs
(estimate, A100-class); on the offline proxy on a 2-core CPU about
60-90 s/epoch.
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  c = configlib.sibling_config(__file__, 'preact_resnet18.py', 'kmnist', arg)
  c.mixup_alpha = 1.0
  return c
