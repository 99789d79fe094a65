"""Like with like: JAX against PyTorch in float32, and in bfloat16 against
PyTorch's bfloat16 autocast (`python -m experiments.throughput --sections
pairs`).

Per model and batch, one interleaved round a repeat times the train step of
every mode:
- JAX `f32` (matmul_precision 'default'), `bf16` (matmul_precision
  'bfloat16': bfloat16 convolution and matmul operands, float32 sums; its
  accuracy is checked in experiments/results/parity_bf16) and `bf16_act`
  (compute_dtype 'bfloat16': bfloat16 activations, as PyTorch's autocast);
- PyTorch `f32`, `bf16` (`torch.autocast('cpu', dtype=torch.bfloat16)`) and
  `bf16_cl` (the same with `channels_last`), the modes of
  experiments/torch_worker.py.
Two ratios per row: JAX f32 / PyTorch f32, and JAX's fastest / PyTorch's
fastest. The table names the CPU (model, AMX, avx512_bf16): numbers from
different machines never share a table, so each machine writes its own file
(`--out` defaults to one per CPU kind).
"""

from __future__ import annotations

import re

from experiments import bench as bench_lib
from experiments.report import fmt
from experiments.report import md_table
from kmnist_jax.cpu import features

# JAX mode: (config.matmul_precision, config.compute_dtype).
JAX_MODES = {'f32': ('default', 'float32'), 'bf16': ('bfloat16', 'float32'),
             'bf16_act': ('default', 'bfloat16')}
TORCH_MODES = ('f32', 'bf16', 'bf16_cl')


def machine_tag() -> str:
  """A file-name tag for this CPU kind, e.g. 'intel_xeon_amx'."""
  f = features.detect()
  base = re.sub(r'[^a-z0-9]+', '_', re.sub(r'\(.*?\)|processor|cpu', '',
                                           f.model.lower())).strip('_')
  return base + ('_amx' if f.amx else '_avx512bf16' if f.avx512_bf16 else '')


def _fastest(rates: dict, side: str):
  """(mode, img/s) of `side`'s fastest mode, or (None, None)."""
  found = [(r, m) for (s, m), r in rates.items() if s == side and r]
  if not found:
    return None, None
  r, m = max(found)
  return m, r


def run_pairs(args, torch, data, steps_for, results) -> None:
  """Appends one row per (model, batch) to results['pairs']."""
  rows = results.setdefault('pairs', [])
  for name in args.models:
    benches = {m: bench_lib.JaxBench(name, data, p, dtype)
               for m, (p, dtype) in JAX_MODES.items()}
    for batch in args.batches:
      steps = steps_for(name, batch)
      for b in benches.values():
        b.train(batch, 1)  # Compiles.
      for m in TORCH_MODES if torch else ():
        torch('train', model=name, batch=batch, steps=1, mode=m)
      seconds = {('jax', m): [] for m in JAX_MODES}
      seconds.update({('torch', m): [] for m in TORCH_MODES if torch})
      for _ in range(args.repeats):
        for m, b in benches.items():
          seconds['jax', m].append(b.train(batch, steps))
        for m in TORCH_MODES if torch else ():
          seconds['torch', m].append(torch('train', model=name, batch=batch,
                                           steps=steps, mode=m)['seconds'])
      rates = {k: bench_lib.rate(batch * steps, v) for k, v in seconds.items()}
      row = dict(model=name, batch=batch, steps=steps,
                 img_s={f'{s}_{m}': r for (s, m), r in rates.items()},
                 seconds={f'{s}_{m}': v for (s, m), v in seconds.items()})
      (jm, jr), (tm, tr) = _fastest(rates, 'jax'), _fastest(rates, 'torch')
      row.update(f32_ratio=bench_lib.ratio(rates['jax', 'f32'],
                                           rates.get(('torch', 'f32'))),
                 jax_fastest=jm, torch_fastest=tm,
                 fastest_ratio=bench_lib.ratio(jr, tr))
      rows.append(row)
      print(f'{name:16s} b{batch:<4d} ' + ', '.join(
          f'{k} {fmt(v)}' for k, v in row['img_s'].items())
            + f'; f32/f32 {fmt(row["f32_ratio"], ".2f")}, fastest/fastest '
            f'{fmt(row["fastest_ratio"], ".2f")}', flush=True)


def pairs_table(rows: list[dict], cpu: str) -> list[str]:
  """The markdown lines of the like-with-like table."""
  header = ['model', 'batch', 'JAX f32', 'JAX bf16', 'JAX bf16_act',
            'PyTorch f32',
            'PyTorch bf16 autocast', 'PyTorch bf16 autocast + channels_last',
            'f32 / f32', 'fastest / fastest']
  cells = []
  for r in rows:
    i = r['img_s']
    cells.append([r['model'], r['batch'], fmt(i.get('jax_f32')),
                  fmt(i.get('jax_bf16')), fmt(i.get('jax_bf16_act')),
                  fmt(i.get('torch_f32')),
                  fmt(i.get('torch_bf16')), fmt(i.get('torch_bf16_cl')),
                  fmt(r['f32_ratio'], '.2f'),
                  f'{fmt(r["fastest_ratio"], ".2f")} (JAX {r["jax_fastest"]}'
                  f' / PyTorch {r["torch_fastest"]})'])
  return [f'Train img/s, like with like, on {cpu} (one machine; medians of '
          'the interleaved repeats). JAX bf16 = matmul_precision '
          "'bfloat16' (bfloat16 convolution operands, float32 activations); "
          "JAX bf16_act = compute_dtype 'bfloat16' (bfloat16 activations); "
          "PyTorch bf16 = torch.autocast('cpu', "
          'dtype=torch.bfloat16):', '', md_table(header, cells), '']
