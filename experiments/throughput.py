"""kmnist_jax against PyTorch on this machine, side by side (issue 6).

  KMNIST_JAX_TORCH_PYTHON=V/bin/python \\
  .venv/bin/python -m experiments.throughput --data_dir DATA

Sections (`--sections`, comma-separated; default all):

* `train`, `eval`: img/s of one train step (batch 128 and 400) and of the eval
  forward pass (batch 1000) for each model, JAX and the PyTorch port
  (experiments/torch_worker.py, a subprocess in its own venv). The two sides
  alternate block by block, `--repeats` times, so machine noise hits both;
  the tables give medians and JAX/PyTorch ratios, and the fraction of the
  machine's 2-core f32 matmul peak each side reaches.
* `pairs`: like with like (experiments/speed_pairs.py): train img/s at each
  batch of JAX f32 and bf16 (matmul_precision 'bfloat16') against PyTorch
  f32, bf16 autocast and bf16 autocast + channels_last, with the ratios
  f32 / f32 and fastest / fastest. Run alone (`--sections pairs`), its
  `--out` defaults to experiments/results/speed_pairs/<CPU kind>, one file
  per machine kind.
* `malloc`: ms and minor page faults per train step (keras_cnn at batch 128,
  seed_cnn at 400), each side with the C library's malloc defaults ("stock")
  and with `kmnist_jax.cpu.malloc.keep_freed_memory` ("kept"), in fresh
  processes. Every other section runs both sides "kept" (the JAX default;
  `--torch_malloc stock` gives the PyTorch worker its defaults instead).
* `overhead`: epoch wall time of the real train loop (`train_and_evaluate`)
  against steps x the pure compiled step time.
* `compile`: first train step (trace + compile + run) in fresh processes with
  a fresh persistent compilation cache: cold, then warm.
* `predict`: `--mode predict` wall time in fresh processes, cold and warm cache.
* `tta`: time to 0.93 eval accuracy on the offline proxy with the keras_cnn
  recipe, compile included, JAX (the real CLI, compilation cache off)
  against the PyTorch port; `--tta_repeats` times, the two sides
  alternating, with each repeat and the medians in the report.
* `profile`: a `jax.profiler` trace of 10 train steps of keras_cnn (batch
  128), seed_cnn (batch 400) and resnet_preact20 (batch 128), those of
  `--models`, at `--jax_matmul_precision`; the XLA ops that take the most
  time per step, with their shapes and what they compute, and the time of
  every op summed by kind (oneDNN custom calls, XLA fusions, other). The traces stay in
  `--out`_traces/ (open them in Perfetto; git ignores them).

Writes `--out`.md and `--out`.json (machine, versions, command, results).
The torch side is skipped with a note when `--torch_python` is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

if __name__ == '__main__' and not __package__:  # A file, not -m.
  print('run it from the repository root as: python -m '
        'experiments.throughput [options]', file=sys.stderr)
  sys.exit(2)

# pylint: disable=wrong-import-position
from experiments import bench as bench_lib
from experiments import report
from experiments import speed_pairs
from experiments import throughput_report
from experiments import torch_client
from experiments import xla_profile
from experiments.report import fmt
from experiments.throughput_report import TTA_TARGET
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.models import factory as models_lib
from kmnist_jax import runtime
from kmnist_jax.methods import harness
from kmnist_jax.cpu import malloc as cpu_malloc

ROOT = bench_lib.ROOT

SECTIONS = ('train', 'eval', 'pairs', 'malloc', 'overhead', 'compile', 'predict',
            'tta', 'profile')
MODELS = ('seed_cnn', 'keras_cnn', 'resnet_preact20', 'preact_resnet18',
          'shake_shake26_2x96d')
# Steps per timed block: about one second of work per block on 2 cores (at
# least one step). The ResNets' at batch 128 were 5 and 2 until 2026-12-06;
# their blocks of 0.3 s gave medians 8% apart from one run to the next on
# the Intel Xeon with AMX.
STEPS = {('seed_cnn', 128): 40, ('seed_cnn', 400): 15,
         ('keras_cnn', 128): 12, ('keras_cnn', 400): 4,
         ('resnet_preact20', 128): 20, ('resnet_preact20', 400): 2,
         ('preact_resnet18', 128): 4, ('preact_resnet18', 400): 1,
         ('shake_shake26_2x96d', 128): 1, ('shake_shake26_2x96d', 400): 1}
EVAL_STEPS = {'seed_cnn': 20, 'keras_cnn': 4, 'resnet_preact20': 2,
              'preact_resnet18': 1, 'shake_shake26_2x96d': 1}


def run_throughput(args, torch, data, sections, results, notes):
  peak = bench_lib.matmul_peak()
  results['peak_gflops'] = peak
  print(f'2-core f32 matmul peak: {peak:.0f} GFLOP/s', flush=True)
  rows = results.setdefault('throughput', [])
  for name in args.models:
    if name not in models_lib.MODELS:
      notes.append(f'{name}: not in kmnist_jax.models.factory.MODELS; skipped.')
      continue
    bench = bench_lib.JaxBench(name, data, args.jax_matmul_precision)
    flops = bench.forward_flops()
    peak = results['peak_gflops'] = max(peak, bench_lib.matmul_peak())
    cases = []
    if 'train' in sections:
      cases += [('train', b) for b in args.batches]
    if 'eval' in sections:
      cases.append(('eval', bench_lib.EVAL_BATCH))
    for kind, batch in cases:
      steps = (STEPS.get((name, batch), 4) if kind == 'train'
               else EVAL_STEPS.get(name, 2))
      if kind == 'train':
        bench.train(batch, 1)  # Compiles.
      else:
        bench.eval(1)
      if torch:
        torch(kind, model=name, batch=batch, steps=1)
      jt, tt = [], []
      for _ in range(args.repeats):  # Interleaved: JAX, torch, JAX, ...
        jt.append(bench.train(batch, steps) if kind == 'train'
                  else bench.eval(steps))
        if torch:
          tt.append(torch(kind, model=name, batch=batch,
                          steps=steps)['seconds'])
      j_rate, t_rate = (bench_lib.rate(batch * steps, jt),
                        bench_lib.rate(batch * steps, tt))
      f = flops * (3 if kind == 'train' else 1) if flops else None
      row = dict(model=name, kind=kind, batch=batch, steps=steps,
                 jax_seconds=jt, torch_seconds=tt, jax_img_s=j_rate,
                 torch_img_s=t_rate, ratio=bench_lib.ratio(j_rate, t_rate),
                 flops_per_image=f)
      rows.append(row)
      print(f'{name:16s} {kind:5s} b{batch:<4d} jax {fmt(j_rate):>6s} img/s  '
            f'torch {fmt(t_rate):>6s} img/s  ratio {fmt(row["ratio"], ".2f")}',
            flush=True)


# Fresh-process snippets (str.format templates) start with this: kmnist_jax's
# process settings first, as the CLI applies them, then this module as `tp`.
_PRELUDE = r'''
import json, sys, time
t0 = time.perf_counter()
from kmnist_jax import runtime
runtime.setup()
sys.argv = ['x']
from experiments import bench as tp
'''
_STEP_BLOCKS = _PRELUDE + r'''
import resource
bench = tp.JaxBench({name!r}, tp.load_data({data_dir!r}))
bench.train({batch}, 1)
seconds, faults = [], []
for _ in range({repeats}):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  seconds.append(bench.train({batch}, {steps}))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(seconds=seconds, minor_faults=faults)))
'''
MALLOC_RUNS = (('keras_cnn', 128), ('seed_cnn', 400))


def _per_step(seconds, faults, steps) -> dict:
  return dict(ms_per_step=1e3 * bench_lib.median(seconds) / steps,
              faults_per_step=bench_lib.median(faults) / steps)


def run_malloc(args, results, notes):
  """Train steps with malloc's defaults and with kmnist_jax's, both sides."""
  rows = results.setdefault('malloc', [])
  envs = {key: dict(os.environ, **{cpu_malloc.ENV: on})
          for key, on in (('stock', '0'), ('kept', '1'))}
  workers = {}
  if args.torch_python and os.path.exists(args.torch_python):
    workers = {key: torch_client.TorchWorker(args.torch_python,
                                             args.data_dir, env)
               for key, env in envs.items()}
  else:
    notes.append('malloc: PyTorch side not measured.')
  try:
    for name, batch in MALLOC_RUNS:
      steps = STEPS[(name, batch)]
      row = dict(model=name, batch=batch, steps=steps)
      for key, env in envs.items():
        j = _python_json(_STEP_BLOCKS.format(
            root=ROOT, data_dir=args.data_dir, name=name, batch=batch,
            steps=steps, repeats=args.repeats), env)
        row[f'jax_{key}'] = _per_step(j['seconds'], j['minor_faults'], steps)
        if workers:
          worker = workers[key]
          worker('train', model=name, batch=batch, steps=1)
          ts = [worker('train', model=name, batch=batch, steps=steps)
                for _ in range(args.repeats)]
          row[f'torch_{key}'] = _per_step([t['seconds'] for t in ts],
                                          [t['minor_faults'] for t in ts],
                                          steps)
      rows.append(row)
      print(f'malloc {name} b{batch}: ' + ', '.join(
          f'{k} {v["ms_per_step"]:.1f} ms ({v["faults_per_step"]:.0f} faults)'
          for k, v in row.items() if isinstance(v, dict)), flush=True)
  finally:
    for worker in workers.values():
      worker.close()


def run_overhead(args, data, results):
  """Real train loop epoch time vs steps x pure step time (keras_cnn)."""
  name, epochs = 'keras_cnn', args.overhead_epochs
  bench = bench_lib.JaxBench(name, data)
  spe = bench.n // bench.config.batch_size
  pure = [bench.train(bench.config.batch_size, 1)]  # Compiles.
  pure = [bench.train(bench.config.batch_size, spe) / spe]
  config = bench_lib.model_config(name)
  config.num_epochs, config.write_plots = epochs, False
  config.data_dir = args.data_dir
  with tempfile.TemporaryDirectory() as workdir:
    _, summary = harness.fit(config, workdir)
  pure.append(bench.train(bench.config.batch_size, spe) / spe)
  # The first epoch compiles.
  epoch = bench_lib.median(summary['epoch_seconds'][1:])
  step = bench_lib.median(pure)
  results['overhead'] = dict(
      model=name, batch=bench.config.batch_size, steps_per_epoch=spe,
      epoch_seconds=summary['epoch_seconds'], pure_step_seconds=pure,
      overhead=epoch / (spe * step) - 1)
  print(f'epoch host overhead: {results["overhead"]["overhead"]:+.1%} '
        f'(epoch {epoch:.2f} s vs {spe} x {step * 1e3:.1f} ms)', flush=True)


_FIRST_STEP = _PRELUDE + r'''
import jax, numpy as np
from kmnist_jax.train import batches as input_pipeline
from kmnist_jax.train import optim
from kmnist_jax.train import steps
from kmnist_jax.train import state as train_state
from kmnist_jax.core import distributed
config = tp.model_config({name!r})
tx = optim.create_optimizer(config, 62)
graphdef, state = train_state.init_state(config, 10, tx)
mesh = distributed.make_mesh()
step = steps.make_train_step(graphdef, tx, config, 10, config.batch_size, mesh)
images = np.zeros((8000, 28, 28), np.uint8)
labels = np.zeros((8000,), np.int32)
perm = input_pipeline.epoch_permutation(0, 0, 8000)
jax.block_until_ready(perm)
t = time.perf_counter()
jax.block_until_ready(step(state, images, labels, perm, 0))
print(json.dumps({{'first_step': time.perf_counter() - t,
                  'process': time.perf_counter() - t0}}))
'''


def _python_json(code: str, env: dict) -> dict:
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True, cwd=ROOT)
  return json.loads(out.stdout.strip().splitlines()[-1])


def run_compile(args, results):
  rows = results.setdefault('compile', [])
  for name in ('keras_cnn',):
    with tempfile.TemporaryDirectory() as cache:
      env = dict(os.environ, KMNIST_JAX_COMPILATION_CACHE=cache)
      code = _FIRST_STEP.format(root=ROOT, name=name)
      cold = _python_json(code, env)
      warm = _python_json(code, env)
    off = _python_json(code, dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0'))
    rows.append(dict(model=name, cold=cold, warm=warm, off=off,
                     speedup=cold['first_step'] / warm['first_step']))
    print(f'{name} first step: cache off {off["first_step"]:.2f} s, cold '
          f'{cold["first_step"]:.2f} s, warm {warm["first_step"]:.2f} s '
          f'({rows[-1]["speedup"]:.1f}x)', flush=True)


def _cli(argv: list[str], env: dict) -> float:
  t = time.perf_counter()
  subprocess.run([sys.executable, '-m', 'kmnist_jax.main'] + argv, env=env,
                 check=True, capture_output=True, cwd=ROOT)
  return time.perf_counter() - t


def run_predict(args, results, notes):
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ, KMNIST_JAX_COMPILATION_CACHE=os.path.join(tmp, 'c'),
               KMNIST_JAX_DATA_DIR=args.data_dir)
    workdir = os.path.join(tmp, 'w')
    _cli(['--config', 'configs/keras_cnn.py:smoke', '--workdir', workdir,
          '--config.write_plots=false'], env)
    images, _ = data_lib.load('kmnist', 'test[:16]', args.data_dir)
    inputs = os.path.join(tmp, 'x.npy')
    np.save(inputs, images)
    cmd = ['--mode', 'predict', '--workdir', workdir, '--predict_input',
           inputs]
    cold, warm = _cli(cmd, env), _cli(cmd, env)
  results['predict'] = dict(cold_seconds=cold, warm_seconds=warm, images=16)
  print(f'--mode predict (16 images): cold {cold:.2f} s, warm {warm:.2f} s',
        flush=True)


def run_tta(args, torch, results, notes):
  """keras_cnn recipe on the proxy to 0.93 eval accuracy, compile included."""
  rows = results.setdefault('tta', [])
  for _ in range(args.tta_repeats):
    with tempfile.TemporaryDirectory() as tmp:
      env = dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0',
                 KMNIST_JAX_DATA_DIR=args.data_dir)
      t = time.perf_counter()
      _cli(['--config', 'configs/keras_cnn.py:proxy', '--workdir', tmp,
            f'--config.num_epochs={args.tta_epochs}',
            '--config.write_plots=false'], env)
      total = time.perf_counter() - t
      with open(os.path.join(tmp, 'metrics.jsonl')) as f:
        evals = [r for r in map(json.loads, f) if r['split'] == 'eval']
    hit = next((r for r in evals if r['accuracy'] >= TTA_TARGET), None)
    row = dict(jax=dict(seconds=hit['wall_time'] if hit else None,
                        epochs=hit['epoch'] if hit else None,
                        process_seconds=total,
                        history=[(r['epoch'], r['accuracy'], r['wall_time'])
                                 for r in evals]))
    if torch:
      row['torch'] = torch('tta', target=TTA_TARGET,
                           max_epochs=args.tta_epochs)
    rows.append(row)
    print(f'time to {TTA_TARGET}: jax {fmt(row["jax"]["seconds"], ".1f")} s '
          f'(epoch {row["jax"]["epochs"]}), torch '
          f'{fmt(row.get("torch", {}).get("seconds"), ".1f")} s (epoch '
          f'{row.get("torch", {}).get("epochs")})', flush=True)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--data_dir', default=os.environ.get(
      'KMNIST_JAX_DATA_DIR', '/work/shared/data/kmnist'))
  p.add_argument('--torch_python',
                 default=os.environ.get('KMNIST_JAX_TORCH_PYTHON'))
  p.add_argument('--torch_malloc', choices=('same', 'stock'), default='same',
                 help='the PyTorch worker\'s malloc: the same settings as '
                 'the JAX side (default) or the C library\'s defaults')
  p.add_argument('--jax_matmul_precision', choices=('default', 'bfloat16'),
                 default='default',
                 help="the JAX side's config.matmul_precision in the train "
                 'and eval sections (PyTorch stays float32)')
  p.add_argument('--jax_compute_dtype', choices=('float32', 'bfloat16'),
                 default='float32',
                 help="the JAX side's config.compute_dtype in the profile "
                 'section (bfloat16: bfloat16 activations)')
  p.add_argument('--sections', default=','.join(SECTIONS))
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--batches', default='128,400')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--overhead_epochs', type=int, default=3)
  p.add_argument('--tta_epochs', type=int, default=8)
  p.add_argument('--tta_repeats', type=int, default=3)
  p.add_argument('--out', default='',
                 help='default: experiments/results/throughput/throughput; '
                 'with --sections pairs alone, experiments/results/'
                 'speed_pairs/<CPU kind>')
  args = p.parse_args(argv)
  args.sections = [s for s in args.sections.split(',') if s]
  if not args.out:
    args.out = os.path.join(ROOT, 'experiments', 'results', *(
        ('speed_pairs', speed_pairs.machine_tag()) if args.sections == ['pairs']
        else ('throughput', 'throughput')))
  bad = set(args.sections) - set(SECTIONS)
  if bad:
    p.error(f'unknown sections {sorted(bad)}; valid: {", ".join(SECTIONS)}')
  args.models = [m for m in args.models.split(',') if m]
  args.batches = [int(b) for b in args.batches.split(',') if b]
  return args


def main(argv=None):
  args = parse_args(argv)
  runtime.setup(models=args.models)
  notes: list[str] = []
  results = dict(command=report.command_line('throughput', sys.argv[1:]),
                 date=time.strftime('%Y-%m-%d %H:%M'), repeats=args.repeats,
                 sections=args.sections, notes=notes,
                 jax_matmul_precision=args.jax_matmul_precision)
  needs_torch = {'train', 'eval', 'pairs', 'tta'} & set(args.sections)
  torch = torch_client.start_torch(args.torch_python, args.data_dir, notes,
                                   args.torch_malloc,
                                   args.models) if needs_torch else None
  try:
    results['machine'] = report.machine_info(torch)
    if results['machine']['load_average_start'][0] > 1.0:
      notes.append('The machine was busy (load average above 1 at start): '
                   'PyTorch\'s OpenMP threads lose far more to other work '
                   'than XLA\'s, so the ratios favour JAX; rerun when idle.')
    data = bench_lib.load_data(args.data_dir)
    if {'train', 'eval'} & set(args.sections):
      run_throughput(args, torch, data, args.sections, results, notes)
    if 'pairs' in args.sections:
      speed_pairs.run_pairs(args, torch, data,
                            lambda m, b: STEPS.get((m, b), 4), results)
    if 'malloc' in args.sections:
      run_malloc(args, results, notes)
    if 'overhead' in args.sections:
      run_overhead(args, data, results)
    if 'compile' in args.sections:
      run_compile(args, results)
    if 'predict' in args.sections:
      run_predict(args, results, notes)
    if 'tta' in args.sections:
      run_tta(args, torch, results, notes)
    if 'profile' in args.sections:
      xla_profile.run_profile(args, data, results)
  finally:
    if torch:
      torch.close()
  results['machine']['load_average_end'] = os.getloadavg()
  throughput_report.add_peak_fractions(results)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  throughput_report.write_report(args.out, results)
  print(f'wrote {args.out}.md and {args.out}.json')


if __name__ == '__main__':
  main()
