"""The network trainer as a method: every network of `models.factory.MODELS`
trains with `train.loop` and scores with `inference.evaluate`."""

from __future__ import annotations

from kmnist_jax.inference import evaluate
from kmnist_jax.models import factory
from kmnist_jax.train import loop

NAMES = tuple(factory.MODELS)
TRAINS = True

check_config = loop.check_config
probabilities = evaluate.probabilities
checkpoint_step = evaluate.checkpoint_step


def fit(config, workdir: str, compiler_options: dict | None = None):
  """Trains `config`'s network (`train.loop.train`): (final state, summary)."""
  return loop.train(config, workdir, compiler_options)
