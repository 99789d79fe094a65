"""K49 (Kuzushiji-49): Shake-Shake-26 2x96d (S-S-I) with Cutout 14 (200 epochs).

The recipe of configs/shake_shake26.py on K49 (49 classes, scored by balanced
accuracy). Published: 98.29% K49 balanced accuracy
(janzd/pytorch_image_classification, rois-codh/kmnist README table).

  python -m kmnist_jax.main --config configs/k49_shake_shake26.py --workdir W

Expected wall time: about 8 h for the 200 epochs on an A100-class GPU
(estimate, 3.9x KMNIST).
There is no K49 data offline: `:proxy` trains on
K49's test[:8000].
"""

from kmnist_jax import configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'shake_shake26.py', 'k49', arg)
