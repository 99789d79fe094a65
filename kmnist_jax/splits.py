"""tfds-style split strings such as 'train', 'train[:90%]' or 'test[8000:]'.

A split is a base ('train' or 'test') optionally followed by one slice
`[start:stop]`. Each bound is an integer (absolute, negative counts from the
end as in Python) or a percentage in [-100, 100] followed by '%', rounded to
the nearest example as tfds does (ties to even).
"""

import fractions
import re
from typing import NamedTuple

from kmnist_jax.errors import UserError

SPLITS = ('train', 'test')

_FORM = ("expected 'train' or 'test', optionally sliced like 'train[:90%]', "
         "'train[54000:]', 'test[8000:]' or 'test[10%:20%]'")
_BOUND = r'(-?[0-9]{1,12}%?)'
_SPLIT_RE = re.compile(rf'([A-Za-z_]\w*)(?:\[{_BOUND}?:{_BOUND}?\])?', re.ASCII)


class Bound(NamedTuple):
  """One end of a split slice."""
  value: int
  percent: bool


class SplitSpec(NamedTuple):
  """A parsed split string; `None` bounds mean the start/end of the base."""
  base: str
  start: Bound | None
  stop: Bound | None


def parse_split(split: str) -> SplitSpec:
  """Parses a split string; raises `UserError` when it is malformed."""
  if not isinstance(split, str):
    raise UserError(f'split {split!r} is not a string; {_FORM}')
  match = _SPLIT_RE.fullmatch(split)
  if match is None:
    raise UserError(f'malformed split {split!r}; {_FORM}')
  base = match.group(1)
  if base not in SPLITS:
    raise UserError(f'unknown split {base!r} in {split!r}; {_FORM}')
  bounds = []
  for text in match.group(2, 3):
    if text is None:
      bounds.append(None)
      continue
    percent = text.endswith('%')
    value = int(text.removesuffix('%'))
    if percent and abs(value) > 100:
      raise UserError(
          f'split {split!r}: {text} is out of range; expected percentages '
          'between -100% and 100%')
    bounds.append(Bound(value, percent))
  return SplitSpec(base, bounds[0], bounds[1])


def resolve_split(split: str, num_examples: int) -> slice:
  """Turns a split string into `slice(start, stop)` over `num_examples`.

  Raises `UserError` for malformed strings, absolute bounds outside
  [-num_examples, num_examples] and slices selecting no example.
  """
  spec = parse_split(split)
  n = int(num_examples)

  def absolute(bound: Bound | None, default: int) -> int:
    if bound is None:
      return default
    if bound.percent:
      value = round(fractions.Fraction(bound.value * n, 100))
    else:
      value = bound.value
      if abs(value) > n:
        raise UserError(
            f'split {split!r}: bound {value} is out of range for the {n} '
            f'examples of {spec.base!r}; expected -{n}..{n}')
    return value + n if value < 0 else value

  start, stop = absolute(spec.start, 0), absolute(spec.stop, n)
  if stop <= start:
    raise UserError(
        f'split {split!r} selects no examples (rows {start}:{stop} of {n} in '
        f'{spec.base!r}); expected start < stop')
  return slice(start, stop)
