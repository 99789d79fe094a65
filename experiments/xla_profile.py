"""experiments.throughput's `profile` section: the XLA ops of a train step.

A `jax.profiler` trace of a few train steps, its events matched to the
instructions of the step's compiled HLO module by name.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import shutil
import tempfile

import jax

from experiments import bench as bench_lib

PROFILE_RUNS = (('keras_cnn', 128), ('seed_cnn', 400), ('resnet_preact20', 128))


def hlo_ops(hlo_text: str) -> dict[str, str]:
  """Instruction name -> 'shape op [jax op] {root of a fusion}' of a module."""
  ops, roots, calls = {}, {}, {}
  computation = None
  for line in hlo_text.splitlines():
    line = line.strip()
    if line.endswith('{') and not line.startswith(('ROOT', '%')) or (
        line.startswith('%') and ' = ' not in line and line.endswith('{')):
      computation = line.lstrip('%').split(' ', 1)[0]
      continue
    if ' = ' not in line or not line.startswith(('%', 'ROOT %')):
      continue
    is_root = line.startswith('ROOT ')
    name, rest = line.removeprefix('ROOT ')[1:].split(' = ', 1)
    shape, _, tail = rest.partition(' ')
    kind = tail.split('(', 1)[0]
    desc = f'{shape} {kind}'
    if 'window={' in rest:
      desc += ' window=' + rest.split('window={', 1)[1].split('}', 1)[0]
    if 'custom_call_target="' in rest:
      desc += ' target=' + rest.split('custom_call_target="', 1)[1].split(
          '"', 1)[0]
    if 'op_name="' in rest:
      desc += ' [' + rest.split('op_name="', 1)[1].split('"', 1)[0] + ']'
    if is_root and computation:
      roots[computation] = desc
    ops[name] = desc
    if 'calls=%' in rest:
      calls[name] = rest.split('calls=%', 1)[1].split(',', 1)[0].split(' ')[0]
  for name, comp in calls.items():
    if comp in roots:
      ops[name] += ' {fused: ' + roots[comp].split(' ', 1)[1] + '}'
  return ops


def op_kind(what: str) -> str:
  """The kind of an op from its `hlo_ops` description: 'custom call' (the
  oneDNN convolutions), 'BatchNorm+ReLU' (kmnist_jax.cpu.batchnorm's
  kernels), 'convolution' (XLA's, fused or not), 'fusion' (XLA's
  elementwise and reduction loops) or 'other'."""
  # 'SHAPE OP [jax op] {fused: ...}', SHAPE a tuple '(a, b)' for some.
  rest = (what[what.index(') ') + 2:] if what.startswith('(')
          else what.split(' ', 1)[1])
  kind = rest.split(' ', 1)[0]
  if kind == 'custom-call':
    return 'BatchNorm+ReLU' if 'target=kmnist_bn_relu' in what else (
        'custom call')
  if kind == 'convolution' or 'fused: convolution' in what:
    return 'convolution'
  return 'fusion' if kind == 'fusion' else 'other'


def by_kind(total: dict, ops: dict) -> dict[str, float]:
  """ms per step of every op, summed by `op_kind`."""
  out = collections.Counter()
  for op, ms in total.items():
    out[op_kind(ops[op])] += ms
  return dict(out)


def fusions_by_shape(total: dict, ops: dict, top: int = 6) -> list[dict]:
  """XLA's fusions summed by their result's shape: the `top` shapes that
  take the most ms per step, with how many fusions make each."""
  ms, count = collections.Counter(), collections.Counter()
  for op, t in total.items():
    if op_kind(ops[op]) == 'fusion':
      shape = ops[op].split(' ', 1)[0]
      ms[shape] += t
      count[shape] += 1
  return [dict(shape=sh, ms=t, fusions=count[sh])
          for sh, t in ms.most_common(top)]


def run_profile(args, data, results):
  """Top XLA ops per train step, from a jax.profiler trace."""
  rows = results.setdefault('profile', [])
  steps = 10
  precision = getattr(args, 'jax_matmul_precision', 'default')
  compute_dtype = getattr(args, 'jax_compute_dtype', 'float32')
  for name, batch in [r for r in PROFILE_RUNS if r[0] in args.models]:
    bench = bench_lib.JaxBench(name, data, precision, compute_dtype)
    step = bench._train_step(batch)  # pylint: disable=protected-access
    ops = hlo_ops(step.lower(bench.states[batch], bench.images, bench.labels,
                              bench.perm, 0).compile().as_text())
    bench.train(batch, 2)
    trace_dir = f'{args.out}_traces/{name}_b{batch}'
    with tempfile.TemporaryDirectory() as tmp:
      jax.profiler.start_trace(tmp, create_perfetto_trace=True)
      wall = bench.train(batch, steps)
      jax.profiler.stop_trace()
      found = glob.glob(os.path.join(tmp, '**', '*.trace.json.gz'),
                        recursive=True)
      if not found:
        results['notes'].append(f'profile: no trace written for {name}.')
        continue
      os.makedirs(trace_dir, exist_ok=True)
      target = os.path.join(trace_dir, 'perfetto_trace.json.gz')
      shutil.copy(found[0], target)
    with gzip.open(target) as f:
      events = json.load(f)
    events = events['traceEvents'] if isinstance(events, dict) else events
    total = collections.Counter()
    for e in events:
      if e.get('ph') == 'X' and e.get('name') in ops:
        total[e['name']] += e.get('dur', 0) / 1e3 / steps  # ms per step
    step_ms = 1e3 * wall / steps
    top = [dict(op=op, ms=ms, share=ms / step_ms, what=ops[op])
           for op, ms in total.most_common(8)]
    rows.append(dict(model=name, batch=batch, step_ms=step_ms, top=top,
                     precision=precision, compute_dtype=compute_dtype,
                     by_kind=by_kind(total, ops),
                     fusion_shapes=fusions_by_shape(total, ops),
                     trace=os.path.relpath(target, bench_lib.ROOT)))
    print(f'profile {name} b{batch}: {step_ms:.1f} ms/step; ' + ', '.join(
        f'{t["op"]} {t["ms"]:.1f} ms' for t in top[:4]), flush=True)

