"""Shared config fields and the `:proxy` / `:smoke` variants.

Each `configs/<exp>.py` builds on `base_config()` and ends with
`return apply_variant(config, arg)`, so every experiment accepts:

* `:proxy`: the offline proxy. Trains on `test[:8000]` and evaluates on
  `test[8000:]` of the real test set (the dataset's `proxy_splits`), with no
  test split and no other change. Its figures are never benchmark results.
* `:smoke`: the proxy shrunk to two train steps of 32 images and one eval
  batch of 64, for tests.
* `:<dataset>` (`:mnist`, `:fashion_mnist`, `:kmnist`, `:k49`): the same
  recipe on another registered dataset, its normalisation constants
  included (`set_dataset`). Combine with a variant: `:mnist,proxy`.
"""

from __future__ import annotations

import os

import ml_collections

from kmnist_jax.data import datasets as data_lib
from kmnist_jax.core.errors import UserError

# KMNIST's `:proxy` splits (every registered dataset has the same today).
PROXY_TRAIN, PROXY_EVAL = data_lib.DATASETS['kmnist'].proxy_splits
VARIANTS = ('proxy', 'smoke')
# The fields that follow the dataset's recipe constants (`use_dataset_stats`).
_STAT_FIELDS = {'input_mean': 'mean', 'input_std': 'std', 'cutout_fill': 'mean'}


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
  # Augmentation and test-time augmentation (kmnist_jax.train.augment); 0 = off.
  c.augment_translate = 0  # Max random shift in pixels (crop with padding).
  c.cutout_size = 0  # Side of the Cutout square in pixels.
  c.cutout_fill = 0.0  # Value of the Cutout square, in [0, 1] (0 = black).
  c.mixup_alpha = 0.0  # Input mixup Beta(alpha, alpha).
  c.manifold_mixup_alpha = 0.0  # Manifold mixup Beta(alpha, alpha).
  c.tta_shift = 0  # Eval: mean probability over shifts {-s, 0, s}^2.
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


def knn_config() -> ml_collections.ConfigDict:
  """`config.knn`, the k-NN baselines' slice (model 'knn' / 'pca_knn',
  kmnist_jax.baselines.knn): configs/knn.py and configs/pca_knn.py."""
  c = ml_collections.ConfigDict()
  c.k = 4  # Neighbours.
  c.pca_components = 60  # pca_knn: PCA dimensions.
  return c


def svm_config() -> ml_collections.ConfigDict:
  """`config.svm`, the RBF SVM baseline's slice (model 'svm',
  kmnist_jax.baselines.svm): SVC(C=c, gamma=gamma) on pixels / 255."""
  c = ml_collections.ConfigDict()
  c.c = 10.0
  c.gamma = 0.02
  return c


# The method slices: a config carries the one its model uses.
SLICES = {'knn': knn_config, 'svm': svm_config}
# The flat fields of runs before the slices, and where they live now.
RENAMED = {'knn_k': 'knn.k', 'pca_components': 'knn.pca_components',
           'svm_c': 'svm.c', 'svm_gamma': 'svm.gamma'}
# The slice each model uses.
MODEL_SLICES = {'knn': 'knn', 'pca_knn': 'knn', 'svm': 'svm'}


def upgrade(saved: dict) -> dict:
  """A config.json of any version as today's fields: the flat fields of runs
  before the slices (`RENAMED`) move into the slice their model uses (and
  are dropped for other models), and fields newer than the run take their
  defaults (the base config's, and its model's slice's)."""
  saved = dict(saved)
  moved = {old: saved.pop(old) for old in RENAMED if old in saved}
  slice_name = MODEL_SLICES.get(saved.get('model'))
  out = base_config().to_dict()
  if slice_name:
    out[slice_name] = SLICES[slice_name]().to_dict()
    for old, value in moved.items():
      where, field = RENAMED[old].split('.')
      if where == slice_name:
        out[slice_name][field] = value
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(out.get(key), dict):
      out[key] = {**out[key], **value}
    else:
      out[key] = value
  return out


def use_dataset_stats(config: ml_collections.ConfigDict,
                      fields=('input_mean', 'input_std')) -> None:
  """Sets `fields` (of input_mean, input_std, cutout_fill: the mean, std and
  mean) to the constants the published recipes use on `config.dataset`;
  `set_dataset` keeps them so on another dataset."""
  info = data_lib.get_info(config.dataset)
  for field in fields:
    config[field] = getattr(info, _STAT_FIELDS[field])


def set_dataset(config: ml_collections.ConfigDict, name: str) -> None:
  """Moves `config` to dataset `name`: the fields holding the old dataset's
  recipe constants (`use_dataset_stats`) get the new dataset's."""
  old, new = data_lib.get_info(config.dataset), data_lib.get_info(name)
  for field, stat in _STAT_FIELDS.items():
    if field in config and config[field] == getattr(old, stat):
      config[field] = getattr(new, stat)
  config.dataset = new.name


def check_dataset_stats(config: ml_collections.ConfigDict) -> None:
  """Refuses a config whose normalisation is another dataset's recipe
  constants, as `--config.dataset=mnist` on configs/resnet_preact20_cutout.py
  leaves it; `configs/<exp>.py:mnist` moves them with the dataset."""
  info = data_lib.get_info(config.dataset)
  stats = (config.input_mean, config.input_std)
  if stats == (info.mean, info.std) or stats == (0.0, 1.0):
    return
  for other in data_lib.DATASETS.values():
    if stats == (other.mean, other.std):
      raise UserError(
          f'config.input_mean, config.input_std = {stats[0]}, {stats[1]} are '
          f'{other.title}\'s recipe constants, but config.dataset is '
          f'{config.dataset!r} ({info.mean}, {info.std}); select the dataset '
          f'with the config file\'s argument, e.g. configs/<exp>.py:'
          f'{config.dataset}, or set both fields')


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
  """The config `name` next to `this_file`, on `dataset` unless `arg` names
  another, with variant arg (as that config applies it).

  The K49 configs are their KMNIST recipe on the other dataset.
  """
  c = load_config_file(os.path.join(os.path.dirname(this_file), name), arg)
  if not set(_tokens(arg)) & set(data_lib.DATASETS):
    set_dataset(c, dataset)
  return c


def _tokens(arg: str | None) -> list[str]:
  return [t.strip() for t in (arg or '').split(',') if t.strip()]


def apply_variant(config: ml_collections.ConfigDict, arg: str | None,
                  per_dataset: dict | None = None
                  ) -> ml_collections.ConfigDict:
  """Applies the `:arg` of `--config=file.py:arg`: comma-separated, at most
  one dataset name (`set_dataset`) and one of `VARIANTS`.

  `per_dataset[name]`: the fields a recipe sets differently on dataset
  `name` (its source's own recipe there), applied before the variant.
  """
  tokens = _tokens(arg)
  datasets = [t for t in tokens if t in data_lib.DATASETS]
  variants = [t for t in tokens if t in VARIANTS]
  unknown = [t for t in tokens if t not in datasets + variants + ['full']]
  if unknown or len(datasets) > 1 or len(variants) > 1:
    raise ValueError(
        f'unknown config variant {arg!r}; valid: {", ".join(VARIANTS)}, a '
        f'dataset ({", ".join(data_lib.DATASETS)}) or one of each, '
        'comma-separated (e.g. mnist,proxy); none for the full experiment')
  if datasets:
    set_dataset(config, datasets[0])
  config.update((per_dataset or {}).get(config.dataset, {}))
  if not variants:
    return config
  proxy_train, proxy_eval = data_lib.get_info(config.dataset).proxy_splits
  if variants[0] == 'proxy':
    config.train_split, config.eval_split = proxy_train, proxy_eval
    config.test_split = ''
    return config
  # smoke: two train steps of 32 and one eval batch, inside the proxy's
  # splits: what the tests need to see every config compile, train,
  # evaluate and checkpoint.
  start = data_lib.parse_split(proxy_eval).start.value
  config.train_split, config.eval_split = 'test[:64]', (
      f'test[{start}:{start + 64}]')
  config.test_split = ''
  config.num_epochs = 1
  config.batch_size = min(config.batch_size, 32)
  config.eval_batch_size = 64
  config.log_every_steps = 1
  config.write_plots = False
  return config
