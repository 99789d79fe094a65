"""JAX against an independent PyTorch port of the same recipe (issue 16).

  KMNIST_JAX_TORCH_PYTHON=V/bin/python \\
  .venv/bin/python -m experiments.parity --configs resnet_preact20_cutout \\
      --epochs 10 --seeds 3

For each config of `--configs`, both sides train on the offline proxy
(`test[:8000]`, evaluated on `test[8000:]`; never benchmark results) with the
recipe's schedule compressed to `--epochs` N: cosine and onecycle run over N
epochs of steps, multistep milestones are scaled by N / the recipe's epochs
(rounded half up, at least 1, strictly increasing). The JAX side is the real
trainer in this process (`kmnist_jax.main.train_and_evaluate`, the same as
`python -m kmnist_jax.main --config configs/X.py:proxy
--config.num_epochs=N --config.seed=S` plus `--config.log_loss_steps=K`);
the PyTorch side is `torch_fit.fit` in the worker of
experiments/torch_worker.py (a subprocess in the torch venv), driven by the
plain dict `torch_recipe` derives from the same config. Seeds and sides
alternate: JAX seed 0, PyTorch seed 0, JAX seed 1, ... (`--first_seed` F
starts at seed F, so more seeds can be added to a row later).

`--merge A_runs.json,B_runs.json --out X` trains nothing: it writes X.md,
.csv, _runs.json and the plots from the runs of earlier invocations (say
seed 0, then seeds 1-2 with `--first_seed 1`), as one run would have.

`--k49_on_kmnist`: a K49 config's recipe (its model, batch, schedule,
augmentation) runs on the KMNIST proxy with 10 classes, since no K49 data
is here: a check that the two implementations learn alike, not a K49 result.

`--sides jax` or `--sides torch` runs one side only, so the two sides of a
long row can run in different sessions and be joined with `--merge`.

`--batch_size B`: every run of both sides trains at batch B instead of the
recipe's (its learning rate unchanged): for a cheap loss-curve check of a
recipe whose own batch makes 300 steps too long on a CPU (DenseNet's 1536).
The .md says so; runs at different batches are not merged.

`--eval_every_epoch`: both sides evaluate after every epoch (the final
accuracy is the same evaluation); the .md then lists each run's accuracy per
epoch and the first epoch at which it leaves chance (at least twice the
chance rate, 2 / classes: 20% on KMNIST).

Writes `--out`.md (mean ± std of the final eval accuracy per side, the
difference in points, seconds per epoch, machine, date, load, command),
`--out`.csv (those numbers), `--out`_runs.json (every run, with the loss of
its first `--steps_curve` steps) and `--out`_<config>.png (the two sides'
loss curves, mean ± std band over seeds).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if __name__ == '__main__' and not __package__:  # A file, not -m.
  print('run it from the repository root as: python -m '
        'experiments.parity [options]', file=sys.stderr)
  sys.exit(2)

# pylint: disable=wrong-import-position
from experiments import parity_report
from experiments import report
from experiments import reproduce
from experiments import torch_client
from experiments.parity_report import epoch_time
from experiments.recipe import compressed_config
from experiments.recipe import PROXY_DATASETS
from experiments.recipe import PROXY_SIZES
from experiments.recipe import torch_recipe
from kmnist_jax.data import datasets as data_lib
from kmnist_jax import main as main_lib
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax import runtime
from kmnist_jax.core.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))


def run_jax(config, workdir: str, eval_every_epoch: bool = False) -> dict:
  """Trains `config` with the real trainer; its accuracy, epochs, losses
  (and, with `eval_every_epoch`, its eval accuracy after each epoch)."""
  t = time.perf_counter()
  _, summary = main_lib.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - t
  records = metrics_lib.read_metrics(os.path.join(workdir, 'metrics.jsonl'))
  steps = sorted((r['step'], r['loss']) for r in records
                 if r['split'] == 'step')
  if [s for s, _ in steps] != list(range(1, len(steps) + 1)):
    raise RuntimeError(f'{workdir}: step losses are not steps 1..K')
  history = [{'epoch': r['epoch'], 'accuracy': r['accuracy']}
             for r in records if r['split'] == 'eval']
  return {'accuracy': reproduce.final_metrics(workdir)['accuracy'],
          'history': history if eval_every_epoch else [],
          'epoch_seconds': summary['epoch_seconds'],
          'epoch_train_loss': [r['loss'] for r in records
                               if r['split'] == 'train'],
          'losses': [loss for _, loss in steps], 'wall': wall,
          'steps_per_epoch': summary['steps_per_epoch']}


def run_torch(worker, recipe: dict, seed: int, steps_curve: int,
              eval_every_epoch: bool = False) -> dict:
  t = time.perf_counter()
  out = worker('fit', recipe=recipe, seed=seed, steps_curve=steps_curve,
               eval_every_epoch=eval_every_epoch)
  if 'error' in out:
    raise RuntimeError(f'PyTorch fit of {recipe["model"]}: {out["error"]}')
  out['wall'] = time.perf_counter() - t
  return out


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--merge', default='',
                 help='comma-separated _runs.json files of earlier runs: '
                 'write --out from them, train nothing')
  p.add_argument('--configs', default='resnet_preact20_cutout',
                 help='comma-separated names of configs/')
  p.add_argument('--epochs', type=int, default=10)
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--first_seed', type=int, default=0,
                 help='seeds first_seed .. first_seed + seeds - 1')
  p.add_argument('--k49_on_kmnist', action='store_true',
                 help='run K49 configs\' recipes on the KMNIST proxy (10 '
                 'classes): no K49 data is here')
  p.add_argument('--eval_every_epoch', action='store_true',
                 help='evaluate both sides after every epoch (epochs to '
                 'leave chance)')
  p.add_argument('--sides', choices=('both', 'jax', 'torch'), default='both',
                 help='run one side only (join the halves with --merge)')
  p.add_argument('--steps_curve', type=int, default=300)
  p.add_argument('--batch_size', type=int, default=0,
                 help="train both sides at this batch, not the recipe's "
                 '(0: the recipe\'s)')
  p.add_argument('--out', default=os.path.join(HERE, 'results', 'parity',
                                              'parity'))
  p.add_argument('--torch_python',
                 default=os.environ.get('KMNIST_JAX_TORCH_PYTHON'))
  p.add_argument('--data_dir', default=os.environ.get(
      'KMNIST_JAX_DATA_DIR', '/work/shared/data/kmnist'))
  p.add_argument('--dataset', default='', choices=('',) + PROXY_DATASETS,
                 help="the proxy's dataset (default: each config's own); "
                 '--data_dir may be a data root with a folder per dataset')
  p.add_argument('--jax_matmul_precision', choices=('default', 'bfloat16'),
                 default='default',
                 help="the JAX side's config.matmul_precision (PyTorch "
                 'stays float32)')
  p.add_argument('--jax_compute_dtype', choices=('float32', 'bfloat16'),
                 default='float32',
                 help="the JAX side's config.compute_dtype: bfloat16 "
                 "activations, as PyTorch's bfloat16 autocast (PyTorch "
                 'stays float32)')
  p.add_argument('--train_examples', type=int, default=PROXY_SIZES[0],
                 help='train on test[:N] (tests and smoke runs)')
  p.add_argument('--eval_examples', type=int, default=PROXY_SIZES[1],
                 help='evaluate on test[8000:8000+M]')
  args = p.parse_args(argv)
  args.configs = [c for c in args.configs.split(',') if c]
  if (args.epochs < 1 or args.seeds < 1 or args.steps_curve < 0
      or args.first_seed < 0 or args.batch_size < 0):
    p.error('--epochs and --seeds must be >= 1, --steps_curve, '
            '--first_seed and --batch_size >= 0')
  if not (0 < args.train_examples <= 8000 and 0 < args.eval_examples <= 2000):
    p.error('--train_examples must be in [1, 8000], --eval_examples in '
            '[1, 2000]')
  args.sizes = (args.train_examples, args.eval_examples)
  return args




def _plan(args) -> dict:
  """Every config of --configs, checked before any run (UserError if not)."""
  return {name: compressed_config(name, args.epochs, args.first_seed,
                                  args.data_dir, args.steps_curve,
                                  args.sizes, args.jax_matmul_precision,
                                  args.eval_every_epoch, args.k49_on_kmnist,
                                  args.batch_size, args.dataset,
                                  args.jax_compute_dtype)
          for name in args.configs}


def _run_seed(args, name: str, seed: int, worker) -> list[dict]:
  """The runs of one seed of config `name`: JAX, then PyTorch."""
  config = compressed_config(name, args.epochs, seed, args.data_dir,
                             args.steps_curve, args.sizes,
                             args.jax_matmul_precision, args.eval_every_epoch,
                             args.k49_on_kmnist, args.batch_size, args.dataset,
                             args.jax_compute_dtype)
  sides = []
  if args.sides != 'torch':
    with tempfile.TemporaryDirectory(prefix='parity_') as workdir:
      sides.append(('jax', run_jax(config, workdir, args.eval_every_epoch)))
  if worker:
    sides.append(('torch', run_torch(
        worker, torch_recipe(config, args.sizes), seed, args.steps_curve,
        args.eval_every_epoch)))
  runs = []
  for side, r in sides:
    r.update(config=name, side=side, seed=seed, epochs=args.epochs)
    runs.append(r)
    print(f'{name} seed {seed} {side:5s}: eval accuracy '
          f'{r["accuracy"]:.4f}, {epoch_time(r["epoch_seconds"]):.1f} '
          's/epoch', flush=True)
  return runs


def _train(args, plan: dict, worker, meta: dict) -> tuple[list, list]:
  """(rows, runs): every seed of every config, both sides alternating."""
  runs, rows = [], []
  for name in args.configs:
    recipe = reproduce.load_config(name, '', 0, {})
    meta.setdefault('recipes', {})[name] = torch_recipe(plan[name],
                                                        args.sizes)
    if args.batch_size:
      meta['notes'].append(
          f'{name}: every run trained at batch {args.batch_size} '
          f'(--batch_size), not the recipe\'s {recipe.batch_size}, at the '
          'recipe\'s learning rate: a check that the two sides learn alike, '
          'not the recipe.')
    for seed in range(args.first_seed, args.first_seed + args.seeds):
      runs += _run_seed(args, name, seed, worker)
    rows.append(parity_report.summarize(
        name, [r for r in runs if r['config'] == name], recipe.num_epochs,
        meta['recipes'][name]['num_classes']))
  return rows, runs


def _closing_notes(args, meta: dict, worker) -> list[str]:
  """What the .md should say about how the runs ran."""
  notes = []
  busy = max(meta['machine']['load_average_start'][0],
             meta['machine']['load_average_end'][0])
  if busy > 1.0:
    notes.append(f'The machine was busy (1-min load average up to '
                 f'{busy:.1f} on {os.cpu_count()} cores): other work slows '
                 'both sides\' s/epoch, PyTorch\'s OpenMP threads most; '
                 'rerun when idle for timings.')
  if not worker:
    notes.append('Only the JAX side ran.')
  elif args.sides == 'torch':
    notes.append('Only the PyTorch side ran.')
  if args.jax_matmul_precision != 'default' and args.sides != 'torch':
    notes.append(f'The JAX side ran with config.matmul_precision='
                 f'{args.jax_matmul_precision!r}: its convolutions on '
                 'bfloat16 operands with float32 sums; PyTorch in float32.')
  if args.jax_compute_dtype != 'float32' and args.sides != 'torch':
    notes.append(f'The JAX side ran with config.compute_dtype='
                 f'{args.jax_compute_dtype!r}: bfloat16 activations, '
                 'float32 parameters and updates; PyTorch in float32.')
  if args.k49_on_kmnist and any(n.startswith('k49_') for n in args.configs):
    notes.append('The K49 configs\' recipes ran on the KMNIST proxy data '
                 '(10 classes; no K49 data offline): a check that the two '
                 'implementations learn alike, not a K49 result.')
  if args.steps_curve and args.sides != 'torch':
    notes.append(f'The JAX side reads the loss of each of its first '
                 f'{args.steps_curve} steps (config.log_loss_steps), so it '
                 'waits for those steps one by one; PyTorch on the CPU '
                 'waits for every step anyway.')
  return notes


def main(argv=None, setup_process: bool = False) -> int:
  """`setup_process`: apply the CLI's process settings (malloc for the
  planned models, compilation cache) first, as a script run does."""
  args = parse_args(argv)
  try:
    if args.merge:
      written = parity_report.merge(
          [p for p in args.merge.split(',') if p], args.out)
      print('wrote ' + ', '.join(written))
      return 0
    plan = _plan(args)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if setup_process:  # As the CLI does, before JAX starts its threads.
    runtime.setup(models=[c.model for c in plan.values()])
  notes: list[str] = []
  torch_data = str(data_lib.resolve_data_dir(args.dataset or 'kmnist',
                                             args.data_dir))
  worker = None
  if args.sides != 'jax':
    worker = torch_client.start_torch(args.torch_python, torch_data, notes,
                                      models=[c.model for c in plan.values()])
  if args.sides == 'torch' and not worker:
    print(f'error: --sides torch needs --torch_python: {notes[-1]}',
          file=sys.stderr)
    return 2
  meta = dict(command=report.command_line(
      'parity', sys.argv[1:] if argv is None else argv),
              date=time.strftime('%Y-%m-%d %H:%M'), seeds=args.seeds,
              first_seed=args.first_seed,
              epochs=args.epochs, steps_curve=args.steps_curve,
              batch_size=args.batch_size, sizes=args.sizes, notes=notes)
  try:
    meta['machine'] = report.machine_info(worker)
    rows, runs = _train(args, plan, worker, meta)
  finally:
    if worker:
      worker.close()
  meta['machine']['load_average_end'] = os.getloadavg()
  notes += _closing_notes(args, meta, worker)
  written = parity_report.write_outputs(args.out, rows, runs, meta)
  print('wrote ' + ', '.join(written))
  return 0


if __name__ == '__main__':
  sys.exit(main(setup_process=True))
