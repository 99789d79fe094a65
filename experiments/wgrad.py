"""Weight gradients: oneDNN's convolution, one matrix product, or two halves.

`kmnist_jax/cpu/csrc/onednn_conv.cc` computes a convolution's weight
gradient in one of three ways: oneDNN's backward-weights convolution
(`conv`); cols(x)^T . dy, one oneDNN matrix product over the im2col copy of
x (`gemm`, its `Gemm`); or two convolutions over the halves of the batch,
one per thread (`split`, its `Split`). `WeightGradBy` there picks by shape.
This script times one convolution's train-step work (forward pass and both
gradients, jitted, at batch 128) for the ResNets' layer shapes with every
weight gradient computed one way (`KMNIST_JAX_ONEDNN_WGRAD=<way>`), each way
in a fresh process (the switch is read once), one after the other:

  python -m experiments.wgrad --out experiments/results/wgrad/<cpu>

Writes `--out`.md and `--out`.json. Times are medians of 3 blocks of 20
calls; run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from experiments.report import md_table

# (input size, channels in, channels out, stride, kernel): preact_resnet18's
# and resnet_preact20's convolutions.
SHAPES = ((28, 64, 64, 1, 3), (28, 64, 128, 2, 3), (14, 128, 128, 1, 3),
          (14, 128, 256, 2, 3), (7, 256, 256, 1, 3), (7, 256, 512, 2, 3),
          (4, 512, 512, 1, 3), (28, 64, 128, 2, 1), (14, 128, 256, 2, 1),
          (7, 256, 512, 2, 1), (28, 16, 16, 1, 3), (28, 16, 32, 2, 3),
          (14, 32, 32, 1, 3), (14, 32, 64, 2, 3), (7, 64, 64, 1, 3))
BATCH = 128
WAYS = ('conv', 'gemm', 'split')


def time_shapes(dtype: str) -> list[float]:
  """ms per forward pass and both gradients, for each of SHAPES."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from kmnist_jax.cpu import conv  # pylint: disable=g-import-not-at-top
  from kmnist_jax.cpu import malloc  # pylint: disable=g-import-not-at-top
  from kmnist_jax.cpu import onednn  # pylint: disable=g-import-not-at-top
  malloc.keep_freed_memory()  # As the CLI and experiments.throughput do.
  if not onednn.available():
    raise SystemExit('experiments.wgrad: oneDNN is not available here')
  dt = jnp.dtype(dtype)
  key = jax.random.key(0)
  out = []
  for hw, cin, cout, s, k in SHAPES:
    x = jax.random.normal(key, (BATCH, hw, hw, cin), dt)
    w = (jax.random.normal(key, (k, k, cin, cout)) * 0.05).astype(dt)
    pad = 'SAME' if k == 3 else 'VALID'
    f = lambda x, w: conv.conv_general_dilated(  # pylint: disable=cell-var-from-loop
        x, w, (s, s), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    r = jax.random.normal(key, jax.eval_shape(f, x, w).shape, dt)
    step = jax.jit(jax.grad(  # pylint: disable=cell-var-from-loop
        lambda x, w: jnp.sum((f(x, w) * r).astype(jnp.float32)), (0, 1)))
    for _ in range(3):
      jax.block_until_ready(step(x, w))
    blocks = []
    for _ in range(3):
      t = time.perf_counter()
      for _ in range(20):
        res = step(x, w)
      jax.block_until_ready(res)
      blocks.append((time.perf_counter() - t) / 20 * 1e3)
    out.append(sorted(blocks)[1])
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dtypes', default='bfloat16,float32')
  p.add_argument('--ways', default=','.join(WAYS))
  p.add_argument('--out', required=True)
  p.add_argument('--child', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(time_shapes(args.child)))
    return
  from kmnist_jax.cpu import features  # pylint: disable=g-import-not-at-top
  cpu = features.describe()
  results = {}
  dtypes, ways = args.dtypes.split(','), args.ways.split(',')
  for dtype in dtypes:
    for way in ways:
      env = dict(os.environ, KMNIST_JAX_ONEDNN_WGRAD=way)
      proc = subprocess.run(
          [sys.executable, '-m', 'experiments.wgrad', '--out', '-',
           '--child', dtype], env=env, capture_output=True, text=True,
          check=True)
      results[f'{dtype}/{way}'] = json.loads(proc.stdout.splitlines()[-1])
      print(dtype, way, results[f'{dtype}/{way}'], flush=True)
  rows = []
  for i, (hw, cin, cout, s, k) in enumerate(SHAPES):
    row = [f'{hw}x{hw}x{cin} -> {cout}, {k}x{k}, stride {s}']
    for dtype in dtypes:
      ms = {way: results[f'{dtype}/{way}'][i] for way in ways}
      row += [f'{ms[way]:.2f}' for way in ways] + [min(ms, key=ms.get)]
    rows.append(row)
  header = ['layer (batch 128)']
  for dtype in dtypes:
    header += [f'{dtype} {way} ms' for way in ways] + [f'{dtype} fastest']
  cmd = 'python -m experiments.wgrad ' + ' '.join(
      sys.argv[1:] if argv is None else argv)
  when = time.strftime('%Y-%m-%d %H:%M')
  text = (f'# Weight gradients: oneDNN convolution, one matrix product, two '
          f'halves\n\nCommand: `{cmd}`\n\nMachine: {cpu}, {os.cpu_count()} '
          f'cores; {when}. Load average at the end: '
          f'{"/".join(f"{x:.1f}" for x in os.getloadavg())}.\n\n'
          'One convolution\'s forward pass and both gradients (jitted, '
          'medians of 3 blocks of 20 calls), every weight gradient computed '
          'one way: `conv`, oneDNN\'s backward-weights convolution; `gemm`, '
          'cols(x)^T . dy; `split`, two convolutions over the halves of the '
          'batch, one per thread.\n\n' + md_table(header, rows) + '\n')
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out + '.md', 'w', encoding='utf-8') as f:
    f.write(text)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(cpu=cpu, shapes=SHAPES, ms=results), f, indent=1)
  print(text)


if __name__ == '__main__':
  main()
