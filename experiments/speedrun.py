"""Time to 0.99 on the offline proxy: configs/speedrun.py, and PyTorch.

  KMNIST_JAX_DATA_DIR=DATA KMNIST_JAX_TORCH_PYTHON=V/bin/python \\
  .venv/bin/python -m experiments.speedrun --seeds 3

The JAX side runs the real command line (`python -m kmnist_jax.main --config
configs/speedrun.py --config.seed=S`, compilation cache off) and reads its
metrics.jsonl as it grows: the time is from the process's start (imports and
compilation included) to the moment the first eval record at or above
`--target` appears; the run is then stopped. `--jax_override k=v` passes
`--config.k=v` to it. The PyTorch side, when `--torch_python` is given,
trains the port of `--torch_config`'s recipe (default the hysts recipe,
configs/resnet_preact20_cutout.py; `speedrun` is the JAX side's own), its
schedule compressed to `--torch_epochs`, in `--torch_mode` (float32, or
bfloat16 autocast with or without channels_last) with
experiments/torch_worker.py's `fit`, evaluates after each epoch from
`--torch_eval_from` on, and reports the time at the end of the first epoch
whose eval accuracy reaches the target, counted from the start of a fresh
worker process for each seed (Python, torch's import and the data load
included, as the JAX side's imports and compilation are). Seeds and sides
alternate. Writes
`--out`.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

if __name__ == '__main__' and not __package__:  # A file, not -m.
  print('run it from the repository root as: python -m '
        'experiments.speedrun [options]', file=sys.stderr)
  sys.exit(2)

# pylint: disable=wrong-import-position
from experiments import recipe
from experiments import report
from experiments import torch_client
from kmnist_jax.cpu import features
from kmnist_jax.data import datasets as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _eval_records(path: str, seen: int):
  """Complete eval records of metrics.jsonl past the first `seen` lines."""
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().split('\n')[:-1]  # The last may be half-written.
  except FileNotFoundError:
    return [], seen
  out = []
  for line in lines[seen:]:
    rec = json.loads(line)
    if rec.get('split') == 'eval':
      out.append(rec)
  return out, len(lines)


def jax_time_to(target: float, seed: int, config: str, workroot: str,
                timeout: float, extra=()) -> dict:
  """Runs the CLI until an eval record reaches `target`; seconds from start."""
  workdir = os.path.join(workroot, f'jax_seed{seed}')
  cmd = [sys.executable, '-m', 'kmnist_jax.main', f'--config={config}',
         f'--workdir={workdir}', f'--config.seed={seed}', *extra]
  env = dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0')
  log = open(os.path.join(workroot, f'jax_seed{seed}.log'), 'w')
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)
  history, seen, hit = [], 0, None
  try:
    while hit is None and time.perf_counter() - t0 < timeout:
      recs, seen = _eval_records(os.path.join(workdir, 'metrics.jsonl'), seen)
      now = time.perf_counter() - t0
      for r in recs:
        history.append(dict(epoch=r['epoch'], accuracy=r['accuracy'],
                            seconds=now))
        if r['accuracy'] >= target and hit is None:
          hit = dict(seconds=now, epoch=r['epoch'], accuracy=r['accuracy'])
      if proc.poll() is not None and not recs:
        break
      time.sleep(0.2)
  finally:
    if proc.poll() is None:
      proc.terminate()
      proc.wait()
    log.close()
  return dict(seed=seed, seconds=hit and hit['seconds'],
              epochs=hit and hit['epoch'], history=history,
              command=shlex.join(cmd))


def summary(runs):
  done = [r['seconds'] for r in runs if r['seconds'] is not None]
  if len(done) < len(runs):
    return None  # A run that never got there: no median.
  return statistics.median(done)


def write_report(path: str, results: dict) -> None:
  lines = [f'# Time to {results["target"]} on the offline proxy '
           '(train test[:8000], eval test[8000:]; not a KMNIST benchmark '
           'result)', '',
           f'Command: `{results["command"]}`', '',
           f'Machine: {results["machine"]}. Date: {results["date"]}. Load '
           f'average at start {results["load_start"]}, at end '
           f'{results["load_end"]}.', '',
           '| side | recipe | seed | time to target | epoch | '
           'eval accuracy per epoch |', '|---|---|---|---|---|---|']
  for side in ('jax', 'torch'):
    for r in results.get(side, []):
      acc = ' '.join(f'{h["accuracy"]:.4f}' for h in r['history'])
      t = 'not reached' if r['seconds'] is None else f'{r["seconds"]:.0f} s'
      lines.append(f'| {side} | {results[side + "_recipe"]} | {r["seed"]} | '
                   f'{t} | {r["epochs"] or "—"} | {acc} |')
  lines.append('')
  for side in ('jax', 'torch'):
    if results.get(side):
      med = summary(results[side])
      lines.append(f'* {side}: median time to {results["target"]} over '
                   f'{len(results[side])} seeds: ' + (
                       'not reached by every seed' if med is None
                       else f'{med:.0f} s ({med / 60:.2f} min)'))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.md', 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with open(path + '.json', 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--target', type=float, default=0.99)
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--config', default='configs/speedrun.py')
  p.add_argument('--timeout', type=float, default=900)
  p.add_argument('--torch_python',
                 default=os.environ.get('KMNIST_JAX_TORCH_PYTHON'))
  p.add_argument('--jax_override', action='append', default=[],
                 help='k=v: --config.k=v for the JAX side (repeatable)')
  p.add_argument('--torch_config', default='resnet_preact20_cutout',
                 help="the PyTorch side's recipe: a config name")
  p.add_argument('--torch_mode', default='f32',
                 choices=('f32', 'bf16', 'bf16_cl'),
                 help="float32, or PyTorch's bfloat16 CPU autocast, with "
                 'channels_last for bf16_cl')
  p.add_argument('--torch_eval_from', type=int, default=1,
                 help='the PyTorch side evaluates from this epoch on')
  p.add_argument('--torch_epochs', type=int, default=30)
  p.add_argument('--torch_seeds', type=int, default=1)
  p.add_argument('--data_dir', default=os.environ.get(
      'KMNIST_JAX_DATA_DIR', os.path.join(ROOT, '..', 'shared', 'data',
                                          'kmnist')))
  p.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results',
                                               'speedrun', 'speedrun'))
  args = p.parse_args(argv)
  results = dict(command=report.command_line('speedrun', sys.argv[1:]),
                 target=args.target,
                 date=time.strftime('%Y-%m-%d %H:%M'),
                 load_start='/'.join(f'{x:.1f}' for x in os.getloadavg()),
                 machine=f'{features.describe()}, {os.cpu_count()} cores, Python '
                 f'{platform.python_version()}',
                 jax_recipe=' '.join([args.config] + [
                     f'--config.{o}' for o in args.jax_override]),
                 jax=[], torch=[],
                 torch_recipe=(f'{args.torch_config}, its schedule over '
                               f'{args.torch_epochs} epochs, evaluated from '
                               f'epoch {args.torch_eval_from}, '
                               f'{args.torch_mode}'))
  torch_seeds = args.torch_seeds if args.torch_python else 0
  with tempfile.TemporaryDirectory() as root:
    for seed in range(max(args.seeds, torch_seeds)):
      if seed < args.seeds:
        r = jax_time_to(args.target, seed, args.config, root, args.timeout,
                        [f'--config.{o}' for o in args.jax_override])
        results['jax'].append(r)
        print(f'jax seed {seed}: {r["seconds"]} s (epoch {r["epochs"]})',
              flush=True)
      if seed < torch_seeds:
        r = torch_time_to(args, seed)
        results['torch'].append(r)
        print(f'torch seed {seed}: {r["seconds"]} s (epoch {r["epochs"]})',
              flush=True)
  results['load_end'] = '/'.join(f'{x:.1f}' for x in os.getloadavg())
  write_report(args.out, results)
  print(open(args.out + '.md', encoding='utf-8').read())


def torch_time_to(args, seed: int) -> dict:
  """The PyTorch port of `--torch_config`'s recipe, evaluated after each
  epoch from `--torch_eval_from` on, until target, in a fresh worker
  process: its times count from that process's start (Python, torch's
  import and the data load included), as the JAX side's do."""
  config = recipe.compressed_config(args.torch_config, args.torch_epochs,
                                    seed, args.data_dir)
  t0 = time.time()
  # The worker reads one dataset's flat folder; --data_dir may be a root.
  torch = torch_client.TorchWorker(
      args.torch_python, str(data_lib.resolve_data_dir('kmnist', args.data_dir)),
      torch_client.torch_env('same'))
  try:
    out = torch('fit', recipe=recipe.torch_recipe(config), seed=seed,
                steps_curve=0, target=args.target, mode=args.torch_mode,
                eval_from_epoch=args.torch_eval_from)
  finally:
    torch.close()
  if 'error' in out:
    raise RuntimeError(f'torch worker: {out["error"]}')
  start = out['started_at'] - t0  # Process start to the first step.
  history = [dict(h, seconds=h['seconds'] + start) for h in out['history']]
  hit = next((h for h in history if h['accuracy'] >= args.target), None)
  return dict(seed=seed, seconds=hit and hit['seconds'],
              epochs=hit and hit['epoch'], history=history,
              startup_seconds=start)


if __name__ == '__main__':
  main()
