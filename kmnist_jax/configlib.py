"""Shared config fields and the `:proxy` / `:smoke` variants.

Each `configs/<exp>.py` builds on `base_config()` and ends with
`return apply_variant(config, arg)`, so every experiment accepts:

* `:proxy`: the offline proxy. Trains on `test[:8000]` and evaluates on
  `test[8000:]` of the real test set, with no test split and no other change.
  Its figures are never KMNIST benchmark results.
* `:smoke`: the proxy shrunk to two train steps of 32 images and one eval
  batch of 64, for tests.
"""

from __future__ import annotations

import os

import ml_collections

from kmnist_jax.errors import UserError

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
  # 'bfloat16': bf16 compute with float32 params (GPU/TPU); 'float32'.
  c.compute_dtype = 'float32'
  # 'bfloat16': convolutions and matmuls take bfloat16 operands and sum in
  # float32, everything else float32 (on this project's CPU: oneDNN's
  # bfloat16 convolutions, kmnist_jax.cpu.conv); 'default': JAX's precision.
  c.matmul_precision = 'default'
  # Input scaling: the model sees (pixel / 255 - input_mean) / input_std.
  c.input_mean = 0.0
  c.input_std = 1.0
  # Optimizer.
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  c.lr_schedule = 'constant'
  c.warmup_epochs = 0.0
  # lr_schedule 'multistep': the rate times lr_decay from each of these epochs
  # on (comma-separated, e.g. '100,150').
  c.lr_milestones = ''
  c.lr_decay = 0.1
  c.weight_decay = 0.0
  c.label_smoothing = 0.0
  c.momentum = 0.9
  c.nesterov = False
  c.beta1 = 0.9
  c.beta2 = 0.999
  c.eps = 1e-8
  c.rho = 0.95
  c.grad_clip_norm = 0.0  # 0 = off.
  # Augmentation and test-time augmentation (kmnist_jax.augment); 0 = off.
  c.augment_translate = 0  # Max random shift in pixels (crop with padding).
  c.cutout_size = 0  # Side of the Cutout square in pixels.
  c.cutout_fill = 0.0  # Value of the Cutout square, in [0, 1] (0 = black).
  c.mixup_alpha = 0.0  # Input mixup Beta(alpha, alpha).
  c.manifold_mixup_alpha = 0.0  # Manifold mixup Beta(alpha, alpha).
  c.tta_shift = 0  # Eval: mean probability over shifts {-s, 0, s}^2.
  # k-NN baselines (model 'knn' / 'pca_knn', kmnist_jax.knn).
  c.knn_k = 4
  c.pca_components = 60
  # RBF SVM baseline (model 'svm', kmnist_jax.svm): SVC(C=svm_c,
  # gamma=svm_gamma) on pixels / 255.
  c.svm_c = 10.0
  c.svm_gamma = 0.02
  # Run.
  c.seed = 0
  c.checkpoint_every_steps = 0  # 0 = at the end of each epoch only.
  c.keep_checkpoints = 3
  c.log_every_steps = 100
  # The first this many train steps each write their loss to metrics.jsonl
  # (split 'step'; experiments/parity.py reads them); 0 = none.
  c.log_loss_steps = 0
  # Evaluate at the end of each epoch from this one on (and always after the
  # last); earlier epochs record train metrics and checkpoint only.
  c.eval_from_epoch = 1
  c.write_plots = True
  return c


def is_proxy(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` trains on the offline proxy's split (`:proxy`)."""
  return config.train_split == PROXY_TRAIN


def load_config_file(path: str, arg: str = '') -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path` (e.g. configs/knn.py)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  name = 'kmnist_jax_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or not os.path.isfile(path):
    raise UserError(f'{path}: no such config file')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def sibling_config(this_file: str, name: str, dataset: str,
                   arg: str | None) -> ml_collections.ConfigDict:
  """The config `name` next to `this_file`, on `dataset`, with variant arg
  (as that config applies it).

  The K49 configs are their KMNIST recipe on the other dataset.
  """
  c = load_config_file(os.path.join(os.path.dirname(this_file), name), arg)
  c.dataset = dataset
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
    # Two train steps of 32 and one eval batch: what the tests need to see
    # every config compile, train, evaluate and checkpoint.
    config.train_split, config.eval_split = 'test[:64]', 'test[8000:8064]'
    config.test_split = ''
    config.num_epochs = 1
    config.batch_size = min(config.batch_size, 32)
    config.eval_batch_size = 64
    config.log_every_steps = 1
    config.write_plots = False
    return config
  raise ValueError(f'unknown config variant {arg!r}; valid: proxy, smoke '
                   '(or none for the full experiment)')
