"""Flax NNX models, picked by name from `MODELS`.

Every model maps uint8-derived float images (B, 28, 28, 1) to logits
(B, num_classes) and is called as `model(x, train=..., dropout_key=...)`.
Training code never calls `nnx.jit`: it splits the model into a graphdef and
pure state once and jits plain functions (see `kmnist_jax.train.loop`).
"""

from __future__ import annotations

from typing import Callable

from flax import nnx

from kmnist_jax.core.errors import UserError
from kmnist_jax.models import cnns
from kmnist_jax.models import densenet
from kmnist_jax.models import ops as ops_lib
from kmnist_jax.models import resnets
from kmnist_jax.models import vgg

MODELS: dict[str, Callable[..., nnx.Module]] = {
    **cnns.MODELS, **resnets.MODELS, **densenet.MODELS, **vgg.MODELS}


class Normalized(nnx.Module):
  """`model` of the input scaled as (x - mean) / std, x in [0, 1]: the
  recipes that normalise by their training split's mean and std. The
  augmentations (crops, Cutout, mixup) act on x before it."""

  def __init__(self, model: nnx.Module, mean: float, std: float):
    self.model, self.mean, self.std = model, mean, std

  def __call__(self, x, **kwargs):
    return self.model((x - self.mean) / self.std, **kwargs)


def create_model(name: str, num_classes: int, seed: int = 0, dtype=None,
                 input_mean: float = 0.0, input_std: float = 1.0,
                 ops: ops_lib.Ops | None = None) -> nnx.Module:
  """Builds model `name`, its layers computing with `ops` (default
  `ops.FAST`, the speed code for XLA:CPU); an unknown name lists the valid
  ones. An input mean or std other than 0 and 1 wraps it in `Normalized`."""
  if name not in MODELS:
    raise UserError(f'config.model: unknown model {name!r}; valid: '
                    f'{", ".join(sorted(MODELS))}')
  with ops_lib.building(ops or ops_lib.FAST):
    model = MODELS[name](num_classes, rngs=nnx.Rngs(params=seed),
                         dtype=dtype)
  if (input_mean, input_std) != (0.0, 1.0):
    model = Normalized(model, float(input_mean), float(input_std))
  return model
