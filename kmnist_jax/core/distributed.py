"""Multi-device and multi-process runs on JAX's own distributed runtime.

One `('data',)` mesh spans every device of every process. Each process runs
the same program; `jax.distributed.initialize` connects them, CPU collectives
go through gloo. Host data becomes global arrays with
`jax.make_array_from_process_local_data`, each process handing over only the
part its own devices hold (`put_global`). Only process 0 writes logs, metrics,
plots and results; every process takes part in checkpoint saves and restores.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from kmnist_jax.core.errors import UserError
from kmnist_jax.core.errors import one_line

MODES = ('auto', 'on', 'off')


def detect_cluster(env: Mapping[str, str] | None = None) -> str:
  """Names the multi-task launcher of this process ('' if none).

  SLURM counts inside an `srun` step of more than one task (the batch script
  itself is not a step); Open MPI when `mpirun` started more than one rank.
  """
  env = os.environ if env is None else env
  count = lambda name: int(env.get(name, '1') or '1')
  if 'SLURM_STEP_NODELIST' in env and 'SLURM_PROCID' in env and count(
      'SLURM_NTASKS') > 1:
    return 'SLURM'
  if count('OMPI_COMM_WORLD_SIZE') > 1:
    return 'Open MPI'
  return ''


def initialize(mode: str = 'auto', coordinator_address: str = '',
               num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` when this run spans processes.

  `mode`: 'off' never; 'on' always (JAX fills unset values from the cluster
  environment); 'auto' when a coordinator is named or `detect_cluster()`
  finds a launcher. Must run before anything touches a JAX device. Returns
  whether the distributed runtime is on.
  """
  if mode not in MODES:
    raise UserError(f'--distributed={mode}: expected one of {", ".join(MODES)}')
  named = {'--coordinator_address': coordinator_address or None,
           '--num_processes': num_processes, '--process_id': process_id}
  given = [k for k, v in named.items() if v is not None]
  if mode == 'off':
    if given:
      raise UserError(f'--distributed=off contradicts {", ".join(given)}')
    return False
  if jax.distributed.is_initialized():
    return True
  cluster = detect_cluster()
  if mode == 'auto' and not given and not cluster:
    return False
  if given and len(given) < 3 and not cluster:
    missing = [k for k, v in named.items() if v is None]
    raise UserError(f'{", ".join(given)} also needs {", ".join(missing)} '
                    '(no SLURM or Open MPI launcher to fill them in)')
  if num_processes is not None and num_processes < 1:
    raise UserError(f'--num_processes={num_processes}: expected >= 1')
  if process_id is not None and not (
      0 <= process_id < (num_processes or process_id + 1)):
    raise UserError(f'--process_id={process_id}: expected 0 <= id < '
                    f'--num_processes={num_processes}')
  host, _, port = (coordinator_address or '').rpartition(':')
  if coordinator_address and not (host and port.isdigit()
                                   and 0 < int(port) < 65536):
    raise UserError(f'--coordinator_address={coordinator_address}: expected '
                    'host:port of process 0, port 1..65535')
  # gloo is the default in recent JAX; set it so CPU runs never fall back to
  # no cross-process collectives.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(coordinator_address or None, num_processes,
                               process_id)
  except (RuntimeError, ValueError) as e:
    raise UserError(f'jax.distributed.initialize failed ({cluster or "flags"}'
                    f'): {one_line(e)}') from e
  return True


def is_main() -> bool:
  """Process 0: the one that writes logs, metrics, plots and results."""
  return jax.process_index() == 0


def any_process(flag: bool) -> bool:
  """Whether `flag` is true on any process; every process must call it."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray([int(flag)], np.int32))
  return bool(np.any(flags))


def barrier(name: str) -> None:
  """Waits until every process has reached `barrier(name)`."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def process_indices(sharding, shape: tuple[int, ...], axis: int) -> np.ndarray:
  """The indices along `axis` of a `shape` array that this process's devices
  hold under `sharding`, in the order `make_array_from_process_local_data`
  expects (ascending blocks)."""
  blocks = set()
  for index in sharding.addressable_devices_indices_map(shape).values():
    start, stop, _ = index[axis].indices(shape[axis])
    blocks.add((start, stop))
  return np.concatenate([np.arange(a, b) for a, b in sorted(blocks)])


def put_global(x: np.ndarray, sharding) -> jax.Array:
  """The global array equal to host array `x` (the same on every process).

  Each process hands over only the part its devices hold: all of it for a
  replicated sharding, its slice of the sharded axis otherwise. No
  cross-process traffic and no equality check (unlike `jax.device_put`).
  """
  x = np.asarray(x)
  local = x
  for axis in range(x.ndim):
    idx = process_indices(sharding, x.shape, axis)
    if len(idx) != x.shape[axis]:
      local = np.take(local, idx, axis=axis)
  return jax.make_array_from_process_local_data(sharding, local, x.shape)


def make_mesh(devices=None) -> Mesh:
  """The 1-D data-parallel mesh ('data') over `devices` (default: all)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices, ('data',))
