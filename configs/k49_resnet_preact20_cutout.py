"""K49 (Kuzushiji-49): ResNet-preact-20 with Cutout 14 (hysts recipe, 200
epochs).

The recipe of configs/resnet_preact20_cutout.py on K49 (49 classes, scored by
balanced accuracy). No K49 number is published for this model (KMNIST: 99.18%,
hysts, on the pre-2019-02-05 data release).

  python -m kmnist_jax.main --config configs/k49_resnet_preact20_cutout.py --workdir W

Expected wall time: about 1 h 30 min for the 200 epochs on one GPU (estimate,
3.9x the 24 min of KMNIST on a GTX 1080 Ti).
There is no K49 data offline: `:proxy` trains on K49's test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'resnet_preact20_cutout.py', 'k49',
                                  arg)
