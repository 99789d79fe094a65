"""experiments.throughput's report: `--out`.json, and `--out`.md's tables."""

from __future__ import annotations

import json

from experiments import bench
from experiments import speed_pairs
from experiments.report import fmt
from experiments.report import load_text
from experiments.report import md_table

TTA_TARGET = 0.93


def add_peak_fractions(results: dict) -> None:
  """Model GFLOP/s of each side over the best matmul peak of the run."""
  peak = results.get('peak_gflops')
  for r in results.get('throughput', []):
    for side in ('jax', 'torch'):
      f, img_s = r.get('flops_per_image'), r.get(f'{side}_img_s')
      r[f'{side}_peak_frac'] = f * img_s / 1e9 / peak if f and img_s and \
          peak else None


def tta_summary(rows: list[dict]) -> dict:
  """Median seconds to the target per side (None if a repeat missed it)."""
  med = lambda xs: bench.median(xs) if xs and None not in xs else None
  j = med([r['jax']['seconds'] for r in rows])
  t = med([r['torch']['seconds'] for r in rows if 'torch' in r])
  return dict(jax=j, torch=t, ratio=bench.ratio(j, t))


def _header(results: dict) -> list[str]:
  """The command, the machine and how to read the numbers."""
  m = results['machine']
  t = m.get('torch', {})
  bf16 = results.get('jax_matmul_precision') == 'bfloat16'
  return ['# kmnist_jax vs PyTorch throughput', '',
          f'Command: `{results["command"]}`', '',
          f'Machine: {m["cpu"]}, {m["cores"]} cores. Python {m["python"]}, '
          f'jax {m["jax"]}, flax {m["flax"]}; torch {t.get("torch", "n/a")} '
          f'(Python {t.get("python", "n/a")}, {t.get("threads", "?")} '
          'threads). '
          f'JAX convolution gradients: {m.get("onednn", "n/a")}. '
          + (_precisions(bf16) if results.get('throughput') else '') +
          f'malloc: JAX {m.get("malloc", "n/a")}; PyTorch '
          f'{t.get("malloc", "n/a")}. '
          f'OpenMP: JAX {m.get("openmp", "n/a")}; PyTorch '
          f'{t.get("openmp", "n/a")}. '
          f'Date: {results["date"]}. Load average (1, 5, 15 min) at start '
          f'{load_text(m, "start")}, at end {load_text(m, "end")}: other '
          'work on the machine slows both sides.', '',
          f'Medians of {results["repeats"]} interleaved repeats.'
          + (_peak_text(results, bf16) if results.get('peak_gflops') else ''),
          '']


def _precisions(bf16: bool) -> str:
  return ('JAX convolutions in the throughput table: '
          + ('bfloat16 operands, float32 sums (config.matmul_precision='
             "'bfloat16')" if bf16 else 'float32') + '; PyTorch float32. ')


def _peak_text(results: dict, bf16: bool) -> str:
  return (f' Peak: 2-core f32 matmul {fmt(results.get("peak_gflops"))} '
          'GFLOP/s (XLA, 2048^3, best seen in the run); "% peak" is the model '
          'FLOP rate (XLA cost analysis, train = 3x forward) over it.'
          + (' With bfloat16 operands the CPU does twice the float32 FLOPs '
             'per instruction, so JAX % peak can pass 100.' if bf16 else ''))


def _throughput_table(rows: list[dict]) -> list[str]:
  cells = [[r['model'], r['kind'], r['batch'], fmt(r['jax_img_s']),
            fmt(r['torch_img_s']), fmt(r['ratio'], '.2f'),
            fmt(r['jax_peak_frac'] and 100 * r['jax_peak_frac'], '.0f'),
            fmt(r['torch_peak_frac'] and 100 * r['torch_peak_frac'], '.0f')]
           for r in rows]
  return [md_table(['model', 'mode', 'batch', 'JAX img/s', 'PyTorch img/s',
                    'JAX/PyTorch', 'JAX % peak', 'PyTorch % peak'], cells), '']


def _malloc_table(rows: list[dict]) -> list[str]:
  cell = lambda v: (f'{v["ms_per_step"]:.1f} ms, {v["faults_per_step"]:.0f}'
                    if v else 'n/a')
  return ['Train step with the C library\'s malloc defaults ("stock") and '
          'with kmnist_jax.cpu.malloc.keep_freed_memory ("kept"): ms per '
          'step, minor page faults per step (fresh processes; medians):', '',
          md_table(['model', 'batch', 'JAX stock', 'JAX kept',
                    'PyTorch stock', 'PyTorch kept'],
                   [[r['model'], r['batch'], cell(r.get('jax_stock')),
                     cell(r.get('jax_kept')), cell(r.get('torch_stock')),
                     cell(r.get('torch_kept'))] for r in rows]),
          '']


def _timing_lines(results: dict) -> list[str]:
  """One line each: epoch overhead, first steps, predict, time to target."""
  out = []
  if 'overhead' in results:
    o = results['overhead']
    out.append(f'Epoch host overhead ({o["model"]}, batch {o["batch"]}, '
               f'{o["steps_per_epoch"]} steps): {o["overhead"]:+.1%} '
               '(target <= 5%).')
  for c in results.get('compile', []):
    out.append(f'First train step of {c["model"]}: cache off '
               f'{c["off"]["first_step"]:.2f} s, cold cache '
               f'{c["cold"]["first_step"]:.2f} s, warm cache '
               f'{c["warm"]["first_step"]:.2f} s: {c["speedup"]:.1f}x '
               '(target >= 2x).')
  if 'predict' in results:
    p = results['predict']
    out.append(f'`--mode predict` on {p["images"]} images, whole process: '
               f'cold cache {p["cold_seconds"]:.2f} s, warm '
               f'{p["warm_seconds"]:.2f} s.')
  tta = results.get('tta', [])
  for i, r in enumerate(tta):
    tj, tt = r['jax'], r.get('torch', {})
    out.append(f'Time to {TTA_TARGET} eval accuracy (keras_cnn recipe, '
               f'proxy, compile included), repeat {i + 1} of {len(tta)}: JAX '
               f'{fmt(tj["seconds"], ".1f")} s (epoch {tj["epochs"]}), '
               f'PyTorch {fmt(tt.get("seconds"), ".1f")} s (epoch '
               f'{tt.get("epochs")}).')
  if len(tta) > 1:
    s = tta_summary(tta)
    out.append(f'Time to {TTA_TARGET}, median of the {len(tta)} interleaved '
               f'repeats: JAX {fmt(s["jax"], ".1f")} s, PyTorch '
               f'{fmt(s["torch"], ".1f")} s, JAX/PyTorch time '
               f'{fmt(s["ratio"], ".2f")} (target <= 1).')
  return out


def _profile_tables(rows: list[dict]) -> list[str]:
  out = []
  for r in rows:
    kinds = ', '.join(f'{k} {ms:.1f} ms' for k, ms in sorted(
        r.get('by_kind', {}).items(), key=lambda kv: -kv[1]))
    out += ['', f'Profile of {r["model"]} training, batch {r["batch"]}, '
            f'matmul_precision {r.get("precision", "default")}, '
            f'compute_dtype {r.get("compute_dtype", "float32")} '
            f'({r["step_ms"]:.1f} ms/step under the tracer; every op summed '
            f'by kind: {kinds}; the run wrote its '
            f'trace to `{r["trace"]}`, not committed). The XLA ops that take '
            'the most time per step (ops the thunk runtime runs concurrently '
            'overlap, so shares can sum past 100%):', '',
            md_table(['XLA op', 'ms/step', 'share of step', 'what it computes'],
                     [[t['op'], fmt(t['ms'], '.1f'),
                       fmt(100 * t['share'], '.0f') + '%',
                       '`' + t['what'][:140] + '`'] for t in r['top']])]
    if r.get('fusion_shapes'):
      out += ['', "XLA's fusions summed by the shape of their result:", '',
              md_table(['result shape', 'fusions', 'ms/step'],
                       [[f'`{f["shape"]}`', f['fusions'], fmt(f['ms'], '.1f')]
                        for f in r['fusion_shapes']])]
  return out


def write_report(path: str, results: dict) -> None:
  """`path`.json (every number) and `path`.md (the tables)."""
  with open(path + '.json', 'w') as f:
    json.dump(results, f, indent=2)
    f.write('\n')
  out = _header(results)
  if results.get('throughput'):
    out += _throughput_table(results['throughput'])
  if results.get('pairs'):
    out += speed_pairs.pairs_table(results['pairs'], results['machine']['cpu'])
  if results.get('malloc'):
    out += _malloc_table(results['malloc'])
  out += _timing_lines(results)
  out += _profile_tables(results.get('profile', []))
  if results['notes']:
    out += ['', 'Notes:', ''] + [f'- {n}' for n in results['notes']]
  with open(path + '.md', 'w') as f:
    f.write('\n'.join(out) + '\n')
