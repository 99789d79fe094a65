"""K49 (Kuzushiji-49): our recipe (ResNet-preact-20, translation, Cutout 8,
label smoothing, one-cycle, TTA; 100 epochs).

The recipe of configs/best.py on K49 (49 classes, scored by balanced
accuracy). No published number: our entry (best published: 98.29% K49, shake-
shake).

  python -m kmnist_jax.main --config configs/k49_best.py --workdir W

Expected wall time: about 45 min for the 100 epochs on one GPU (estimate).
There is no K49 data offline: `:proxy` trains on K49's test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'best.py', 'k49', arg)
