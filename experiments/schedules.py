"""A recipe's learning rate at a train step, in plain Python.

The PyTorch side of experiments/parity.py sets each step's rate from
`lr_at`. It is written from the definitions `kmnist_jax.train.optim` uses (optax's
cosine_decay_schedule, cosine_onecycle_schedule and
piecewise_constant_schedule), not by calling them; tests/test_parity.py
compares the two step by step. Like an optax schedule, `lr_at(recipe, t)` is
the rate of the update that follows t earlier updates (t = 0 first).

`recipe` is the dict `experiments/parity.py` derives from a config:
`lr_schedule`, `learning_rate`, `num_epochs`, `steps_per_epoch`, and for
multistep `lr_milestones` (epochs) and `lr_decay`, for onecycle `onecycle`
({pct_start, div_factor, final_div_factor}).
"""

from __future__ import annotations

import math

SCHEDULES = ('constant', 'cosine', 'onecycle', 'multistep')


def _cosine_interpolate(start: float, end: float, pct: float) -> float:
  return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def piecewise_cosine(init: float, boundaries_and_scales: list, t: int) -> float:
  """optax.piecewise_interpolate_schedule('cosine', ...) at step t: the
  running product of the scales, cosine-interpolated between boundaries."""
  bounds = [0] + [b for b, _ in boundaries_and_scales]
  values = [init]
  for _, scale in boundaries_and_scales:
    values.append(values[-1] * scale)
  for i in range(len(bounds) - 1):
    if bounds[i] <= t < bounds[i + 1]:
      pct = (t - bounds[i]) / max(bounds[i + 1] - bounds[i], 1)
      return _cosine_interpolate(values[i], values[i + 1], pct)
  return values[-1]


def lr_at(recipe: dict, t: int) -> float:
  """The learning rate of update t (0-based) of `recipe`."""
  lr, kind = recipe['learning_rate'], recipe['lr_schedule']
  spe = recipe['steps_per_epoch']
  total = max(recipe['num_epochs'] * spe, 1)
  if kind == 'constant':
    return lr
  if kind == 'cosine':
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
  if kind == 'onecycle':
    p = recipe['onecycle']
    return piecewise_cosine(
        lr / p['div_factor'],
        [(int(p['pct_start'] * total), p['div_factor']),
         (int(total), 1.0 / (p['div_factor'] * p['final_div_factor']))], t)
  if kind == 'multistep':
    passed = sum(t >= e * spe for e in recipe['lr_milestones'])
    return lr * recipe['lr_decay'] ** passed
  raise ValueError(f'lr_schedule {kind!r}: expected one of {SCHEDULES}')
