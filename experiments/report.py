"""What every benchmark report states: the machine, the command, tables."""

from __future__ import annotations

import os
import platform
import shlex

import flax
import jax

from kmnist_jax.cpu import features
from kmnist_jax.cpu import malloc as cpu_malloc
from kmnist_jax.cpu import openmp as cpu_openmp
from kmnist_jax.cpu import onednn


def fmt(x, spec='.0f', none='n/a'):
  return none if x is None else format(x, spec)


def md_table(header: list[str], rows: list[list]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
  return '\n'.join(lines)


def machine_info(torch) -> dict:
  """This machine and the versions of both sides (`torch`: the worker)."""
  cpu = features.describe()  # The model, with AMX / avx512_bf16 when present.
  info = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
              jax=jax.__version__, flax=flax.__version__,
              xla_flags=os.environ.get('XLA_FLAGS', ''),
              onednn=onednn.describe(), malloc=cpu_malloc.describe(),
              openmp=cpu_openmp.describe(),
              load_average_start=os.getloadavg())
  if torch:
    info['torch'] = torch('info')
  return info


def load_text(machine: dict, when: str) -> str:
  """The 1, 5 and 15 min load averages at `when` ('start' or 'end')."""
  load = machine.get(f'load_average_{when}')
  return '/'.join(f'{x:.1f}' for x in load) if load else 'n/a'


def command_line(module: str, argv) -> str:
  """The shell command that reruns `python -m experiments.<module> argv`."""
  return shlex.join(['python', '-m', f'experiments.{module}', *argv])
