"""The one exception type users see as a single clear line."""


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
