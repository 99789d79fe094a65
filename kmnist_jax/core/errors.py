"""The one exception type users see as a single clear line."""

import errno
import os


class UserError(Exception):
  """Bad input or a broken precondition, explained in one line.

  `kmnist_jax.main` prints the message (no traceback unless `--debug`) and
  exits non-zero. Library callers can catch it like any other exception.
  """


def one_line(error: BaseException | str, limit: int = 300) -> str:
  """An error message folded onto one line: white space runs become one
  space, at most `limit` characters; the exception's type name when it has
  no message."""
  text = error if isinstance(error, str) else (
      str(error).strip() or type(error).__name__)
  text = ' '.join(text.split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


# errno -> (what, what to do): the resources a run can run out of.
_RESOURCES = {
    errno.ENOSPC: ('no space left on the device', 'free some space'),
    errno.EDQUOT: ('disk quota exceeded', 'free some space'),
    errno.EROFS: ('read-only file system', 'use a writable folder'),
}
_TEXTS = {'no space left on device': errno.ENOSPC,
          'disk quota exceeded': errno.EDQUOT,
          'read-only file system': errno.EROFS}


def _chain(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def resource_error(error: BaseException, folder: str = '') -> str | None:
  """One line for a full disk, a quota or a read-only folder anywhere in
  `error`'s chain (Orbax and TensorStore wrap the OSError, or only keep its
  text), naming the folder (the file's, else `folder`); None otherwise."""
  for e in _chain(error):
    code = getattr(e, 'errno', None) if isinstance(e, OSError) else None
    if code not in _RESOURCES:
      text = str(e).lower()
      code = next((c for t, c in _TEXTS.items() if t in text), None)
      if code is None:
        continue
    name = getattr(e, 'filename', None) if isinstance(e, OSError) else None
    where = os.path.dirname(os.path.abspath(name)) if isinstance(
        name, str) and name else folder or 'a folder'
    what, todo = _RESOURCES[code]
    return (f'{where}: {what}; {todo} and rerun the same command (what '
            'was written before is kept)')
  return None


# errno -> what was expected, for a path of the wrong kind or permissions.
_PATH_ERRORS = {
    errno.EISDIR: 'a folder; expected a file there (remove or rename it)',
    errno.ENOTDIR: 'a file where a folder was expected (remove or rename it)',
    errno.EEXIST: 'already exists as another kind; expected a folder '
                  '(remove or rename it)',
    errno.EACCES: 'permission denied; expected a file or folder this user '
                  'can read and write',
    errno.EPERM: 'operation not permitted; expected a file or folder this '
                 'user can read and write',
    errno.ELOOP: 'a symbolic link (or a loop of them) where the program '
                 'writes only its own files; expected a regular file',
    errno.ENAMETOOLONG: 'name too long for the file system',
}


def path_error(error: BaseException) -> str | None:
  """One line for an OSError about a path of the wrong kind (a folder where
  a file goes, a file inside the path, no permission) anywhere in `error`'s
  chain, naming the path; None otherwise."""
  for e in _chain(error):
    if isinstance(e, OSError) and e.errno in _PATH_ERRORS and e.filename:
      return f'{e.filename}: {_PATH_ERRORS[e.errno]}'
  return None
