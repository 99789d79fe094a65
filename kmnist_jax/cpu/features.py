"""The CPU model and the instruction sets that change a kernel's path.

oneDNN (`cpu/onednn.py`) picks its kernels by what the CPU has: Intel AMX
tiles run the bfloat16 passes' convolutions on matrix units, avx512_bf16
runs them as vector dot products, and without either bfloat16 operands are
widened to float32. Timings from machines that differ here are not
comparable, so every run logs them once (`describe`), and the benchmark
reports name them. Standard library only.
"""

from __future__ import annotations

import dataclasses
import functools
import platform

# The flags of /proc/cpuinfo that change a code path, and their names here.
PATH_FLAGS = {'amx_bf16': 'AMX (bf16)', 'avx512_bf16': 'avx512_bf16',
              'avx512f': 'avx512f'}


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
  model: str
  flags: frozenset[str]

  @property
  def amx(self) -> bool:
    return 'amx_bf16' in self.flags and 'amx_tile' in self.flags

  @property
  def avx512(self) -> bool:
    return 'avx512f' in self.flags

  @property
  def avx512_bf16(self) -> bool:
    return 'avx512_bf16' in self.flags


def parse_cpuinfo(text: str) -> CpuFeatures:
  """The first processor's model name and flags in /proc/cpuinfo's text."""
  model, flags = '', frozenset()
  for line in text.splitlines():
    key, _, value = line.partition(':')
    key = key.strip()
    if key == 'model name' and not model:
      model = value.strip()
    elif key == 'flags' and not flags:
      flags = frozenset(value.split())
  return CpuFeatures(model or platform.processor() or platform.machine(),
                     flags)


@functools.cache
def detect() -> CpuFeatures:
  """This machine's `CpuFeatures` (read once)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      return parse_cpuinfo(f.read())
  except OSError:
    return parse_cpuinfo('')


def describe(features: CpuFeatures | None = None) -> str:
  """'Intel(R) Xeon(R) Processor: AMX (bf16), avx512_bf16, avx512f', or
  '...: none of AMX, avx512_bf16, avx512f'."""
  f = features or detect()
  present = [name for flag, name in PATH_FLAGS.items()
             if (f.amx if flag == 'amx_bf16' else flag in f.flags)]
  return f'{f.model}: ' + (', '.join(present) or
                           'none of AMX, avx512_bf16, avx512f')
