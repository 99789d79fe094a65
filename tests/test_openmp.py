"""kmnist_jax.cpu.openmp: OpenMP's wait policy, set before libgomp loads."""

import os
import subprocess
import sys

import pytest

from kmnist_jax.cpu import openmp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('env, policy, spins', [
    ({}, 'active', True),                                  # the default
    ({'KMNIST_JAX_OMP_SPIN': '1'}, 'active', True),
    ({'KMNIST_JAX_OMP_SPIN': '0'}, None, False),           # switched off
    ({'KMNIST_JAX_OMP_SPIN': 'off'}, None, False),
    ({'OMP_WAIT_POLICY': 'passive'}, 'passive', False),    # the user's kept
    ({'OMP_WAIT_POLICY': 'ACTIVE', 'KMNIST_JAX_OMP_SPIN': '0'}, 'ACTIVE',
     True),
])
def test_spin_waits_sets_active_unless_told_otherwise(env, policy, spins):
  env = dict(env)
  assert openmp.spin_waits(env) is spins
  assert env.get('OMP_WAIT_POLICY') == policy
  assert openmp.spin_waits(env) is spins  # Idempotent.
  assert env.get('OMP_WAIT_POLICY') == policy


def _run(code: str, **env) -> str:
  full = {k: v for k, v in os.environ.items()
          if k not in ('OMP_WAIT_POLICY', 'KMNIST_JAX_OMP_SPIN')}
  full.update(env, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-c', code], env=full, check=True,
                        capture_output=True, text=True).stdout.strip()


def test_runtime_setup_sets_it_for_the_process_and_says_so():
  code = ('import os; from kmnist_jax import runtime; '
          'from kmnist_jax.cpu import openmp; runtime.setup(); '
          'print(os.environ.get("OMP_WAIT_POLICY"), "|", openmp.describe())')
  assert _run(code, KMNIST_JAX_COMPILATION_CACHE='0') == (
      'active | OMP_WAIT_POLICY=active (kmnist_jax.cpu.openmp)')
  assert _run(code, KMNIST_JAX_COMPILATION_CACHE='0',
              OMP_WAIT_POLICY='passive') == (
                  'passive | OMP_WAIT_POLICY=passive (set by the user)')
  assert _run(code, KMNIST_JAX_COMPILATION_CACHE='0',
              KMNIST_JAX_OMP_SPIN='0') == (
                  "None | OpenMP threads sleep when idle (libgomp's default)")


def test_the_suite_runs_without_spinning_threads():
  # conftest.py: two workers share two cores.
  assert os.environ.get('KMNIST_JAX_OMP_SPIN') == '0'


def test_the_pytorch_worker_keeps_libgomps_default_unless_the_user_set_one():
  code = ('import os, sys; sys.path.insert(0, %r); '
          'from kmnist_jax import runtime; runtime.setup(); '
          'from experiments import torch_client; '
          'env = torch_client.torch_env("same"); '
          'print(os.environ.get("OMP_WAIT_POLICY"), env.get("OMP_WAIT_POLICY"))'
          % ROOT)
  assert _run(code, KMNIST_JAX_COMPILATION_CACHE='0') == 'active None'
  assert _run(code, KMNIST_JAX_COMPILATION_CACHE='0',
              OMP_WAIT_POLICY='active') == 'active active'
