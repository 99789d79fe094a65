"""OpenMP threads that keep spinning between calls (OMP_WAIT_POLICY=active).

oneDNN's convolutions and the BatchNorm kernels (`kmnist_jax/cpu/csrc`) run
on one OpenMP team (GNU libgomp); between two of their calls XLA runs its
own fusions on its own threads. With libgomp's default policy the team's
idle thread spins a while, then sleeps, and the next call has to wake it.
`spin_waits` sets OMP_WAIT_POLICY=active for the process, so it keeps
spinning: resnet_preact20's bfloat16 train step at batch 128 took 50.1 and
52.1 ms against 56.3 and 58.6 (two A/Bs, one after the other, 40 steps each,
the 2-core Intel Xeon with AMX, 2026-12-06), and the speed run's epochs 3.3-
3.5 s against 3.6-4.0 s. The PyTorch port's step, whose OpenMP calls follow
each other without gaps, did not change (66.4 and 70.2 ms against 68.0 and
67.6).

The cost falls on other processes: an idle PyTorch worker with the setting
held the cores a JAX process was being timed on (JAX at half speed), so the
benchmarks leave PyTorch libgomp's default (`experiments/torch_client`),
and the test suite (two workers on two cores) switches it off. Two
trainings at once on two cores were already about 10x slower each
(docs/performance.md). Imports only the standard library. It must run
before libgomp loads (`runtime.setup` calls it first); an OMP_WAIT_POLICY
already set is kept, and KMNIST_JAX_OMP_SPIN=0 leaves libgomp's default.
"""

from __future__ import annotations

import os
from typing import MutableMapping

from kmnist_jax.core.environment import switched_off

ENV = 'KMNIST_JAX_OMP_SPIN'
POLICY = 'OMP_WAIT_POLICY'
_set_here = False


def spin_waits(env: MutableMapping[str, str] | None = None) -> bool:
  """Sets OMP_WAIT_POLICY=active in `env` (default: this process's
  environment) unless it is set already or KMNIST_JAX_OMP_SPIN is 0.
  Returns whether `env` now asks for spinning threads."""
  global _set_here
  own = env is None
  env = os.environ if env is None else env
  if POLICY not in env and not switched_off(env.get(ENV, '1')):
    env[POLICY] = 'active'
    _set_here = _set_here or own
  return env.get(POLICY, '').strip().lower() == 'active'


def set_here() -> bool:
  """Whether `spin_waits` set this process's OMP_WAIT_POLICY."""
  return _set_here


def describe() -> str:
  """This process's policy, one line for logs and reports."""
  policy = os.environ.get(POLICY)
  if policy is None:
    return 'OpenMP threads sleep when idle (libgomp\'s default)'
  why = 'kmnist_jax.cpu.openmp' if _set_here else 'set by the user'
  return f'{POLICY}={policy} ({why})'
