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

import json
import logging as logging_std
import os
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from kmnist_jax import cli
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
    print(config_help.describe(_CONFIG.value, cli.config_arg(sys.argv) or ''))
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
    from kmnist_jax.cpu import openmp
    # pylint: enable=g-import-not-at-top
    console.say(f'CPU: {features.describe()}')
    console.say(f'malloc: {malloc.describe()}')
    console.say(f'OpenMP: {openmp.describe()}')
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
  members = _ensemble_members()
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


def _ensemble_members() -> list[str]:
  """The --ensemble workdirs (repeated, or comma-separated)."""
  return [w for v in _ENSEMBLE.value or () for w in v.split(',') if w]


def _models_to_run() -> list[str]:
  """The models this process will run, read before JAX starts: the config's,
  or the one each workdir (and ensemble member) records. A workdir whose
  config cannot be read adds nothing here; the mode itself says why."""
  if _CONFIG.value is not None:
    return [_CONFIG.value.model]
  names = []
  for workdir in [_WORKDIR.value] + _ensemble_members():
    try:
      with open(os.path.join(workdir, 'config.json')) as f:
        names.append(str(json.load(f).get('model', '')))
    except (OSError, ValueError, AttributeError):
      continue
  return names


def main(argv):
  if not _DEBUG.value:
    sys.unraisablehook = cli.unraisable(sys.unraisablehook)
    logging_std.getLogger('asyncio').addFilter(cli.orphan_read)
    for name in ('absl', ''):
      logging_std.getLogger(name).addFilter(cli.not_resource_error)
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
  app.run(main, flags_parser=cli.parse_flags)
