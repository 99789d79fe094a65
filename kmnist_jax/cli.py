"""The command line's flag parsing and its one-line errors: a bad flag,
config file or `--config.FIELD` override, and the log filters that keep the
background threads' reports of a known failure off the console."""

from __future__ import annotations

import difflib
import logging as logging_std
import re
import sys

from absl import flags

from kmnist_jax.core.errors import one_line
from kmnist_jax.core.errors import resource_error


_OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=]+)')
_TYPE_NAMES = {bool: 'true or false', int: 'an integer', float: 'a number',
               str: 'a string'}


def gist(text) -> str:
  """The gist of a possibly multi-line error (config-file tracebacks)."""
  lines = [l.strip() for l in str(text).splitlines() if l.strip()]
  if not lines:
    return 'invalid flags'
  if len(lines) > 1 and any(l.startswith('Traceback') for l in lines):
    head = lines[0].replace('Error whilst parsing config file:', '').strip()
    tail = re.sub(r'^\w+(Error|Exception): ', '', lines[-1])
    return one_line(f'{head} {tail}', limit=1000)
  return one_line(' '.join(lines), limit=1000)


def config_arg(argv) -> str | None:
  """The value of `--config` in argv, if given."""
  for i, arg in enumerate(argv):
    m = re.match(r'^--?config(?:=(.*))?$', arg)
    if m:
      return m.group(1) if m.group(1) is not None else ''.join(
          argv[i + 1:i + 2])
  return None


def load_config(path: str):
  """The config `path` names, or the error that loading it gives."""
  try:
    config = flags.FLAGS['config'].parser.parse(path)
    config.keys()  # ml_collections defers file errors to first access.
    return config, None
  except Exception as e:  # pylint: disable=broad-except
    return None, e


def config_file_error(path: str, error: Exception) -> str:
  reason = str(error).strip().splitlines()[-1].strip() if str(error) else (
      type(error).__name__)
  reason = re.sub(r'^.*failure to load: ', '', reason)
  return (f'--config {path}: cannot load the config file ({reason}); expected '
          'a Python file with get_config(), e.g. configs/default.py:proxy')


def renamed() -> dict[str, str]:
  """The flat fields of older versions and their new dotted names."""
  from kmnist_jax.config import base as configlib  # pylint: disable=g-import-not-at-top
  return configlib.RENAMED


def lookup(config, path: str):
  """(True, value) when `path` (dotted) is a field of `config`."""
  node = config
  for part in path.split('.'):
    if not hasattr(node, 'keys') or part not in node.keys():
      return False, None
    node = node[part]
  return True, node


def flag_error(error: Exception, argv) -> str:
  """One line for a flag, config file or `--config.<field>` override error."""
  path = config_arg(argv)
  config, load_error = load_config(path) if path is not None else (None, None)
  if config is None:
    if load_error is not None and not isinstance(error, flags.Error):
      return config_file_error(path, load_error)
    return gist(error)
  for arg in argv[1:]:
    m = _OVERRIDE.match(arg)
    if not m:
      continue
    field = m.group(1)
    found, value = lookup(config, field)
    if not found and field in renamed():
      new = renamed()[field]
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
      return (f'{gist(error)}; expected {_TYPE_NAMES[type(value)]} for '
              f'config.{field} (default {value!r})')
  return gist(error)


def parse_flags(argv):
  """absl flag parsing; a bad flag or config file is one `error:` line."""
  debug = any(re.fullmatch(r'--?debug(=(true|1|yes))?', a, re.IGNORECASE)
              for a in argv)
  try:
    args = flags.FLAGS(argv)
    error = None
  except Exception as e:  # pylint: disable=broad-except
    if debug:
      raise
    error = flag_error(e, argv)
  path = config_arg(argv)
  if error is None and path is not None:
    value = flags.FLAGS['config'].value
    try:
      value.keys()  # Raises for a file that failed.
    except OSError as e:
      if debug:
        raise
      error = config_file_error(path, e)
    except AttributeError:  # get_config() returned no ConfigDict.
      error = (f'--config {path}: get_config() returned a '
               f'{type(value).__name__}; expected an ml_collections.'
               'ConfigDict built on configlib.base_config()')
  if error is not None:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
  return args


def unraisable(hook):
  """Drops the "Event loop is closed" errors that Orbax's TensorStore reads
  raise in background callbacks after a failed restore; the restore's own
  error already says what is wrong."""

  def unraisable(args):
    if not (isinstance(args.exc_value, RuntimeError)
            and str(args.exc_value) == 'Event loop is closed') and (
                resource_error(args.exc_value) is None):
      hook(args)

  return unraisable


def orphan_read(record: logging_std.LogRecord) -> bool:
  """False for asyncio's "exception was never retrieved" reports: the
  other TensorStore reads of a failed Orbax restore, which fail after it
  with the same cause; the restore's own error already says what is wrong."""
  return 'exception was never retrieved' not in record.getMessage()


def not_resource_error(record: logging_std.LogRecord) -> bool:
  """False for the reports (with tracebacks) of a full disk or a read-only
  folder that Orbax's and TensorBoard's background threads log: the one
  `error:` line at exit says it."""
  if record.levelno < logging_std.ERROR:
    return True
  error = record.exc_info[1] if record.exc_info else None
  return resource_error(error or Exception(record.getMessage())) is None
