"""tfds-style split strings such as 'train', 'train[:90%]' or 'test[8000:]'.

A split is a base ('train' or 'test') optionally followed by one slice
`[start:stop]`. Each bound is an integer (absolute, negative counts from the
end as in Python) or a percentage in [-100, 100] followed by '%', rounded to
the nearest example as tfds does (ties to even).
"""

import fractions
import re
from typing import NamedTuple

from kmnist_jax.core.errors import UserError

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


def _bound_name(bound) -> str:
  return f'{bound.value}{"pct" if bound.percent else ""}'


def split_name(split: str) -> str:
  """A split as a file-name part, one name per split and back
  (`split_from_name`): 'test' -> 'test', 'test[8000:]' -> 'test_from8000',
  'test[:-2000]' -> 'test_to-2000', 'test[10%:20%]' ->
  'test_from10pct_to20pct', 'test[:]' -> 'test_all'."""
  spec = parse_split(split)
  if '[' not in split:
    return spec.base
  parts = [f'from{_bound_name(spec.start)}' if spec.start else '',
           f'to{_bound_name(spec.stop)}' if spec.stop else '']
  return '_'.join([spec.base] + ([p for p in parts if p] or ['all']))


_NAME_RE = re.compile(r'([a-z]+)(?:_all|(?:_from(-?[0-9]+(?:pct)?))?'
                      r'(?:_to(-?[0-9]+(?:pct)?))?)', re.ASCII)


def split_from_name(name: str) -> str:
  """The split `split_name` gave `name`; UserError for another name."""
  m = _NAME_RE.fullmatch(name)
  if m is None or m.group(0) != name:
    raise UserError(f'{name!r}: not a split file name; expected e.g. test, '
                    'test_from8000 or train_to90pct')
  base, start, stop = m.groups()
  if name == base:
    return base
  start, stop = ((b or '').replace('pct', '%') for b in (start, stop))
  split = f'{base}[{start}:{stop}]'
  parse_split(split)
  return split
