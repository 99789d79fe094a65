"""Before a run: every data file it needs, fetched, or named in one line.

`data.load` fetches the files of one split at a time, so a fresh clone
without network used to learn of the train files first and of the test
files only on its next try. `fetch_missing(config)` looks for the files of
all the run's splits at once, downloads those missing, and when that fails
raises one line naming every file still missing, the data-folder route
(KMNIST_JAX_DATA_DIR, KMNIST_JAX_MIRROR) and the offline proxy (`:proxy`),
which needs only the test files.
"""

from __future__ import annotations

from kmnist_jax.data import registry
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.data import download as download_lib
from kmnist_jax.data import splits
from kmnist_jax.core.errors import UserError


def needed_splits(config) -> list[str]:
  """The base splits ('train', 'test') the run reads, in order."""
  out = []
  for split in (config.train_split, config.eval_split, config.test_split):
    if split:
      base = splits.parse_split(split).base
      if base not in out:
        out.append(base)
  return out


def missing_files(info, split_names, directory) -> list:
  """The `RemoteFile`s of `split_names` with no local copy in `directory`."""
  out = []
  for split in split_names:
    if split not in info.files:
      continue  # `data.load` names the valid splits.
    for role in ('images', 'labels'):
      names = [n for n, _ in data_lib._candidates(info, split, role)]  # pylint: disable=protected-access
      if not any((directory / n).exists() for n in names):
        out.append(getattr(info.files[split], role))
  return out


def fetch_missing(config) -> None:
  """Downloads the run's missing data files; one `UserError` line naming
  all those it could not get, and where else they can come from."""
  info = data_lib.get_info(config.dataset)
  directory = data_lib.resolve_data_dir(info, config.data_dir or None)
  files = missing_files(info, needed_splits(config), directory)
  failed, reason = [], ''
  for i, file in enumerate(files):
    try:
      download_lib.download(info, file, directory)
    except download_lib.DownloadError as e:
      failed.append(file)
      reason = reason or e.reason
      if 'gave up after' in e.reason:  # No network: the rest would wait too.
        failed += files[i + 1:]
        break
  if failed:
    raise UserError(message(config, info, directory, failed, reason))


def message(config, info, directory, failed, reason: str) -> str:
  names = ', '.join(f.name for f in failed)
  test = info.files.get('test')
  proxy_files = f'{test.images.name}, {test.labels.name}' if test else ''
  if registry.is_proxy(config) or not proxy_files:
    proxy = (f'; the offline proxy (:proxy) needs only {proxy_files}'
             if proxy_files else '')
  else:
    proxy = (f'; or train the offline proxy, the same --config with :proxy '
             f'(e.g. configs/default.py:proxy), which needs only '
             f'{proxy_files}')
  return (f'missing data: {names} not in {directory} and cannot be '
          f'downloaded ({reason}). Download them on a machine with network '
          f'and put them in {directory}, or set '
          f'{download_lib.ENV_DATA_DIR} to a folder holding them (or '
          f'{download_lib.ENV_MIRROR} to a mirror URL){proxy}')
