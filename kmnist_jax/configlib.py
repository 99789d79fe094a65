"""Shared config fields and the `:proxy` / `:smoke` variants.

Each `configs/<exp>.py` builds on `base_config()` and ends with
`return apply_variant(config, arg)`, so every experiment accepts:

* `:proxy`: the offline proxy. Trains on `test[:8000]` and evaluates on
  `test[8000:]` of the real test set, with no test split and no other change.
  Its figures are never KMNIST benchmark results.
* `:smoke`: the proxy shrunk to a few steps, for tests.
"""

from __future__ import annotations

import ml_collections

PROXY_TRAIN = 'test[:8000]'
PROXY_EVAL = 'test[8000:]'


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Data.
  c.dataset = 'kmnist'
  c.data_dir = ''  # '' = env KMNIST_JAX_DATA_DIR, else ~/.cache/kmnist_jax.
  c.train_split = 'train'
  c.eval_split = 'test'
  c.test_split = ''  # '' = none.
  # Model and batching.
  c.model = 'keras_cnn'
  c.num_epochs = 12
  c.batch_size = 128
  c.eval_batch_size = 1000
  # Optimizer.
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.lr_schedule = 'constant'
  c.warmup_epochs = 0.0
  c.weight_decay = 0.0
  c.label_smoothing = 0.0
  c.momentum = 0.9
  c.nesterov = False
  c.beta1 = 0.9
  c.beta2 = 0.999
  c.eps = 1e-8
  c.rho = 0.95
  c.grad_clip_norm = 0.0  # 0 = off.
  # Run.
  c.seed = 0
  c.checkpoint_every_steps = 0  # 0 = at the end of each epoch only.
  c.keep_checkpoints = 3
  c.log_every_steps = 100
  c.write_plots = True
  return c


def apply_variant(config: ml_collections.ConfigDict,
                  arg: str | None) -> ml_collections.ConfigDict:
  """Applies the variant named by the `:arg` of `--config=file.py:arg`."""
  arg = (arg or '').strip()
  if arg in ('', 'full'):
    return config
  if arg == 'proxy':
    config.train_split, config.eval_split = PROXY_TRAIN, PROXY_EVAL
    config.test_split = ''
    return config
  if arg == 'smoke':
    config.train_split, config.eval_split = 'test[:256]', 'test[8000:8200]'
    config.test_split = ''
    config.num_epochs = 1
    config.batch_size = min(config.batch_size, 64)
    config.eval_batch_size = 100
    config.log_every_steps = 2
    config.write_plots = False
    return config
  raise ValueError(f'unknown config variant {arg!r}; valid: proxy, smoke '
                   '(or none for the full experiment)')
