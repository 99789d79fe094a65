"""Optimizers and learning-rate schedules, picked by name."""

from __future__ import annotations

import ml_collections
import optax

from kmnist_jax.core.errors import UserError


def _choose(kind: str, name: str, registry: dict):
  if name not in registry:
    raise UserError(f'config.{kind}: unknown {kind} {name!r}; valid: '
                    f'{", ".join(sorted(registry))}')
  return registry[name]


def _constant(c, total, warmup, steps_per_epoch):
  return optax.constant_schedule(c.learning_rate)


def _cosine(c, total, warmup, steps_per_epoch):
  return optax.cosine_decay_schedule(c.learning_rate, max(total, 1))


def _warmup_cosine(c, total, warmup, steps_per_epoch):
  return optax.warmup_cosine_decay_schedule(
      0.0, c.learning_rate, warmup, max(total, warmup + 1))


def _onecycle(c, total, warmup, steps_per_epoch):
  return optax.cosine_onecycle_schedule(max(total, 1), c.learning_rate)


def parse_milestones(c) -> list[int]:
  """`config.lr_milestones` ('100,150') as increasing epochs >= 1.

  Epochs past `num_epochs` are allowed (a run capped below them, such as a
  `:smoke` or capped proxy run, keeps the initial rate).
  """
  text = str(c.lr_milestones).strip()
  try:
    epochs = [int(e) for e in text.split(',')] if text else []
  except ValueError:
    epochs = []
  if not epochs or epochs != sorted(set(epochs)) or epochs[0] < 1:
    raise UserError(f'config.lr_milestones={c.lr_milestones!r}: expected '
                    'increasing epochs >= 1 separated by commas, e.g. '
                    '"100,150", for lr_schedule=multistep')
  return epochs


def _multistep(c, total, warmup, steps_per_epoch):
  """The learning rate times `lr_decay` from each epoch in `lr_milestones`
  on (epochs counted from 0, as PyTorch's MultiStepLR stepped per epoch)."""
  if not (isinstance(c.lr_decay, (int, float)) and c.lr_decay >= 0):
    raise UserError(f'config.lr_decay={c.lr_decay!r}: expected a number >= 0')
  return optax.piecewise_constant_schedule(
      c.learning_rate,
      {e * steps_per_epoch: c.lr_decay for e in parse_milestones(c)})


SCHEDULES = {
    'constant': _constant,
    'cosine': _cosine,
    'warmup_cosine': _warmup_cosine,
    'onecycle': _onecycle,
    'multistep': _multistep,
}


def _l2(c):
  """PyTorch-style coupled weight decay, for optimizers without their own."""
  return [optax.add_decayed_weights(c.weight_decay)] if c.weight_decay else []


OPTIMIZERS = {
    'adam': lambda c, lr: optax.chain(
        *_l2(c), optax.adam(lr, b1=c.beta1, b2=c.beta2, eps=c.eps)),
    'adamw': lambda c, lr: optax.adamw(
        lr, b1=c.beta1, b2=c.beta2, eps=c.eps, weight_decay=c.weight_decay),
    'sgd': lambda c, lr: optax.chain(
        *_l2(c), optax.sgd(lr, momentum=c.momentum or None,
                           nesterov=c.nesterov)),
    'adadelta': lambda c, lr: optax.chain(
        *_l2(c), optax.adadelta(lr, rho=c.rho, eps=c.eps)),
}


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int):
  total = config.num_epochs * steps_per_epoch
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  return _choose('lr_schedule', config.lr_schedule, SCHEDULES)(
      config, total, warmup, steps_per_epoch)


def create_optimizer(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> optax.GradientTransformation:
  """The optax transformation named by `config.optimizer`."""
  make = _choose('optimizer', config.optimizer, OPTIMIZERS)
  tx = make(config, create_schedule(config, steps_per_epoch))
  if config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx
