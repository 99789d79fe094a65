"""A recipe on the offline proxy, for JAX and for the PyTorch port.

`compressed_config` loads a config of configs/ with its schedule compressed
to N epochs (what experiments.parity and experiments.speedrun train), and
`torch_recipe` derives from it the plain dict that the PyTorch side
(experiments/torch_fit.py) trains from.
"""

from __future__ import annotations

import inspect
import math

import optax

from experiments import reproduce
from experiments import schedules
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.train import optim
from kmnist_jax.models import resnets
from kmnist_jax.core.errors import UserError

# The models experiments/torch_models.py ports (torch is not importable here).
TORCH_MODELS = ('seed_cnn', 'keras_cnn', 'preact_resnet18', 'resnet_preact20',
                'shake_shake26_2x96d', 'densenet_bc100_k12', 'densenet100_k12')
TORCH_OPTIMIZERS = ('sgd', 'adam', 'adamw', 'adadelta')
RECIPE_FIELDS = (
    'model', 'num_epochs', 'batch_size', 'eval_batch_size', 'optimizer',
    'learning_rate', 'momentum', 'nesterov', 'weight_decay', 'beta1', 'beta2',
    'eps', 'rho', 'grad_clip_norm', 'lr_schedule', 'lr_decay',
    'augment_translate', 'cutout_size', 'cutout_fill', 'mixup_alpha',
    'manifold_mixup_alpha', 'label_smoothing', 'input_mean', 'input_std',
    'tta_shift')
PROXY_SIZES = (8000, 2000)  # test[:8000], test[8000:].
# The datasets whose test set the PyTorch side reads (torch_worker.load_test).
PROXY_DATASETS = ('kmnist', 'mnist', 'fashion_mnist')


def onecycle_params() -> dict:
  """The optax.cosine_onecycle_schedule defaults kmnist_jax.train.optim runs."""
  sig = inspect.signature(optax.cosine_onecycle_schedule).parameters
  return {k: sig[k].default for k in ('pct_start', 'div_factor',
                                      'final_div_factor')}


def scale_milestones(text: str, recipe_epochs: int, epochs: int) -> str:
  """'100,150' of 200 epochs -> the same fractions of `epochs`."""
  out = []
  for m in (int(e) for e in str(text).split(',') if e.strip()):
    scaled = math.floor(m * epochs / recipe_epochs + 0.5)
    out.append(max(scaled, out[-1] + 1 if out else 1))
  return ','.join(map(str, out))


def compressed_config(name: str, epochs: int, seed: int, data_dir: str = '',
                      steps_curve: int = 0,
                      sizes: tuple[int, int] = PROXY_SIZES,
                      matmul_precision: str = 'default',
                      eval_every_epoch: bool = False,
                      k49_on_kmnist: bool = False, batch_size: int = 0,
                      dataset: str = '', compute_dtype: str = 'float32'):
  """Config `name` (`:proxy`) with its schedule compressed to `epochs`, its
  JAX side at `matmul_precision` and `compute_dtype`; a K49 recipe on the KMNIST proxy with
  `k49_on_kmnist`; `batch_size` in place of the recipe's when not 0; on
  `dataset`'s proxy (`configs/<name>.py:<dataset>,proxy`) when given."""
  c = reproduce.load_config(name, 'proxy', seed, {}, data_dir, dataset)
  if batch_size:
    c.batch_size = batch_size  # Both sides: torch_recipe reads it from c.
  if k49_on_kmnist and c.dataset == 'k49':
    c.dataset = 'kmnist'  # The recipe; KMNIST's proxy data and 10 classes.
  check_portable(name, c)
  recipe_epochs = c.num_epochs
  c.num_epochs = epochs
  c.warmup_epochs = c.warmup_epochs * epochs / recipe_epochs
  if c.lr_schedule == 'multistep':
    c.lr_milestones = scale_milestones(c.lr_milestones, recipe_epochs, epochs)
  c.log_loss_steps, c.write_plots = steps_curve, False
  # Only the final accuracy, as PyTorch's, unless every epoch's is asked.
  c.eval_from_epoch = 1 if eval_every_epoch else epochs
  c.matmul_precision = matmul_precision
  c.compute_dtype = compute_dtype
  if tuple(sizes) != PROXY_SIZES:
    n, m = sizes
    c.train_split, c.eval_split = f'test[:{n}]', f'test[8000:{8000 + m}]'
  return c


def check_portable(name: str, c) -> None:
  """One line for what the PyTorch side cannot run."""
  problems = []
  if c.model not in TORCH_MODELS:
    problems.append(f'model {c.model!r} has no PyTorch port '
                    f'({", ".join(TORCH_MODELS)})')
  if c.dataset not in PROXY_DATASETS:
    problems.append(f'dataset {c.dataset!r}: the proxy is a 10-class test '
                    f'set ({", ".join(PROXY_DATASETS)}; --k49_on_kmnist runs '
                    'a K49 recipe on KMNIST\'s)')
  if c.optimizer not in TORCH_OPTIMIZERS:
    problems.append(f'optimizer {c.optimizer!r}')
  if c.lr_schedule not in schedules.SCHEDULES:
    problems.append(f'lr_schedule {c.lr_schedule!r} (expected one of '
                    f'{", ".join(schedules.SCHEDULES)})')
  if c.compute_dtype != 'float32':
    problems.append(f'compute_dtype {c.compute_dtype!r}')
  if problems:
    raise UserError(f'--configs {name}: ' + '; '.join(problems))


def torch_recipe(c, sizes: tuple[int, int] = PROXY_SIZES) -> dict:
  """The plain dict the PyTorch side trains from (see torch_fit.py)."""
  r = {k: c[k] for k in RECIPE_FIELDS}
  r['lr_milestones'] = (optim.parse_milestones(c)
                        if c.lr_schedule == 'multistep' else [])
  r['onecycle'] = onecycle_params()
  r['mixup_points'] = resnets.MIXUP_POINTS.get(c.model, 0)
  r['num_classes'] = data_lib.get_info(c.dataset).num_classes
  r['train_examples'], r['eval_examples'] = map(int, sizes)
  return r

