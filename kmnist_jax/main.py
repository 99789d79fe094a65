"""The one entry point: train, eval and predict.

  python -m kmnist_jax.main --config configs/keras_cnn.py:proxy --workdir W
  python -m kmnist_jax.main --mode eval --workdir W
  python -m kmnist_jax.main --mode predict --workdir W --predict_input img.png

Errors in input print one line and exit non-zero; `--debug` shows the
traceback.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from kmnist_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/default.py:proxy.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'],
                          'What to do.')
_CHECKPOINT_STEP = flags.DEFINE_integer(
    'checkpoint_step', -1, 'Checkpoint step for eval/predict; -1: latest for '
    'eval, best for predict.')
_PREDICT_INPUT = flags.DEFINE_multi_string(
    'predict_input', [], 'Images, folders or .npy/.npz arrays to predict.')
_PREDICT_OUTPUT = flags.DEFINE_string(
    'predict_output', '', 'CSV of predictions; default WORKDIR/predictions.csv.')
_TOP_K = flags.DEFINE_integer('top_k', 3, 'Predictions per input.')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show tracebacks for errors.')


def _run(argv) -> int:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so `--help` and flag errors stay fast.
  import jax  # pylint: disable=g-import-not-at-top
  from kmnist_jax import runtime  # pylint: disable=g-import-not-at-top
  from kmnist_jax import train  # pylint: disable=g-import-not-at-top

  if not _WORKDIR.value:
    raise UserError('--workdir is required')
  runtime.setup()
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  mode = _MODE.value
  if mode == 'train':
    if _CONFIG.value is None:
      raise UserError('--config is required for --mode train, e.g. '
                      '--config configs/default.py:proxy')
    _, summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if summary['interrupted']:
      logging.warning('Stopped by %s; checkpoint saved. Rerun the same command '
                      'to resume.', summary['interrupted'])
      return 130 if summary['interrupted'] == 'SIGINT' else 0
    return 0
  if mode == 'eval':
    result = train.evaluate(_CONFIG.value, _WORKDIR.value,
                            _CHECKPOINT_STEP.value)
    print(f'{result["dataset"]} {result["split"]} (checkpoint step '
          f'{result["checkpoint_step"]}, {result["num_examples"]} examples): '
          f'accuracy {result["accuracy"]:.4f}, balanced accuracy '
          f'{result["balanced_accuracy"]:.4f}')
    if 'path' in result:
      print(f'wrote {result["path"]}')
    return 0
  from kmnist_jax import predict  # pylint: disable=g-import-not-at-top
  return predict.main(_WORKDIR.value, _PREDICT_INPUT.value,
                      _PREDICT_OUTPUT.value, _TOP_K.value,
                      _CHECKPOINT_STEP.value)


def main(argv):
  try:
    return _run(argv)
  except UserError as e:
    if _DEBUG.value:
      raise
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  app.run(main)
