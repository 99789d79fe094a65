"""Workdir bookkeeping: prepare, lock, record / load / compare the config.

A workdir holds one run: `config.json`, `checkpoints/`, `metrics.jsonl`,
`tensorboard/`, `plots/` and the results of `--mode eval`. Training and the
k-NN and SVM fits all prepare it, hold its lock on process 0
(`main_process_lock`) and record their config before writing anything else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat

import ml_collections

from kmnist_jax.config import base as configlib
from kmnist_jax.core import distributed
from kmnist_jax.config import fields
from kmnist_jax.core import fileio
from kmnist_jax.core.errors import UserError, one_line

# Fields that may change between a run and its resume.
RESUMABLE_FIELDS = frozenset({
    'num_epochs', 'data_dir', 'eval_batch_size', 'test_split',
    'log_every_steps', 'log_loss_steps', 'checkpoint_every_steps',
    'eval_from_epoch',
    'keep_checkpoints', 'write_plots'})
# Fields that `--mode eval` may change on top of those: it scores a
# checkpoint on another split with the same model, with or without the
# test-time shifted views.
EVAL_FIELDS = frozenset({'train_split', 'eval_split', 'seed', 'tta_shift'})


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` and its missing parents; one line if it cannot."""
  path = os.path.abspath(workdir)
  # The nearest existing ancestor: a file there (or a file as workdir)
  # gets a clearer line than makedirs' ENOTDIR / EEXIST.
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = 'is a file' if existing == path else f'parent {existing} is a file'
    raise UserError(f'--workdir {workdir}: {what}; expected a folder')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UserError(f'--workdir {workdir}: cannot create it '
                    f'({one_line(e.strerror or e)})') from None
  if not os.access(path, os.W_OK):
    raise UserError(f'--workdir {workdir}: not writable')


def _open_lock(path: str):
  """The lock file, opened for update without following a link: a planted
  symlink, fifo or device is refused, never written through."""
  flags = os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0) | getattr(
      os, 'O_NONBLOCK', 0) | getattr(os, 'O_CLOEXEC', 0)
  expected = 'expected a regular file this program writes; remove it'
  try:
    st = os.lstat(path)
  except FileNotFoundError:
    st = None
  if st is not None and not stat.S_ISREG(st.st_mode):
    what = 'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'not a file'
    raise UserError(f'{path}: {what}; {expected}')
  try:
    fd = os.open(path, flags, 0o666)
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise UserError(f'{path}: a symbolic link; {expected}') from None
    raise UserError(f'{path}: cannot open the lock '
                    f'({one_line(e.strerror or e)})') from None
  st = os.fstat(fd)
  if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
    os.close(fd)
    what = 'a hard link to another file' if stat.S_ISREG(st.st_mode) else (
        'not a file')
    raise UserError(f'{path}: {what}; {expected}')
  return os.fdopen(fd, 'r+')


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Refuses a second training on the same workdir."""
  f = _open_lock(os.path.join(workdir, '.lock'))
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or 'another process'
    f.close()
    raise UserError(f'{workdir}: another training is running on this workdir '
                    f'({holder}); wait for it or use another --workdir')
  f.seek(0)
  f.truncate()
  f.write(f'pid {os.getpid()}')
  f.flush()
  try:
    yield
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


@contextlib.contextmanager
def main_process_lock(workdir: str):
  """Process 0 holds the workdir lock; the other processes share its fate."""
  with contextlib.ExitStack() as stack:
    error = None
    if distributed.is_main():
      try:
        stack.enter_context(workdir_lock(workdir))
      except UserError as e:
        error = e
    if distributed.any_process(error is not None):
      raise error or UserError(f'{workdir}: process 0 could not lock it')
    yield


def config_diff(saved: dict, current: dict,
                allowed: frozenset[str] = RESUMABLE_FIELDS) -> list[str]:
  """Differing fields outside `allowed`, a slice's by their dotted names
  ('knn.k'); `saved` of any version (`configlib.upgrade`)."""
  saved, current = _flat(configlib.upgrade(saved)), _flat(current)
  keys = sorted((set(saved) | set(current)) - allowed)
  return [f'{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)'
          for k in keys if saved.get(k) != current.get(k)]


def _flat(config: dict, prefix: str = '') -> dict:
  """`config` with its slices' fields under dotted names."""
  out = {}
  for key, value in config.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise UserError(f'{path}: missing; --workdir must hold a training run')
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f'{path}: not a readable config ({e})') from e
  missing = [k for k in ('dataset', 'model') if not isinstance(saved, dict)
             or k not in saved]
  if missing:
    raise UserError(f'{path}: expected the JSON object a training run writes, '
                    f'with fields dataset and model; lacks {", ".join(missing)}')
  # Any version's fields as today's (`configlib.upgrade`): a run recorded
  # before a field existed takes its default.
  config = ml_collections.ConfigDict(configlib.upgrade(saved))
  fields.check_config(config, source=path, complete=False)
  return config


def check_same_run(config, workdir: str) -> None:
  """Refuses a workdir whose config.json records a different run.

  Whether or not that run saved a checkpoint (it may have died before its
  first one, or be a k-NN fit, which has none): training into it would
  replace its config and its metrics. Fields in RESUMABLE_FIELDS may differ.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  saved = json.loads(load_workdir_config(workdir).to_json())
  diff = config_diff(saved, json.loads(config.to_json()))
  if diff:
    ckpts = os.path.join(workdir, 'checkpoints')
    if os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts)):
      what = 'checkpoints'
    # knn.MODEL_FILE and svm.MODEL_FILE, spelled out: they import this
    # module, not the reverse.
    elif os.path.exists(os.path.join(workdir, 'knn_model.npz')):
      what = 'a k-NN fit'
    elif os.path.exists(os.path.join(workdir, 'svm_model.npz')):
      what = 'an SVM fit'
    else:
      what = 'a run'
    raise UserError(f'{workdir} holds {what} of a different config ({path}): '
                    f'{"; ".join(diff)}. Use a new --workdir, or the same '
                    'config to resume')


def record_config(config, workdir: str) -> None:
  """Writes config.json, after `check_same_run`."""
  check_same_run(config, workdir)
  if distributed.is_main():
    fileio.write_json(os.path.join(workdir, 'config.json'),
                      json.loads(config.to_json()))


def eval_config(config: ml_collections.ConfigDict | None,
                workdir: str) -> ml_collections.ConfigDict:
  """The config `--mode eval` scores with: `config`, else the saved one; a
  `config` that trains another model than the workdir's is refused."""
  saved = load_workdir_config(workdir)
  if config is None:
    return saved
  fields.check_config(config)
  diff = config_diff(json.loads(saved.to_json()), json.loads(config.to_json()),
                     RESUMABLE_FIELDS | EVAL_FIELDS)
  if diff:
    raise UserError(f'{workdir} was trained with a different config: '
                    f'{"; ".join(diff)}')
  return config
