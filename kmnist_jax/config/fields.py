"""Every config field, checked in one place before any work, in every mode.

`check_config` runs for training (and the k-NN and SVM fits), `--mode eval`,
`--mode predict` and ensembles, on a `--config` as on a workdir's saved
`config.json`: each field of `FIELDS` must have its type (an int where an
int is expected, never a bool; a float field takes ints too), be finite and
lie in its range. Sizes are bounded so that no batch asks for more memory
than a machine has (`MAX_BATCH`), and seeds fit the 32 bits every random
generator here takes. A bad field is one line: `config.<field>=<value>:
expected ...`.

Fields the table does not know are left alone; a `--config` that lacks one
of `FIELDS` is refused, a saved config (an older run) takes its default.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import ml_collections

from kmnist_jax.core.errors import UserError

# Examples per batch: 131,072 28x28 images are 400 MiB of float32 input,
# before any activation; larger batches only exhaust memory.
MAX_BATCH = 1 << 17
MAX_SEED = 2**32 - 1
_BIG = 10**9  # Step and epoch counts: beyond any run.
_INF = math.inf


@dataclasses.dataclass(frozen=True)
class Field:
  """What one config field must hold.

  kind: 'int', 'float', 'bool', 'str' or 'split' (a split string; '' allowed
  when `empty`). lo/hi: the range of a number, closed unless lo_open/hi_open.
  choices: a function returning the valid strings (imported lazily).
  note: said after what is expected, e.g. '(0 = off)'. check: a function
  that raises `UserError` for a bad value (the dataset registry's).
  """
  kind: str
  lo: float = -_INF
  hi: float = _INF
  lo_open: bool = False
  hi_open: bool = False
  choices: Callable[[], Any] | None = None
  empty: bool = False
  note: str = ''
  check: Callable[[Any], Any] | None = None


def _dataset(name):
  from kmnist_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  data.get_info(name)


def _precision(attr):
  def choices():
    from kmnist_jax.models import precision  # pylint: disable=g-import-not-at-top
    return list(getattr(precision, attr))
  return choices


def _optim(attr):
  def choices():
    from kmnist_jax.train import optim  # pylint: disable=g-import-not-at-top
    return sorted(getattr(optim, attr))
  return choices


def _int(lo, hi, note=''):
  return Field('int', lo, hi, note=note)


def _float(lo=-_INF, hi=_INF, lo_open=False, hi_open=False):
  return Field('float', lo, hi, lo_open, hi_open)


_OFF = '(0 = off)'
FIELDS: dict[str, Field] = {
    'dataset': Field('str', check=_dataset),
    'data_dir': Field('str'),
    'train_split': Field('split'),
    'eval_split': Field('split'),
    'test_split': Field('split', empty=True),
    'model': Field('str'),  # Its registry checks it: models.create_model.
    'num_epochs': _int(1, 100_000),
    'batch_size': _int(1, MAX_BATCH),
    'eval_batch_size': _int(1, MAX_BATCH),
    'compute_dtype': Field('str', choices=_precision('COMPUTE_DTYPES')),
    'matmul_precision': Field('str', choices=_precision('MATMUL_PRECISIONS')),
    'input_mean': _float(),
    'input_std': _float(0, lo_open=True),
    'optimizer': Field('str', choices=_optim('OPTIMIZERS')),
    'learning_rate': _float(0, lo_open=True),
    'lr_schedule': Field('str', choices=_optim('SCHEDULES')),
    'warmup_epochs': _float(0, 100_000),
    'lr_milestones': Field('str'),
    'lr_decay': _float(0),
    'weight_decay': _float(0),
    'label_smoothing': _float(0, 1, hi_open=True),
    'momentum': _float(0, 1),
    'nesterov': Field('bool'),
    'beta1': _float(0, 1, hi_open=True),
    'beta2': _float(0, 1, hi_open=True),
    'eps': _float(0),
    'rho': _float(0, 1),
    'grad_clip_norm': _float(0),
    'augment_translate': _int(0, 14, _OFF),
    'cutout_size': _int(0, 28, _OFF),
    'cutout_fill': _float(0, 1),
    'mixup_alpha': _float(0),
    'manifold_mixup_alpha': _float(0),
    'tta_shift': _int(0, 14, _OFF),
    'seed': _int(0, MAX_SEED),
    'checkpoint_every_steps': _int(0, _BIG, '(0 = at each epoch end)'),
    'keep_checkpoints': _int(1, 1_000_000),
    'log_every_steps': _int(1, _BIG),
    'log_loss_steps': _int(0, _BIG, '(0 = none)'),
    'eval_from_epoch': _int(1, 100_000),
    'write_plots': Field('bool'),
    # The method slices (`configlib.SLICES`): checked where a config has one.
    'knn.k': _int(1, 100_000),
    'knn.pca_components': _int(1, 784),
    'svm.c': _float(0, lo_open=True),
    'svm.gamma': _float(0, lo_open=True),
}


def _number(spec: Field) -> str:
  """'a positive integer up to 131,072', 'a number in [0, 1)', ..."""
  lo, hi = spec.lo, spec.hi
  if spec.kind == 'int':
    if lo == 1 and hi >= 100_000:
      text = 'a positive integer' + (f' up to {hi:,}' if hi < _BIG else '')
    elif lo == 0 and hi == _BIG:
      text = 'an integer >= 0'
    else:
      text = f'an integer in [{lo:,}, {hi:,}]'
  elif lo == -_INF and hi == _INF:
    text = 'a finite number'
  elif hi == _INF:
    text = 'a positive number' if lo == 0 and spec.lo_open else (
        f'a number >= {lo:g}')
  else:
    text = (f'a number in {"(" if spec.lo_open else "["}{lo:g}, {hi:g}'
            f'{")" if spec.hi_open else "]"}')
  return f'{text} {spec.note}' if spec.note else text


def problem(value: Any, spec: Field) -> str | None:
  """What a field of `spec` should hold, when `value` does not; else None."""
  if spec.kind in ('int', 'float'):
    kinds = (int,) if spec.kind == 'int' else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not (
        math.isfinite(value)):
      return f'expected {_number(spec)}'
    low = value <= spec.lo if spec.lo_open else value < spec.lo
    high = value >= spec.hi if spec.hi_open else value > spec.hi
    return f'expected {_number(spec)}' if low or high else None
  if spec.kind == 'bool':
    return None if isinstance(value, bool) else 'expected true or false'
  if not isinstance(value, str):
    return 'expected a string'
  if spec.kind == 'split' and not (spec.empty and value == ''):
    from kmnist_jax.data import splits  # pylint: disable=g-import-not-at-top
    try:
      splits.parse_split(value)
    except UserError as e:
      return str(e)
  if spec.choices is not None and value not in spec.choices():
    return f'expected one of {", ".join(spec.choices())}'
  if spec.check is not None:
    try:
      spec.check(value)
    except UserError as e:
      return str(e)
  return None


def check_config(config: Any, source: str = '',
                 complete: bool = True) -> None:
  """Raises `UserError` (one line) for the first bad field of `config`.

  Args:
    config: the ConfigDict of a run.
    source: where it comes from (a config.json path), for the message.
    complete: whether every field of `FIELDS` must be present (a `--config`);
      else a missing one takes its default (a saved config of an older run).
  """
  where = f'{source}: ' if source else ''
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f'{where}config of type {type(config).__name__}; expected '
                    'an ml_collections.ConfigDict built on '
                    'configlib.base_config()')
  found = {name: _lookup(config, name) for name in FIELDS}
  missing = [name for name, got in found.items() if got is _MISSING
             and ('.' not in name or _lookup(config, _slice(name))
                  is not _MISSING)]
  if missing and complete:
    raise UserError(f'{where}config lacks field(s) {", ".join(missing)}; '
                    'expected a config built on configlib.base_config()')
  for name, spec in FIELDS.items():
    value = found[name]
    if value is _MISSING:
      continue
    why = problem(value, spec)
    if why:
      raise UserError(f'{where}config.{name}={value!r}: {why}')


_MISSING = object()


def _slice(name: str) -> str:
  return name.partition('.')[0]


def _lookup(config, name: str):
  """`config`'s field `name` ('model', or 'knn.k' in a slice), or _MISSING."""
  node = config
  for part in name.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return _MISSING
    node = node[part]
  return node
