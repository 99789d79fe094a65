"""kmnist_jax.runtime: malloc settings, compilation cache, environment switches."""

import json
import os
import subprocess
import sys

import pytest

from kmnist_jax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A jitted function whose 40 MB intermediate XLA:CPU keeps in the execution's
# temporary buffer, run 25 times; prints the minor page faults of runs 6-25.
_FAULTS = r'''
import json, resource, sys
sys.path.insert(0, {root!r})
from kmnist_jax import runtime
runtime.setup()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jax.lax.optimization_barrier(x + 1.0) * 2.0).sum())
x = jnp.ones((10_000_000,), jnp.float32)
for _ in range(5):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
  f(x).block_until_ready()
print(json.dumps(dict(
    faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
    kept=runtime.describe_malloc())))
'''


def _faults(malloc: str) -> dict:
  env = dict(os.environ, KMNIST_JAX_MALLOC=malloc,
             KMNIST_JAX_COMPILATION_CACHE='0')
  out = subprocess.run([sys.executable, '-c', _FAULTS.format(root=ROOT)],
                       env=env, check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc'),
                    reason='glibc only')
def test_kept_memory_stops_page_faults_of_xla_temporaries():
  stock, kept = _faults('0'), _faults('1')
  # With malloc's defaults every run faults in 40 MB of fresh 4 KiB pages
  # (9,766). Kept, the runs reuse the heap's pages; a few grow the heap
  # when small allocations have split the freed space (0-4 of 10 runs here).
  assert stock['faults'] > 20 * 9000, stock
  assert kept['faults'] < stock['faults'] / 3, (stock, kept)
  assert 'defaults' in stock['kept'] and 'keeps freed' in kept['kept']


def test_switched_off_by_env(monkeypatch):
  monkeypatch.setenv(runtime.MALLOC_ENV, 'off')
  assert runtime.keep_freed_memory() is False


@pytest.mark.parametrize('value,off', [
    ('0', True), ('false', True), ('OFF', True), ('no', True), ('1', False),
    ('yes', False), ('/some/folder', False)])
def test_switched_off_words(value, off):
  assert runtime.switched_off(value) is off


def test_import_needs_only_the_standard_library():
  # The PyTorch benchmark worker imports it in an environment without jax.
  code = ('import sys; sys.path.insert(0, %r); import kmnist_jax.runtime; '
          'print(sorted(m for m in ("jax", "absl", "numpy") '
          'if m in sys.modules))' % ROOT)
  out = subprocess.run([sys.executable, '-c', code], check=True,
                       capture_output=True, text=True)
  assert out.stdout.strip() == '[]'
