"""The train state: the network of a config, its parameters and optimizer
state, built on the devices or described without allocating."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from kmnist_jax.cpu import compiler
from kmnist_jax.models import factory
from kmnist_jax.models import precision


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array  # Raw uint32[2] PRNG key: dropout keys fold in the step.
  # Running sums of the current epoch's training metrics.
  loss_sum: jax.Array
  correct_sum: jax.Array
  count: jax.Array
  bad_step: jax.Array  # First step with a non-finite loss; -1 if none.


def build_model(config, num_classes: int, seed: int = 0) -> nnx.Module:
  """`config`'s network (`factory.create_model`), with its compute dtype and
  input scaling."""
  return factory.create_model(
      config.model, num_classes, seed=seed,
      dtype=precision.COMPUTE_DTYPES[config.compute_dtype],
      input_mean=config.input_mean, input_std=config.input_std)


def model_graphdef(config, num_classes: int):
  """The graphdef of `config`'s model, without allocating its params."""
  return split_model(nnx.eval_shape(
      lambda: build_model(config, num_classes)))[0]


def split_model(model: nnx.Module):
  """(graphdef, params, batch_stats) of an NNX model."""
  return nnx.split(model, nnx.Param, nnx.BatchStat)


def init_state(config, num_classes: int, tx) -> tuple[Any, TrainState]:
  model = build_model(config, num_classes, seed=config.seed)
  graphdef, params, batch_stats = split_model(model)
  zero = lambda: jnp.zeros((), jnp.float32)  # Distinct buffers: donated.
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=tx.init(params), key=jax.random.PRNGKey(config.seed),
      loss_sum=zero(), correct_sum=zero(), count=zero(),
      bad_step=jnp.full((), -1, jnp.int32))
  return graphdef, state


def jit_init_state(config, num_classes: int, tx, sharding,
                   compiler_options: dict | None = None):
  """The jitted initial train state, built on the devices with `sharding`;
  `compiler_options` (those of the steps) go over the init's own."""
  return jax.jit(lambda: init_state(config, num_classes, tx)[1],
                 out_shardings=sharding,
                 compiler_options={**compiler.INIT_COMPILER_OPTIONS,
                                   **(compiler_options or {})})


def abstract_state(config, num_classes, tx, sharding) -> TrainState:
  """Shapes, dtypes and shardings of the train state, without allocating."""
  shapes = jax.eval_shape(lambda: init_state(config, num_classes, tx)[1])
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      shapes)
