"""K49 (Kuzushiji-49): PreActResNet-18 (KMNIST paper recipe, 200 epochs).

The recipe of configs/preact_resnet18.py on K49 (49 classes, scored by
balanced accuracy). Published: 96.64% K49 balanced accuracy (rois-codh/kmnist
README table, KMNIST paper).

  python -m kmnist_jax.main --config configs/k49_preact_resnet18.py --workdir W

Expected wall time: about 40 s/epoch, 2 h 15 min for the 200 epochs on one GPU
(estimate, 3.9x KMNIST).
There is no K49 data offline: `:proxy` trains on
K49's test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'preact_resnet18.py', 'k49', arg)
