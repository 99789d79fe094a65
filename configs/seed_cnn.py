"""The original project's notebook CNN (without its double-softmax bug).

Adam lr 1e-3, batch 400, 12 epochs, as in the notebook. The notebook reported
79.53% KMNIST test accuracy with the bug; this is the reference point.

  python -m kmnist_jax.main --config configs/seed_cnn.py --workdir W
  python -m kmnist_jax.main --config configs/seed_cnn.py:proxy --workdir W

Expected runtime on a 2-core CPU: about 2 s/epoch on the offline proxy,
about 12 s/epoch on the full 60,000.
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model = 'seed_cnn'
  c.num_epochs = 12
  c.batch_size = 400
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  return configlib.apply_variant(c, arg)
