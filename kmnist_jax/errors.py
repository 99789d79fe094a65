"""The one exception type users see as a single clear line."""


class UserError(Exception):
  """Bad input or a broken precondition, explained in one line.

  `kmnist_jax.main` prints the message (no traceback unless `--debug`) and
  exits non-zero. Library callers can catch it like any other exception.
  """
