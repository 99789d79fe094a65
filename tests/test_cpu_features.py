"""kmnist_jax.cpu.features: the CPU model and the flags that pick kernels."""

from kmnist_jax.cpu import features

_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: other
flags\t\t: fpu
"""
_EPYC = """model name\t: AMD EPYC 9R14
flags\t\t: fpu avx2 avx512f avx512_bf16
"""


def test_parse_and_describe():
  intel = features.parse_cpuinfo(_AMX)
  assert (intel.model, intel.amx, intel.avx512_bf16) == (
      'Intel(R) Xeon(R) Processor', True, True)
  assert features.describe(intel) == (
      'Intel(R) Xeon(R) Processor: AMX (bf16), avx512_bf16, avx512f')
  amd = features.parse_cpuinfo(_EPYC)
  assert not amd.amx and amd.avx512_bf16
  assert features.describe(amd) == 'AMD EPYC 9R14: avx512_bf16, avx512f'
  bare = features.parse_cpuinfo('model name : Old\nflags : fpu sse2\n')
  assert features.describe(bare) == 'Old: none of AMX, avx512_bf16, avx512f'
  # amx_bf16 without tiles is no AMX path.
  assert not features.parse_cpuinfo('flags : amx_bf16\n').amx


def test_detect_is_read_once():
  assert features.detect() is features.detect()
  assert features.describe().startswith(features.detect().model)
