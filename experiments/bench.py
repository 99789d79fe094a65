"""Timing helpers and the compiled JAX steps the benchmarks time.

`JaxBench` holds one model's compiled train and eval steps over the offline
proxy; `experiments.throughput` times them against the PyTorch port, in this
process and in fresh ones.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from kmnist_jax.config import base as configlib
from kmnist_jax.core import distributed
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.train import batches as input_pipeline
from kmnist_jax.train import optim
from kmnist_jax.train import state as train_state
from kmnist_jax.train import steps as steps_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_BATCH = 1000


def median(xs):
  xs = [x for x in xs if x is not None]
  return statistics.median(xs) if xs else None


def rate(images: int, seconds_list) -> float | None:
  """Median images per second over repeats of `images` in `seconds`."""
  m = median(seconds_list)
  return images / m if m else None


def ratio(a, b):
  return a / b if a and b else None


def matmul_peak(repeats: int = 5) -> float:
  """GFLOP/s of a 2048^3 f32 matmul in XLA (best of `repeats`)."""
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda a: a @ a)
  mm(a).block_until_ready()
  best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def model_config(name: str):
  """The model's training config (its configs/ recipe, else SGD momentum)."""
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  if os.path.exists(path):
    spec = importlib.util.spec_from_file_location(f'_cfg_{name}', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config('proxy')
  c = configlib.apply_variant(configlib.base_config(), 'proxy')
  c.model, c.optimizer, c.learning_rate = name, 'sgd', 0.1
  c.momentum, c.weight_decay = 0.9, 1e-4
  return c


class JaxBench:
  """Compiled train and eval steps of one model over the proxy data."""

  def __init__(self, name: str, data, matmul_precision: str = 'default',
               compute_dtype: str = 'float32'):
    self.name = name
    self.config = model_config(name)
    self.config.matmul_precision = matmul_precision
    self.config.compute_dtype = compute_dtype
    mesh = distributed.make_mesh()
    repl = NamedSharding(mesh, P())
    (images, labels), (ev_images, ev_labels) = data
    self.n = len(images)
    self.images = jax.device_put(images, repl)
    self.labels = jax.device_put(labels.astype(np.int32), repl)
    self.perm = input_pipeline.epoch_permutation(0, 0, self.n)
    self.tx = optim.create_optimizer(self.config, self.n // 128)
    self.graphdef, state = train_state.init_state(self.config, 10,
                                                  self.tx)
    self.mesh, self.repl = mesh, repl
    self.state0 = state
    self.steps, self.states = {}, {}
    self.eval_data = input_pipeline.make_eval_data(ev_images, ev_labels,
                                                   EVAL_BATCH, repl)
    self.eval_step = steps_lib.make_eval_step(self.graphdef, 10, EVAL_BATCH,
                                              0, matmul_precision)

  def _train_step(self, batch):
    if batch not in self.steps:
      self.steps[batch] = steps_lib.make_train_step(
          self.graphdef, self.tx, self.config, 10, batch, self.mesh)
      state = jax.tree.map(lambda x: x.copy(), self.state0)
      self.states[batch] = self.steps[batch](state, self.images, self.labels,
                                             self.perm, 0)
      jax.block_until_ready(self.states[batch])
    return self.steps[batch]

  def train(self, batch: int, steps: int) -> float:
    step = self._train_step(batch)
    spe = self.n // batch
    state = self.states[batch]
    t = time.perf_counter()
    for i in range(steps):
      state = step(state, self.images, self.labels, self.perm, i % spe)
    jax.block_until_ready(state)
    self.states[batch] = state
    return time.perf_counter() - t

  def eval(self, steps: int) -> float:
    state, ev = self.states.get(128, self.state0), self.eval_data
    acc = (jnp.zeros((), jnp.float32), jnp.zeros((10, 10), jnp.int32))
    acc = self.eval_step(state.params, state.batch_stats, ev.images,
                         ev.labels, ev.mask, acc, 0)
    jax.block_until_ready(acc)
    t = time.perf_counter()
    for i in range(steps):
      acc = self.eval_step(state.params, state.batch_stats, ev.images,
                           ev.labels, ev.mask, acc, i % ev.num_batches)
    jax.block_until_ready(acc)
    return time.perf_counter() - t

  def forward_flops(self) -> float | None:
    """XLA's FLOP count of the eval forward pass, per image."""
    fn = steps_lib.make_infer_fn(self.graphdef)
    x = jnp.zeros((EVAL_BATCH, 28, 28), jnp.uint8)
    try:
      cost = fn.lower(self.state0.params, self.state0.batch_stats,
                      x).compile().cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      return float(cost['flops']) / EVAL_BATCH
    except Exception:  # pylint: disable=broad-except
      return None


def load_data(data_dir: str):
  """The offline proxy: (train images, labels), (eval images, labels)."""
  return (data_lib.load('kmnist', configlib.PROXY_TRAIN, data_dir),
          data_lib.load('kmnist', configlib.PROXY_EVAL, data_dir))
