"""experiments.parity's statistics and outputs: the rows, .md, .csv, plots.

`summarize` makes one table row from the runs of one config (both sides);
`write_outputs` writes `--out`.md, .csv, _runs.json and the loss-curve
plots; `merge` writes them from the _runs.json files of earlier runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics

from matplotlib.figure import Figure
import numpy as np

from experiments import reproduce
from experiments.report import fmt
from experiments.report import load_text
from experiments.report import md_table
from kmnist_jax.core.errors import UserError

SEPARATION_RUN = 20  # Consecutive steps for the loss bands to count apart.


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
  table = md_table(
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
        *(fmt(None if math.isnan(r[f'{side}_s_per_epoch'])
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
      f'{load_text(m, "start")}, at end {load_text(m, "end")}.', '',
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
                      f'experiments.parity ({type(e).__name__}: {e})')
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
      f'`{os.path.basename(p)}`' for p in paths) + ' by `python -m '
                       'experiments.parity --merge ...`; the load averages '
                       'are those of the first file\'s start and the last '
                       'one\'s end.')
  runs.sort(key=lambda r: (names.index(r['config']), r['seed'],
                           r['side'] != 'jax'))
  rows = [summarize(name, [r for r in runs if r['config'] == name],
                    reproduce.load_config(name, '', 0, {}).num_epochs,
                    meta['recipes'].get(name, {}).get('num_classes', 10))
          for name in names]
  return write_outputs(out, rows, runs, meta)

