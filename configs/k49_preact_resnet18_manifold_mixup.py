"""K49 (Kuzushiji-49): PreActResNet-18 + manifold mixup (alpha 2.0, 200 epochs).

The recipe of configs/preact_resnet18_manifold_mixup.py on K49 (49 classes,
scored by balanced accuracy). Published: 97.33% K49 balanced accuracy (rois-
codh/kmnist README table, KMNIST paper).

  python -m kmnist_jax.main --config configs/k49_preact_resnet18_manifold_mixup.py --workdir W

Expected wall time: about 40 s/epoch, 2 h 15 min for the 200 epochs on one GPU
(estimate).
There is no K49 data offline: `:proxy` trains on K49's
test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(
      __file__, 'preact_resnet18_manifold_mixup.py', 'k49', arg)
