"""What a run's reports need to know of its data, read beside the data.

The report layer (`report/plots.py`) draws what it is given and reads no
data itself: the trainer reads these with its splits.
"""

from __future__ import annotations

from absl import logging

from kmnist_jax.data import datasets as data_lib
from kmnist_jax.data import registry
from kmnist_jax.data import splits as splits_lib


def plot_inputs(config, train_labels, eval_labels) -> dict:
  """`plots.write_training_plots`' inputs: the class map (`classes`), each
  split's labels (`split_labels`, {'train <split>': labels, ...}; a test
  split that cannot be read is left out with a warning), the proxy tag
  (`tag`) and the eval split as a file name (`eval_name`)."""
  split_labels = {f'train {config.train_split}': train_labels,
                  f'eval {config.eval_split}': eval_labels}
  if config.test_split:
    try:
      split_labels[f'test {config.test_split}'] = data_lib.load(
          config.dataset, config.test_split, config.data_dir or None)[1]
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('test split left out of the class distribution: %s', e)
  return dict(classes=data_lib.class_map(config.dataset,
                                         config.data_dir or None),
              split_labels=split_labels,
              tag=' (offline proxy)' if registry.is_proxy(config) else '',
              eval_name=splits_lib.split_name(config.eval_split))
