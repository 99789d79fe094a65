"""The one entry point: train, eval and predict.

  python -m kmnist_jax.main --config configs/keras_cnn.py:proxy --workdir W
  python -m kmnist_jax.main --mode eval --workdir W
  python -m kmnist_jax.main --mode predict --workdir W --predict_input img.png
  python -m kmnist_jax.main --config configs/default.py:proxy --show_config

Every configs/<exp>.py takes a variant: none (the full experiment), :proxy
(the offline proxy, needing only the test files) or :smoke (2 steps, for
tests), and a dataset to run the recipe on: :mnist, :fashion_mnist,
:kmnist, :k49, alone or with a variant (:mnist,proxy). Ctrl-C stops after the current step and saves a checkpoint; a
second Ctrl-C aborts at once, keeping the last complete checkpoint.

Errors in input print one line and exit non-zero; `--debug` shows the
traceback. Exit codes: 0 done; 1 predict with bad inputs; 2 bad input, or a
full disk or read-only folder; 130 (SIGINT, Ctrl-C) and 143 (SIGTERM): a
training interrupted after saving a checkpoint, resumable by rerunning the
same command (Ctrl-C elsewhere also exits 130, writing nothing half).
"""

from __future__ import annotations

import difflib
import json
import logging as logging_std
import os
import re
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from kmnist_jax.core import console
from kmnist_jax.core.errors import UserError
from kmnist_jax.core.errors import one_line
from kmnist_jax.core.errors import path_error
from kmnist_jax.core.errors import resource_error

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file and variant: configs/<exp>.py '
    '(the full experiment), configs/<exp>.py:proxy (the offline proxy: trains '
    'on test[:8000], evaluates on test[8000:], needs only the two test files; '
    'never a benchmark result) or configs/<exp>.py:smoke (2 train steps, for '
    'tests); a dataset, alone or with a variant, runs the recipe on it: '
    'configs/<exp>.py:mnist, :fashion_mnist,proxy. Override a field with --config.FIELD=VALUE; --show_config lists '
    'the fields.', lock_config=True)
_SHOW_CONFIG = flags.DEFINE_bool(
    'show_config', False, 'Print the resolved --config (variant and '
    '--config.FIELD overrides applied), each field with its meaning, and exit.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'],
                          'What to do.')
_CHECKPOINT_STEP = flags.DEFINE_integer(
    'checkpoint_step', -1, 'Checkpoint step for eval, predict and ensembles; '
    '-1: the latest (all three use the same one).')
_PREDICT_INPUT = flags.DEFINE_multi_string(
    'predict_input', [], 'Images, folders or .npy/.npz arrays to predict.')
_PREDICT_OUTPUT = flags.DEFINE_string(
    'predict_output', '', 'CSV of predictions; default WORKDIR/predictions.csv.')
_TOP_K = flags.DEFINE_integer('top_k', 3, 'Predictions per input.')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show tracebacks for errors.')
_ENSEMBLE = flags.DEFINE_multi_string(
    'ensemble', [], 'With --mode eval: more workdirs (repeat the flag or '
    'separate by commas) whose probabilities are averaged with --workdir\'s.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'Multi-process JAX (jax.distributed): auto = on when '
    '--coordinator_address is set or an srun/mpirun launch of several tasks '
    'is detected; on = always (JAX reads SLURM/Open MPI/TPU settings); off = '
    'one process.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'host:port of process 0 for a multi-process '
    'run; every process gets the same value.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes of a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process, 0 .. --num_processes - 1.')


def train_and_evaluate(config, workdir: str,
                       compiler_options: dict | None = None):
  """Trains `config` in `workdir` with the method `config.model` names (a
  network, or a k-NN or SVM fit): (final state or None, summary)."""
  from kmnist_jax.methods import harness  # pylint: disable=g-import-not-at-top
  return harness.fit(config, workdir, compiler_options)


def evaluate(config, workdir: str, checkpoint_step: int = -1) -> dict:
  """`--mode eval` of `workdir`, with the method its saved config names."""
  from kmnist_jax.methods import harness  # pylint: disable=g-import-not-at-top
  return harness.evaluate(config, workdir, checkpoint_step)


def _run(argv) -> int:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  if _SHOW_CONFIG.value:
    if _CONFIG.value is None:
      raise UserError('--show_config needs --config, e.g. --config '
                      'configs/default.py:proxy --show_config')
    from kmnist_jax import config_help  # pylint: disable=g-import-not-at-top
    print(config_help.describe(_CONFIG.value, _config_arg(sys.argv) or ''))
    return 0
  # Imported here so `--help` and flag errors stay fast.
  import jax  # pylint: disable=g-import-not-at-top
  from kmnist_jax.core import distributed  # pylint: disable=g-import-not-at-top
  from kmnist_jax import runtime  # pylint: disable=g-import-not-at-top

  if not _WORKDIR.value:
    raise UserError('--workdir is required')
  # pylint: disable=g-import-not-at-top
  from kmnist_jax.core import environment
  from kmnist_jax.config import fields
  # pylint: enable=g-import-not-at-top
  environment.check_environment()
  if _CONFIG.value is not None:  # Every mode: one line before any work.
    fields.check_config(_CONFIG.value)
  if not flags.FLAGS['verbosity'].present:  # --verbosity=0: every INFO line.
    runtime.quiet_library_logs()
  # Before JAX starts its threads: see keep_freed_memory.
  runtime.setup(models=_models_to_run())
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value,
                         _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    devices = jax.devices()
  except (RuntimeError, AssertionError) as e:
    # JAX_PLATFORMS names a platform this machine lacks (JAX asserts when
    # its plugin is not installed).
    platforms = os.environ.get('JAX_PLATFORMS', '')
    raise UserError(f'JAX_PLATFORMS={platforms!r}: JAX could not start a '
                    f'backend ({one_line(e)}); expected a platform this '
                    'machine has, e.g. cpu') from None
  if not distributed.is_main():  # Process 0 logs for all.
    logging.set_verbosity(logging.WARNING)
    console.set_quiet(True)
  console.say(f'JAX process {jax.process_index()}/{jax.process_count()}, '
              f'devices: {devices}')
  if jax.default_backend() == 'cpu':  # What picks oneDNN's kernels.
    # pylint: disable=g-import-not-at-top
    from kmnist_jax.cpu import features
    from kmnist_jax.cpu import malloc
    # pylint: enable=g-import-not-at-top
    console.say(f'CPU: {features.describe()}')
    console.say(f'malloc: {malloc.describe()}')
  mode = _MODE.value
  if mode == 'train':
    if _CONFIG.value is None:
      raise UserError('--config is required for --mode train, e.g. '
                      '--config configs/default.py:proxy')
    t0 = time.time()
    _, summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    for line in console.summary_lines(_CONFIG.value, _WORKDIR.value, summary,
                                      time.time() - t0):
      console.say(line)
    if summary['interrupted']:
      return console.EXIT_INTERRUPTED[summary['interrupted']]
    return 0
  if mode == 'eval':
    return _eval_command()
  from kmnist_jax.inference import predict  # pylint: disable=g-import-not-at-top
  return predict.main(_WORKDIR.value, _PREDICT_INPUT.value,
                      _PREDICT_OUTPUT.value, _TOP_K.value,
                      _CHECKPOINT_STEP.value)


def _eval_command() -> int:
  """`--mode eval`, of one workdir or an ensemble: prints the result; a
  result that cannot be written is printed, then one error line (exit 2)."""
  from kmnist_jax.core import distributed  # pylint: disable=g-import-not-at-top
  members = [w for v in _ENSEMBLE.value for w in v.split(',') if w]
  if members:
    from kmnist_jax.methods import ensemble  # pylint: disable=g-import-not-at-top
    result = ensemble.evaluate([_WORKDIR.value] + members, _CONFIG.value,
                               _CHECKPOINT_STEP.value)
  else:
    result = evaluate(_CONFIG.value, _WORKDIR.value, _CHECKPOINT_STEP.value)
  if not distributed.is_main():
    return 0
  step, several = result['checkpoint_step'], ''
  which = ''
  if isinstance(step, list):
    step, several = ', '.join(map(str, step)), 's'
    which = ', the latest of each' if _CHECKPOINT_STEP.value < 0 else ''
  elif _CHECKPOINT_STEP.value < 0 and step:  # k-NN and SVM fits: step 0.
    which = ', the latest'
  print(f'{result["dataset"]} {result["split"]} (checkpoint step{several} '
        f'{step}{which}, {result["num_examples"]} examples): '
        f'accuracy {result["accuracy"]:.4f}, balanced accuracy '
        f'{result["balanced_accuracy"]:.4f}', flush=True)
  if 'path' in result:
    print(f'wrote {result["path"]}')
  if 'write_error' in result:
    print(f'error: {result["write_error"]}', file=sys.stderr)
    return 2  # As every full-disk or path error.
  return 0


_OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=]+)')
_TYPE_NAMES = {bool: 'true or false', int: 'an integer', float: 'a number',
               str: 'a string'}


def _gist(text) -> str:
  """The gist of a possibly multi-line error (config-file tracebacks)."""
  lines = [l.strip() for l in str(text).splitlines() if l.strip()]
  if not lines:
    return 'invalid flags'
  if len(lines) > 1 and any(l.startswith('Traceback') for l in lines):
    head = lines[0].replace('Error whilst parsing config file:', '').strip()
    tail = re.sub(r'^\w+(Error|Exception): ', '', lines[-1])
    return one_line(f'{head} {tail}', limit=1000)
  return one_line(' '.join(lines), limit=1000)


def _models_to_run() -> list[str]:
  """The models this process will run, read before JAX starts: the config's,
  or the one each workdir (and ensemble member) records. A workdir whose
  config cannot be read adds nothing here; the mode itself says why."""
  if _CONFIG.value is not None:
    return [_CONFIG.value.model]
  names = []
  workdirs = [_WORKDIR.value] + [w for v in _ENSEMBLE.value or ()
                                 for w in v.split(',') if w]
  for workdir in workdirs:
    try:
      with open(os.path.join(workdir, 'config.json')) as f:
        names.append(str(json.load(f).get('model', '')))
    except (OSError, ValueError, AttributeError):
      continue
  return names


def _config_arg(argv) -> str | None:
  """The value of `--config` in argv, if given."""
  for i, arg in enumerate(argv):
    m = re.match(r'^--?config(?:=(.*))?$', arg)
    if m:
      return m.group(1) if m.group(1) is not None else ''.join(
          argv[i + 1:i + 2])
  return None


def _load_config(path: str):
  """The config `path` names, or the error that loading it gives."""
  try:
    config = flags.FLAGS['config'].parser.parse(path)
    config.keys()  # ml_collections defers file errors to first access.
    return config, None
  except Exception as e:  # pylint: disable=broad-except
    return None, e


def _config_file_error(path: str, error: Exception) -> str:
  reason = str(error).strip().splitlines()[-1].strip() if str(error) else (
      type(error).__name__)
  reason = re.sub(r'^.*failure to load: ', '', reason)
  return (f'--config {path}: cannot load the config file ({reason}); expected '
          'a Python file with get_config(), e.g. configs/default.py:proxy')


def _renamed() -> dict[str, str]:
  """The flat fields of older versions and their new dotted names."""
  from kmnist_jax.config import base as configlib  # pylint: disable=g-import-not-at-top
  return configlib.RENAMED


def _lookup(config, path: str):
  """(True, value) when `path` (dotted) is a field of `config`."""
  node = config
  for part in path.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return False, None
    node = node[part]
  return True, node


def _flag_error(error: Exception, argv) -> str:
  """One line for a flag, config file or `--config.<field>` override error."""
  path = _config_arg(argv)
  config, load_error = _load_config(path) if path is not None else (None, None)
  if config is None:
    if load_error is not None and not isinstance(error, flags.Error):
      return _config_file_error(path, load_error)
    return _gist(error)
  for arg in argv[1:]:
    m = _OVERRIDE.match(arg)
    if not m:
      continue
    field = m.group(1)
    found, value = _lookup(config, field)
    if not found and field in _renamed():
      new = _renamed()[field]
      given = arg.partition('=')[2]
      return (f'{arg}: config.{field} is now config.{new}; use '
              f'--config.{new}{"=" + given if given else ""}')
    if not found:
      fields = sorted(config.keys())
      close = difflib.get_close_matches(field, fields, 1)
      hint = f'did you mean {close[0]!r}? ' if close else ''
      return (f'{arg}: the config has no field {field!r}; {hint}valid: '
              f'{", ".join(fields)}')
    if f'--config.{field}' in str(error) and type(value) in _TYPE_NAMES:
      return (f'{_gist(error)}; expected {_TYPE_NAMES[type(value)]} for '
              f'config.{field} (default {value!r})')
  return _gist(error)


def _parse_flags(argv):
  """absl flag parsing; a bad flag or config file is one `error:` line."""
  debug = any(re.fullmatch(r'--?debug(=(true|1|yes))?', a, re.IGNORECASE)
              for a in argv)
  try:
    args = flags.FLAGS(argv)
    error = None
  except Exception as e:  # pylint: disable=broad-except
    if debug:
      raise
    error = _flag_error(e, argv)
  path = _config_arg(argv)
  if error is None and path is not None:
    value = flags.FLAGS['config'].value
    try:
      value.keys()  # Raises for a file that failed.
    except OSError as e:
      if debug:
        raise
      error = _config_file_error(path, e)
    except AttributeError:  # get_config() returned no ConfigDict.
      error = (f'--config {path}: get_config() returned a '
               f'{type(value).__name__}; expected an ml_collections.'
               'ConfigDict built on configlib.base_config()')
  if error is not None:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  return args


def _unraisable(hook):
  """Drops the "Event loop is closed" errors that Orbax's TensorStore reads
  raise in background callbacks after a failed restore; the restore's own
  error already says what is wrong."""

  def unraisable(args):
    if not (isinstance(args.exc_value, RuntimeError)
            and str(args.exc_value) == 'Event loop is closed') and (
                resource_error(args.exc_value) is None):
      hook(args)

  return unraisable


def _orphan_read(record: logging_std.LogRecord) -> bool:
  """False for asyncio's "exception was never retrieved" reports: the
  other TensorStore reads of a failed Orbax restore, which fail after it
  with the same cause; the restore's own error already says what is wrong."""
  return 'exception was never retrieved' not in record.getMessage()


def _not_resource_error(record: logging_std.LogRecord) -> bool:
  """False for the reports (with tracebacks) of a full disk or a read-only
  folder that Orbax's and TensorBoard's background threads log: the one
  `error:` line at exit says it."""
  if record.levelno < logging_std.ERROR:
    return True
  error = record.exc_info[1] if record.exc_info else None
  return resource_error(error or Exception(record.getMessage())) is None


def main(argv):
  if not _DEBUG.value:
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    logging_std.getLogger('asyncio').addFilter(_orphan_read)
    for name in ('absl', ''):
      logging_std.getLogger(name).addFilter(_not_resource_error)
    thread_hook = threading.excepthook
    threading.excepthook = lambda args: (
        resource_error(args.exc_value) is None and thread_hook(args))
  try:
    return _run(argv)
  except UserError as e:
    if _DEBUG.value:
      raise
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    # Ctrl-C outside the training loop (which saves and stops cleanly):
    # startup, eval, predict. Every file is written whole or not at all.
    if _DEBUG.value:
      raise
    print('\nerror: interrupted (Ctrl-C); nothing was half-written, rerun '
          'the same command', file=sys.stderr)
    return console.EXIT_INTERRUPTED['SIGINT']
  except Exception as e:  # pylint: disable=broad-except
    line = resource_error(e, _WORKDIR.value or '') or path_error(e)
    if _DEBUG.value or line is None:
      raise
    print(f'error: {line}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
