"""JAX against an independent PyTorch port of the same recipe (issue 16).

  KMNIST_JAX_TORCH_PYTHON=/work/torchvenv/bin/python \\
  .venv/bin/python experiments/parity.py --configs resnet_preact20_cutout \\
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
experiments/torch_models.py (a subprocess in the torch venv), driven by the
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
import csv
import inspect
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, 'experiments')
for _p in (ROOT, HERE):
  if _p not in sys.path:
    sys.path.insert(0, _p)

import reproduce  # pylint: disable=g-import-not-at-top,wrong-import-position
import schedules  # pylint: disable=g-import-not-at-top,wrong-import-position
import throughput  # pylint: disable=g-import-not-at-top,wrong-import-position
from kmnist_jax.core.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position

# The models experiments/torch_models.py ports (torch is not importable here).
TORCH_MODELS = ('seed_cnn', 'keras_cnn', 'preact_resnet18', 'resnet_preact20',
                'shake_shake26_2x96d', 'densenet_bc100_k12', 'densenet100_k12')
TORCH_OPTIMIZERS = ('sgd', 'adam', 'adamw', 'adadelta')
RECIPE_FIELDS = (
    'model', 'num_epochs', 'batch_size', 'eval_batch_size', 'optimizer',
    'learning_rate', 'momentum', 'nesterov', 'weight_decay', 'beta1', 'beta2',
    'eps', 'rho', 'grad_clip_norm', 'lr_schedule', 'lr_decay',
    'augment_translate', 'cutout_size', 'cutout_fill', 'mixup_alpha',
    'manifold_mixup_alpha', 'label_smoothing', 'input_mean', 'input_std',
    'tta_shift')
SEPARATION_RUN = 20  # Consecutive steps for the loss bands to count apart.
PROXY_SIZES = (8000, 2000)  # test[:8000], test[8000:].
# The datasets whose test set the PyTorch side reads (torch_models.load_test).
PROXY_DATASETS = ('kmnist', 'mnist', 'fashion_mnist')


def onecycle_params() -> dict:
  """The optax.cosine_onecycle_schedule defaults kmnist_jax.train.optim runs."""
  import optax  # pylint: disable=g-import-not-at-top
  sig = inspect.signature(optax.cosine_onecycle_schedule).parameters
  return {k: sig[k].default for k in ('pct_start', 'div_factor',
                                      'final_div_factor')}


def scale_milestones(text: str, recipe_epochs: int, epochs: int) -> str:
  """'100,150' of 200 epochs -> the same fractions of `epochs`."""
  out = []
  for m in (int(e) for e in str(text).split(',') if e.strip()):
    scaled = math.floor(m * epochs / recipe_epochs + 0.5)
    out.append(max(scaled, out[-1] + 1 if out else 1))
  return ','.join(map(str, out))


def compressed_config(name: str, epochs: int, seed: int, data_dir: str = '',
                      steps_curve: int = 0,
                      sizes: tuple[int, int] = PROXY_SIZES,
                      matmul_precision: str = 'default',
                      eval_every_epoch: bool = False,
                      k49_on_kmnist: bool = False, batch_size: int = 0,
                      dataset: str = ''):
  """Config `name` (`:proxy`) with its schedule compressed to `epochs`, its
  JAX side at `matmul_precision`; a K49 recipe on the KMNIST proxy with
  `k49_on_kmnist`; `batch_size` in place of the recipe's when not 0; on
  `dataset`'s proxy (`configs/<name>.py:<dataset>,proxy`) when given."""
  c = reproduce.load_config(name, 'proxy', seed, {}, data_dir, dataset)
  if batch_size:
    c.batch_size = batch_size  # Both sides: torch_recipe reads it from c.
  if k49_on_kmnist and c.dataset == 'k49':
    c.dataset = 'kmnist'  # The recipe; KMNIST's proxy data and 10 classes.
  check_portable(name, c)
  recipe_epochs = c.num_epochs
  c.num_epochs = epochs
  c.warmup_epochs = c.warmup_epochs * epochs / recipe_epochs
  if c.lr_schedule == 'multistep':
    c.lr_milestones = scale_milestones(c.lr_milestones, recipe_epochs, epochs)
  c.log_loss_steps, c.write_plots = steps_curve, False
  # Only the final accuracy, as PyTorch's, unless every epoch's is asked.
  c.eval_from_epoch = 1 if eval_every_epoch else epochs
  c.matmul_precision = matmul_precision
  if tuple(sizes) != PROXY_SIZES:
    n, m = sizes
    c.train_split, c.eval_split = f'test[:{n}]', f'test[8000:{8000 + m}]'
  return c


def check_portable(name: str, c) -> None:
  """One line for what the PyTorch side cannot run."""
  problems = []
  if c.model not in TORCH_MODELS:
    problems.append(f'model {c.model!r} has no PyTorch port '
                    f'({", ".join(TORCH_MODELS)})')
  if c.dataset not in PROXY_DATASETS:
    problems.append(f'dataset {c.dataset!r}: the proxy is a 10-class test '
                    f'set ({", ".join(PROXY_DATASETS)}; --k49_on_kmnist runs '
                    'a K49 recipe on KMNIST\'s)')
  if c.optimizer not in TORCH_OPTIMIZERS:
    problems.append(f'optimizer {c.optimizer!r}')
  if c.lr_schedule not in schedules.SCHEDULES:
    problems.append(f'lr_schedule {c.lr_schedule!r} (expected one of '
                    f'{", ".join(schedules.SCHEDULES)})')
  if c.compute_dtype != 'float32':
    problems.append(f'compute_dtype {c.compute_dtype!r}')
  if problems:
    raise UserError(f'--configs {name}: ' + '; '.join(problems))


def torch_recipe(c, sizes: tuple[int, int] = PROXY_SIZES) -> dict:
  """The plain dict the PyTorch side trains from (see torch_fit.py)."""
  from kmnist_jax.data import datasets as data_lib  # pylint: disable=g-import-not-at-top
  from kmnist_jax.train import optim  # pylint: disable=g-import-not-at-top
  from kmnist_jax.models import resnets  # pylint: disable=g-import-not-at-top
  r = {k: c[k] for k in RECIPE_FIELDS}
  r['lr_milestones'] = (optim.parse_milestones(c)
                        if c.lr_schedule == 'multistep' else [])
  r['onecycle'] = onecycle_params()
  r['mixup_points'] = resnets.MIXUP_POINTS.get(c.model, 0)
  r['num_classes'] = data_lib.get_info(c.dataset).num_classes
  r['train_examples'], r['eval_examples'] = map(int, sizes)
  return r


def run_jax(config, workdir: str, eval_every_epoch: bool = False) -> dict:
  """Trains `config` with the real trainer; its accuracy, epochs, losses
  (and, with `eval_every_epoch`, its eval accuracy after each epoch)."""
  from kmnist_jax import main as main_lib  # pylint: disable=g-import-not-at-top
  from kmnist_jax.core import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
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


def epoch_time(seconds: list[float]) -> float:
  """Median seconds of a run's epochs, the first (JAX: with its compile)
  left out when there are others."""
  return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def mean_std(values) -> tuple[float, float]:
  """Mean and sample std (0 for one value); nan, nan for none."""
  v = np.asarray(values, float)
  if not len(v):
    return float('nan'), float('nan')
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def curve_band(curves: list[list[float]]):
  """Per-step mean and std over runs, cut to the shortest curve."""
  k = min((len(c) for c in curves), default=0)
  if not k:
    return np.zeros(0), np.zeros(0)
  a = np.asarray([c[:k] for c in curves], float)
  std = a.std(0, ddof=1) if len(a) > 1 else np.zeros(k)
  return a.mean(0), std


def separation_step(mean_a, std_a, mean_b, std_b,
                    run: int = SEPARATION_RUN) -> int | None:
  """The first step (1-based) of the first `run` consecutive steps where
  the means differ by more than the sum of the stds; None if never."""
  apart = np.abs(np.asarray(mean_a) - np.asarray(mean_b)) > (
      np.asarray(std_a) + np.asarray(std_b))
  count = 0
  for i, flag in enumerate(apart):
    count = count + 1 if flag else 0
    if count == run:
      return i - run + 2
  return None


def chance_epoch(history: list[dict], num_classes: int):
  """The first epoch whose eval accuracy is at least 2 / num_classes
  (twice chance), None if none is; None without a per-epoch history."""
  for h in history:
    if h['accuracy'] >= 2.0 / num_classes:
      return h['epoch']
  return None


def summarize(name: str, runs: list[dict], recipe_epochs: int,
              num_classes: int = 10) -> dict:
  """One table row from the runs of config `name` (both sides)."""
  row = {'config': name, 'epochs': runs[0]['epochs'],
         'recipe_epochs': recipe_epochs, 'num_classes': num_classes,
         'seeds': len({r['seed'] for r in runs})}
  bands = {}
  for side in ('jax', 'torch'):
    mine = [r for r in runs if r['side'] == side]
    row[f'{side}_mean'], row[f'{side}_std'] = mean_std(
        [r['accuracy'] for r in mine])
    row[f'{side}_n'] = len(mine)
    row[f'{side}_chance_epochs'] = ';'.join(
        str(chance_epoch(r['history'], num_classes) or f'>{r["epochs"]}')
        for r in mine if r.get('history'))
    row[f'{side}_s_per_epoch'] = (statistics.median(
        epoch_time(r['epoch_seconds']) for r in mine) if mine else math.nan)
    bands[side] = curve_band([r['losses'] for r in mine])
  row['diff_points'] = 100 * (row['jax_mean'] - row['torch_mean'])
  n_j, n_t = row['jax_n'], row['torch_n']
  row['diff_se_points'] = (100 * math.sqrt(
      row['jax_std'] ** 2 / n_j + row['torch_std'] ** 2 / n_t)
                           if min(n_j, n_t) > 1 else math.nan)
  k = min(len(bands['jax'][0]), len(bands['torch'][0]))
  row['curve_steps'] = k
  row['separation_step'] = separation_step(
      bands['jax'][0][:k], bands['jax'][1][:k], bands['torch'][0][:k],
      bands['torch'][1][:k]) if k and min(n_j, n_t) > 1 else None
  row['bands'] = bands
  return row


def _pct(mean, std, n) -> str:
  if not n:
    return 'not run'
  return f'{100 * mean:.2f} ± {100 * std:.2f}%' if n > 1 else (
      f'{100 * mean:.2f}% (n=1)')


def separation_text(row: dict) -> str:
  if row['jax_n'] < 2 or row['torch_n'] < 2:
    return 'n/a (needs 2+ seeds a side)'
  if row['separation_step'] is None:
    return f'never (first {row["curve_steps"]} steps)'
  return f'step {row["separation_step"]}'


def plot_curves(path: str, row: dict) -> None:
  """The two sides' losses of the first steps: mean line, ± std band."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(7, 3.6))
  ax = fig.subplots()
  for side, label, color in (('jax', 'JAX', 'tab:blue'),
                             ('torch', 'PyTorch', 'tab:orange')):
    mean, std = row['bands'][side]
    if not len(mean):
      continue
    steps = np.arange(1, len(mean) + 1)
    ax.plot(steps, mean, color=color,
            label=f'{label} (n={row[f"{side}_n"]})')
    ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.25)
  if row['separation_step']:
    ax.axvline(row['separation_step'], color='k', ls='--', lw=1,
               label=f'bands apart from step {row["separation_step"]}')
  ax.set_xlabel('train step')
  ax.set_ylabel('training loss')
  ax.set_title(f'{row["config"]}: {row["epochs"]} epochs, mean ± std over '
               'seeds')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


CSV_COLUMNS = ('config', 'epochs', 'recipe_epochs', 'seeds', 'jax_mean',
               'jax_std', 'jax_n', 'torch_mean', 'torch_std', 'torch_n',
               'diff_points', 'diff_se_points', 'jax_s_per_epoch',
               'torch_s_per_epoch', 'curve_steps', 'separation_step',
               'jax_chance_epochs', 'torch_chance_epochs')


def write_outputs(out: str, rows: list[dict], runs: list[dict],
                  meta: dict) -> list[str]:
  """--out.md, .csv, _runs.json and one _<config>.png per row."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  written = []
  for row in rows:
    png = f'{out}_{row["config"]}.png'
    plot_curves(png, row)
    row['png'] = os.path.basename(png)
    written.append(png)
  with open(out + '.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(CSV_COLUMNS)
    for row in rows:
      w.writerow(['' if row[c] is None else row[c] for c in CSV_COLUMNS])
  with open(out + '_runs.json', 'w') as f:
    json.dump({'meta': meta, 'runs': runs}, f, indent=1)
    f.write('\n')
  with open(out + '.md', 'w') as f:
    f.write(markdown(rows, meta, runs))
  return [out + '.md', out + '.csv', out + '_runs.json'] + written


def epoch_lines(rows: list[dict], runs: list[dict]) -> list[str]:
  """With --eval_every_epoch: each run's eval accuracy after each epoch and
  the first epoch at or above twice chance."""
  out = []
  for row in rows:
    mine = [r for r in runs if r['config'] == row['config'] and
            r.get('history')]
    if not mine:
      continue
    chance = 2.0 / row['num_classes']
    out += ['', f'{row["config"]}: eval accuracy after each epoch; "leaves '
            f'chance": the first epoch at or above {100 * chance:.0f}% '
            '(twice chance).', '']
    for r in mine:
      first = chance_epoch(r['history'], row['num_classes'])
      accs = ', '.join(f'{100 * h["accuracy"]:.2f}' for h in r['history'])
      out.append(f'- {"JAX" if r["side"] == "jax" else "PyTorch"} seed '
                 f'{r["seed"]}: {accs}% -> leaves chance '
                 + (f'at epoch {first}' if first else
                    f'not within {r["epochs"]} epochs'))
  return out


def markdown(rows: list[dict], meta: dict, runs: list[dict] | None = None
             ) -> str:
  m = meta['machine']
  t = m.get('torch', {})
  load = lambda k: '/'.join(f'{x:.1f}' for x in m[k]) if m.get(k) else 'n/a'
  table = throughput.md_table(
      ['config', 'epochs (recipe)', 'seeds', 'JAX eval accuracy',
       'PyTorch eval accuracy', 'JAX − PyTorch (points)', 'JAX s/epoch',
       'PyTorch s/epoch', 'loss bands separate'],
      [[r['config'], f'{r["epochs"]} ({r["recipe_epochs"]})', r['seeds'],
        _pct(r['jax_mean'], r['jax_std'], r['jax_n']),
        _pct(r['torch_mean'], r['torch_std'], r['torch_n']),
        ('n/a' if math.isnan(r['diff_points']) else
         f'{r["diff_points"]:+.2f}' + (
             '' if math.isnan(r['diff_se_points'])
             else f' ± {r["diff_se_points"]:.2f}')),
        *(throughput.fmt(None if math.isnan(r[f'{side}_s_per_epoch'])
                         else r[f'{side}_s_per_epoch'], '.1f')
          for side in ('jax', 'torch')),
        separation_text(r)] for r in rows])
  n, e = meta['sizes']
  out = [
      '# JAX against PyTorch on the same recipes (offline proxy; not '
      'KMNIST benchmark results)', '',
      f'Command: `{meta["command"]}`', '',
      f'Machine: {m["cpu"]}, {m["cores"]} cores. Python {m["python"]}, jax '
      f'{m["jax"]}, flax {m["flax"]}; torch {t.get("torch", "n/a")} (Python '
      f'{t.get("python", "n/a")}, {t.get("threads", "?")} threads). Date: '
      f'{meta["date"]}. Load average (1, 5, 15 min) at start '
      f'{load("load_average_start")}, at end {load("load_average_end")}.', '',
      f'Both sides train on test[:{n}] and evaluate on test[8000:{8000 + e}] '
      'of KMNIST, each its own implementation of the config\'s recipe (JAX: '
      'kmnist_jax\'s trainer; PyTorch: experiments/torch_fit.py on the ports '
      'of experiments/torch_models.py), with the schedule compressed to the '
      'epochs shown: cosine and onecycle over those epochs\' steps, '
      'multistep milestones scaled by epochs / recipe epochs. Seeds '
      f'{seed_text(meta, runs)}, the sides alternating run by run. Accuracy: '
      'mean ± sample std over seeds of the final eval accuracy (with the '
      'recipe\'s test-time augmentation on both sides when it has one). '
      'Difference: JAX mean − PyTorch mean in points, ± its standard error. '
      's/epoch: training only (no eval), median over seeds of each run\'s '
      'median epoch, its first epoch (JAX: compile) left out when there are '
      'more. Loss bands: the first step from which the two sides\' mean '
      f'training loss differ by more than the sum of their stds for '
      f'{SEPARATION_RUN} consecutive steps (first {meta["steps_curve"]} '
      'steps).', '', table, '']
  for r in rows:
    out.append(f'![{r["config"]} loss curves]({r["png"]})')
  out += epoch_lines(rows, runs or [])
  if meta['notes']:
    out += [''] + [f'- {x}' for x in meta['notes']]
  return '\n'.join(out) + '\n'


def seed_text(meta: dict, runs: list[dict] | None = None) -> str:
  """`first..last` for one run's seeds, the list for merged runs."""
  seeds = sorted({r['seed'] for r in runs or []})
  if seeds and seeds != list(range(seeds[0], seeds[-1] + 1)):
    return ', '.join(map(str, seeds))
  first = seeds[0] if seeds else meta.get('first_seed', 0)
  return f'{first}..{first + (len(seeds) or meta["seeds"]) - 1}'


def merge(paths: list[str], out: str) -> list[str]:
  """--out from the `_runs.json` of earlier parity runs of the same rows
  (more seeds added later with --first_seed), as one run would write it."""
  metas, runs = [], []
  for path in paths:
    try:
      with open(path) as f:
        d = json.load(f)
      missing = [k for k in ('command', 'date', 'sizes', 'steps_curve',
                             'machine', 'notes') if k not in d['meta']]
      if missing:
        raise KeyError(', '.join(missing))
      metas.append(d['meta'])
      runs += d['runs']
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise UserError(f'--merge {path}: expected the _runs.json of '
                      f'experiments/parity.py ({type(e).__name__}: {e})')
  seen = set()
  for r in runs:
    key = (r['config'], r['side'], r['seed'])
    if key in seen:
      raise UserError(f'--merge: {key[0]} seed {key[2]} ({key[1]}) is in '
                      'more than one file')
    seen.add(key)
  for field in ('sizes', 'steps_curve', 'batch_size'):
    if len({json.dumps(m.get(field, 0)) for m in metas}) > 1:
      raise UserError(f'--merge: the files differ in {field}')
  names = list(dict.fromkeys(r['config'] for r in runs))
  for name in names:
    if len({r['epochs'] for r in runs if r['config'] == name}) > 1:
      raise UserError(f'--merge: {name} ran for different --epochs')
  one_side = ('Only the JAX side ran.', 'Only the PyTorch side ran.')
  both = {r['side'] for r in runs} == {'jax', 'torch'}
  meta = dict(metas[0], command=' ; '.join(m['command'] for m in metas),
              date=' and '.join(m['date'] for m in metas),
              seeds=len({r['seed'] for r in runs}),
              notes=list(dict.fromkeys(
                  n for m in metas for n in m['notes']
                  if not (both and n in one_side))))
  meta['machine'] = dict(metas[0]['machine'], load_average_end=metas[-1][
      'machine'].get('load_average_end'))
  meta['recipes'] = {k: v for m in metas for k, v in m.get('recipes',
                                                           {}).items()}
  meta['notes'].append('Merged from ' + ', '.join(
      f'`{os.path.basename(p)}`' for p in paths) + ' by `python '
                       'experiments/parity.py --merge ...`; the load averages '
                       'are those of the first file\'s start and the last '
                       'one\'s end.')
  runs.sort(key=lambda r: (names.index(r['config']), r['seed'],
                           r['side'] != 'jax'))
  rows = [summarize(name, [r for r in runs if r['config'] == name],
                    reproduce.load_config(name, '', 0, {}).num_epochs,
                    meta['recipes'].get(name, {}).get('num_classes', 10))
          for name in names]
  return write_outputs(out, rows, runs, meta)


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
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.merge:
    try:
      written = merge([p for p in args.merge.split(',') if p], args.out)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    print('wrote ' + ', '.join(written))
    return 0
  sizes = (args.train_examples, args.eval_examples)
  notes: list[str] = []
  try:
    plan = {name: compressed_config(name, args.epochs, args.first_seed,
                                    args.data_dir, args.steps_curve, sizes,
                                    args.jax_matmul_precision,
                                    args.eval_every_epoch, args.k49_on_kmnist,
                                    args.batch_size, args.dataset)
            for name in args.configs}  # Every config checked before any run.
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  from kmnist_jax.data import datasets as data_lib  # pylint: disable=g-import-not-at-top
  torch_data = str(data_lib.resolve_data_dir(args.dataset or 'kmnist',
                                             args.data_dir))
  worker = (throughput.start_torch(args.torch_python, torch_data, notes)
            if args.sides != 'jax' else None)
  if args.sides == 'torch' and not worker:
    print(f'error: --sides torch needs --torch_python: {notes[-1]}',
          file=sys.stderr)
    return 2
  meta = dict(command=' '.join(shlex.quote(a) for a in (
      ['python', 'experiments/parity.py'] + list(
          sys.argv[1:] if argv is None else argv))),
              date=time.strftime('%Y-%m-%d %H:%M'), seeds=args.seeds,
              first_seed=args.first_seed,
              epochs=args.epochs, steps_curve=args.steps_curve,
              batch_size=args.batch_size, sizes=sizes, notes=notes)
  runs, rows = [], []
  try:
    meta['machine'] = throughput.machine_info(worker)
    for name in args.configs:
      recipe = reproduce.load_config(name, '', 0, {})
      recipe_epochs = recipe.num_epochs
      meta.setdefault('recipes', {})[name] = torch_recipe(plan[name], sizes)
      if args.batch_size:
        notes.append(f'{name}: every run trained at batch {args.batch_size} '
                     f'(--batch_size), not the recipe\'s '
                     f'{recipe.batch_size}, at the recipe\'s learning rate: '
                     'a check that the two sides learn alike, not the '
                     'recipe.')
      for seed in range(args.first_seed, args.first_seed + args.seeds):
        config = compressed_config(name, args.epochs, seed, args.data_dir,
                                   args.steps_curve, sizes,
                                   args.jax_matmul_precision,
                                   args.eval_every_epoch, args.k49_on_kmnist,
                                   args.batch_size, args.dataset)
        sides = []
        if args.sides != 'torch':
          with tempfile.TemporaryDirectory(prefix='parity_') as workdir:
            sides.append(('jax', run_jax(config, workdir,
                                         args.eval_every_epoch)))
        if worker:
          sides.append(('torch', run_torch(
              worker, torch_recipe(config, sizes), seed, args.steps_curve,
              args.eval_every_epoch)))
        for side, r in sides:
          r.update(config=name, side=side, seed=seed, epochs=args.epochs)
          runs.append(r)
          print(f'{name} seed {seed} {side:5s}: eval accuracy '
                f'{r["accuracy"]:.4f}, {epoch_time(r["epoch_seconds"]):.1f} '
                's/epoch', flush=True)
      rows.append(summarize(name, [r for r in runs if r['config'] == name],
                            recipe_epochs,
                            meta['recipes'][name]['num_classes']))
  finally:
    if worker:
      worker.close()
  meta['machine']['load_average_end'] = os.getloadavg()
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
  if args.k49_on_kmnist and any(n.startswith('k49_') for n in args.configs):
    notes.append('The K49 configs\' recipes ran on the KMNIST proxy data '
                 '(10 classes; no K49 data offline): a check that the two '
                 'implementations learn alike, not a K49 result.')
  if args.steps_curve and args.sides != 'torch':
    notes.append(f'The JAX side reads the loss of each of its first '
                 f'{args.steps_curve} steps (config.log_loss_steps), so it '
                 'waits for those steps one by one; PyTorch on the CPU '
                 'waits for every step anyway.')
  written = write_outputs(args.out, rows, runs, meta)
  print('wrote ' + ', '.join(written))
  return 0


if __name__ == '__main__':
  from kmnist_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()  # As the CLI does: before JAX starts its threads.
  sys.exit(main())
