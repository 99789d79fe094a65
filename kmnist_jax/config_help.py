"""`--show_config`: the resolved config, each field with its meaning.

  python -m kmnist_jax.main --config configs/default.py:proxy --show_config

`FIELDS` explains every field of `configlib.base_config()` (a test keeps
them in step); a config file's own extra fields show without a meaning.
"""

from __future__ import annotations

FIELDS = {
    # Data.
    'dataset': 'the data set.',
    'data_dir': "folder of the .npz files; '' = env KMNIST_JAX_DATA_DIR, "
                'else ~/.cache/kmnist_jax/<dataset> (downloaded there).',
    'train_split': "split trained on: 'train', 'test', or a slice such as "
                   "'test[:8000]' (the :proxy variant).",
    'eval_split': 'split scored after each epoch of training.',
    'test_split': "split scored once after training and by --mode eval; "
                  "'' = none (eval_split then).",
    # Model and batching.
    'model': 'a network, or a baseline fit (knn, pca_knn, svm).',
    'num_epochs': 'passes over train_split.',
    'batch_size': 'global train batch, split over all devices.',
    'eval_batch_size': 'batch of eval, predict and ensembles.',
    'compute_dtype': "'float32', or 'bfloat16' compute with float32 "
                     'params (GPU/TPU).',
    'matmul_precision': "'default' (JAX's), or 'bfloat16' operands summed "
                        'in float32.',
    'input_mean': 'the model sees (pixel / 255 - input_mean) / input_std.',
    'input_std': 'see input_mean; > 0.',
    # Optimizer.
    'optimizer': 'the optimizer (kmnist_jax.train.optim).',
    'learning_rate': 'peak learning rate.',
    'lr_schedule': 'the learning-rate schedule (kmnist_jax.train.optim).',
    'warmup_epochs': 'linear warm-up length in epochs; 0 = none.',
    'lr_milestones': "multistep: comma-separated epochs, e.g. '100,150'.",
    'lr_decay': 'multistep: factor applied at each milestone.',
    'weight_decay': 'weight decay (kmnist_jax.train.optim); 0 = off.',
    'label_smoothing': 'in [0, 1); 0 = off.',
    'momentum': 'sgd momentum.',
    'nesterov': 'sgd: Nesterov momentum.',
    'beta1': 'adam/adamw first-moment decay.',
    'beta2': 'adam/adamw second-moment decay.',
    'eps': "adam/adamw/adadelta epsilon.",
    'rho': 'adadelta decay.',
    'grad_clip_norm': 'clip gradients to this global norm; 0 = off.',
    # Augmentation.
    'augment_translate': 'max random shift in pixels; 0 = off.',
    'cutout_size': 'side of the Cutout square in pixels; 0 = off.',
    'cutout_fill': 'value of the Cutout square in [0, 1] (0 = black).',
    'mixup_alpha': 'input mixup Beta(alpha, alpha); 0 = off.',
    'manifold_mixup_alpha': 'manifold mixup Beta(alpha, alpha); 0 = off.',
    'tta_shift': 'eval: mean probability over shifts {-s, 0, s}^2; 0 = off.',
    # Baselines.
    # Run.
    'seed': 'initialisation and data-order seed.',
    'checkpoint_every_steps': '0 = at the end of each epoch only.',
    'keep_checkpoints': 'latest checkpoints kept (plus the best).',
    'log_every_steps': 'progress line every this many steps (without a '
                       'terminal; a bar on one).',
    'log_loss_steps': 'the first this many steps write their loss to '
                      'metrics.jsonl; 0 = none.',
    'eval_from_epoch': 'evaluate from this epoch on (and after the last).',
    'write_plots': 'write plots under WORKDIR/plots.',
}

# The method slices (configlib.SLICES), in the configs of their methods.
FIELDS.update({
    'knn.k': 'k-NN baselines: neighbours.',
    'knn.pca_components': 'pca_knn: PCA dimensions.',
    'svm.c': 'svm: SVC C.',
    'svm.gamma': 'svm: RBF gamma, on pixels / 255.',
})


def flat_items(config, prefix: str = '') -> list[tuple[str, object]]:
  """(dotted name, value) of every field of `config`, slices included."""
  items = []
  for key, value in sorted(config.items()):
    if hasattr(value, 'items'):
      items += flat_items(value, f'{prefix}{key}.')
    else:
      items.append((f'{prefix}{key}', value))
  return items


def choices() -> dict[str, list[str]]:
  """The valid values of the fields that name one thing."""
  # pylint: disable=g-import-not-at-top
  from kmnist_jax.data import datasets as data
  from kmnist_jax.methods import registry
  from kmnist_jax.train import optim
  return {'dataset': sorted(data.DATASETS),
          'model': registry.names(),
          'optimizer': sorted(optim.OPTIMIZERS),
          'lr_schedule': sorted(optim.SCHEDULES)}


def describe(config, path: str = '') -> str:
  """The fields of `config`, one a line: `name = value  # meaning`."""
  valid = choices()
  items = flat_items(config)
  width = max((len(f'{k} = {v!r}') for k, v in items), default=0)
  lines = [f'# {path}: {len(items)} fields; override any with '
           '--config.FIELD=VALUE' if path else
           '# override any field with --config.FIELD=VALUE']
  for key, value in items:
    text = f'{key} = {value!r}'
    meaning = FIELDS.get(key, '')
    if key in valid:
      meaning += f' One of: {", ".join(valid[key])}.'
    lines.append(f'{text:<{width}}  # {meaning}' if meaning else text)
  return '\n'.join(lines)
