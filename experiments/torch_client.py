"""The PyTorch side of the benchmarks, seen from the JAX process.

`TorchWorker` starts `python -m experiments.torch_worker` with the torch
environment's Python (torch is no dependency of kmnist_jax) and sends it one
JSON command a line; see experiments/torch_worker.py for the commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

from kmnist_jax.cpu import malloc as cpu_malloc
from kmnist_jax.cpu import openmp as cpu_openmp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TorchWorker:
  """experiments/torch_worker.py in a subprocess; one JSON line per command.

  The worker imports `experiments` and `kmnist_jax` from this repository:
  ROOT goes first on its PYTHONPATH, and its working folder stays ours.
  """

  def __init__(self, python: str, data_dir: str, env: dict | None = None):
    env = dict(os.environ if env is None else env)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, env.get('PYTHONPATH')) if p)
    self.proc = subprocess.Popen(
        [python, '-m', 'experiments.torch_worker', '--data_dir', data_dir],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if not self._read().get('ready'):
      raise RuntimeError('torch worker did not start')

  def _read(self):
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError('torch worker exited')
    return json.loads(line)

  def __call__(self, cmd: str, **kw):
    self.proc.stdin.write(json.dumps(dict(cmd=cmd, **kw)) + '\n')
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    with contextlib.suppress(Exception):
      self('quit')
    self.proc.wait(timeout=30)


def torch_env(malloc: str, models=()) -> dict:
  """The worker's environment: `same` malloc settings as JAX's, or `stock`.

  `same` follows the JAX side's rule for the `models` the worker will run:
  the C library's defaults where `cpu.malloc.stock_for` says so (a
  DenseNet), so that neither side keeps what a DenseNet frees. Its OpenMP
  threads wait as libgomp's default has them, not as the JAX side's
  (`cpu.openmp.spin_waits`), unless the user set OMP_WAIT_POLICY.
  """
  env = dict(os.environ)
  if malloc == 'stock' or cpu_malloc.stock_for(models):
    env[cpu_malloc.ENV] = '0'
  if cpu_openmp.set_here():
    # libgomp's default for PyTorch (an OMP_WAIT_POLICY the user set is
    # kept): with `active` its worker's idle threads held the cores the JAX
    # side was being timed on (JAX at half speed in the interleaved pairs,
    # 2026-12-06 13:24), and alone its train step measured the same either
    # way (kmnist_jax.cpu.openmp).
    env.pop(cpu_openmp.POLICY, None)
  return env


def start_torch(python: str | None, data_dir: str, notes: list[str],
                malloc: str = 'same', models=()):
  """The worker for `models`, or None with a note when there is no torch
  Python."""
  if not python or not os.path.exists(python):
    notes.append(f'PyTorch side skipped: no torch python ({python!r}); pass '
                 '--torch_python or set KMNIST_JAX_TORCH_PYTHON.')
    return None
  return TorchWorker(python, data_dir, torch_env(malloc, models))
