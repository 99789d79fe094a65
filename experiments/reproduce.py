"""Reproduce the rois-codh benchmark table: run configs over seeds, write tables.

On a machine with the full KMNIST and K49 data, one command runs every row
over 3 seeds and writes experiments/results/full/full.md and .csv:

  python -m experiments.reproduce --name full --seeds 3

The MNIST column (and Fashion-MNIST's: `--datasets fashion_mnist`) runs the
KMNIST rows' configs on that dataset (`configs/<exp>.py:mnist`), on the full
60,000 / 10,000 split:

  python -m experiments.reproduce --name mnist --datasets mnist --seeds 3

The offline proxy (KMNIST test set only), with per-config epoch caps:

  python -m experiments.reproduce --name proxy --variant proxy --seeds 3 \
      --datasets kmnist --override resnet_preact20_cutout:num_epochs=4

`--collect` only rebuilds the table from finished workdirs. Runs live in
`--workdir_root/<variant>/<config>/seed<S>`; a finished run (its
`reproduce.json`) is not run again, an interrupted one resumes.
`--override [CONFIG:]FIELD=VALUE` changes a config field for every config or
for one; `--skip CONFIG=REASON` leaves a config out and prints the reason in
its cell. The table shows the epochs actually run (and the recipe's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import sys
import time

import jax
import numpy as np
import pandas as pd

if __name__ == '__main__' and not __package__:  # A file, not -m.
  print('run it from the repository root as: python -m '
        'experiments.reproduce [options]', file=sys.stderr)
  sys.exit(2)

# pylint: disable=wrong-import-position
from kmnist_jax.config import base as configlib
from kmnist_jax.data import datasets as data_lib
from kmnist_jax.core import fileio
from kmnist_jax import main as main_lib
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax import runtime
from kmnist_jax.cpu import features
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import registry

REPO = pathlib.Path(__file__).resolve().parents[1]

CONFIG_DIR = REPO / 'configs'
RESULTS_DIR = REPO / 'experiments' / 'results'
SIDECAR = 'reproduce.json'


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the rois-codh table; '' configs: published only."""
  model: str
  kmnist_config: str
  k49_config: str
  kmnist_published: str
  k49_published: str
  no_config_reason: str = ''
  mnist_published: str = ''

  def config(self, dataset: str) -> str:
    """The row's config on `dataset`: the KMNIST recipe on the others."""
    return self.k49_config if dataset == 'k49' else self.kmnist_config

  def published(self, dataset: str) -> str:
    return {'kmnist': self.kmnist_published, 'k49': self.k49_published,
            'mnist': self.mnist_published}.get(dataset, '')


_OLD = '*'  # Published on the pre-2019-02-05 data release.
_HYSTS = '†'  # hysts' README, not the rois-codh table.
ROWS = (
    Row('4-Nearest Neighbour Baseline', 'knn', 'k49_knn', '92.10%', '83.65%',
        mnist_published='97.14%'),
    Row('PCA + 4-kNN', 'pca_knn', 'k49_pca_knn', '93.98%', '86.80%',
        mnist_published='97.76%'),
    Row('Tuned SVM (RBF kernel)', 'svm', 'k49_svm', '92.82%' + _OLD,
        '85.61%' + _OLD, mnist_published='98.57%'),
    Row('Keras Simple CNN Benchmark', 'keras_cnn', 'k49_keras_cnn', '94.63%',
        '89.36%', mnist_published='99.06%'),
    Row('PreActResNet-18', 'preact_resnet18', 'k49_preact_resnet18',
        '97.82%' + _OLD, '96.64%' + _OLD, mnist_published='99.56%'),
    Row('PreActResNet-18 + Input Mixup', 'preact_resnet18_mixup',
        'k49_preact_resnet18_mixup', '98.41%' + _OLD, '97.04%' + _OLD,
        mnist_published='99.54%'),
    Row('PreActResNet-18 + Manifold Mixup', 'preact_resnet18_manifold_mixup',
        'k49_preact_resnet18_manifold_mixup', '98.83%' + _OLD,
        '97.33%' + _OLD, mnist_published='99.54%'),
    Row('ResNet18 + VGG Ensemble', '', '', '98.90%' + _OLD, '',
        'no config: an ensemble of two workdirs, not run here; run '
        '`python -m kmnist_jax.main --config configs/vgg.py --workdir '
        'W_VGG`, the same with configs/preact_resnet18.py and --workdir '
        'W_RESNET (the registry has no torchvision ResNet-18 yet), then '
        '`python -m kmnist_jax.main --mode eval --workdir W_VGG --ensemble '
        'W_RESNET`', mnist_published='99.60%'),
    Row('DenseNet-100 (k=12)', '', 'k49_densenet100', '', '97.32%',
        'no config: published for K49 only'),
    Row('ResNet-preact-20, Cutout 14 (hysts)', 'resnet_preact20_cutout',
        'k49_resnet_preact20_cutout', '99.18%' + _OLD, '',
        mnist_published='99.74%' + _HYSTS),
    Row('Shake-Shake-26 2x96d (S-S-I), Cutout 14', 'shake_shake26',
        'k49_shake_shake26', '99.34%' + _OLD, '98.29%',
        mnist_published='99.76%'),
    Row('Ours: best recipe (configs/best.py)', 'best', 'k49_best', '', ''),
)
FOOTNOTE = ('Published numbers: rois-codh/kmnist README table (hysts README '
            'for ResNet-preact-20); * = obtained on the pre-2019-02-05 data '
            'release; † = hysts/pytorch_image_classification README "Results '
            'on MNIST" (993089a), median of 3 runs at 100 epochs. KMNIST, '
            'MNIST, Fashion-MNIST: top-1 accuracy; K49: balanced accuracy.')


def machine() -> str:
  """Device description: accelerator kind, or the CPU model (with the AMX /
  avx512_bf16 flags that pick oneDNN's kernels) and cores."""
  dev = jax.devices()[0]
  if dev.platform != 'cpu':
    return f'{jax.device_count()} x {dev.device_kind}'
  return f'{features.describe()}; {os.cpu_count()} cores'


def parse_value(text: str, current):
  """`text` as the type of the field's current value."""
  if isinstance(current, bool):
    if text.lower() not in ('true', 'false', '1', '0'):
      raise UserError(f'--override: expected true/false, got {text!r}')
    return text.lower() in ('true', '1')
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  return text


def parse_overrides(items) -> dict[str, dict[str, str]]:
  """['f=v', 'cfg:f=v'] -> {'': {'f': 'v'}, 'cfg': {'f': 'v'}}."""
  out: dict[str, dict[str, str]] = {}
  for item in items or ():
    if '=' not in item:
      raise UserError(f'--override {item!r}: expected [CONFIG:]FIELD=VALUE')
    key, value = item.split('=', 1)
    name, _, field = key.rpartition(':')
    out.setdefault(name, {})[field] = value
  return out


def load_config(name: str, variant: str, seed: int, overrides: dict,
                data_dir: str = '', dataset: str = ''):
  """Config `name` with its `variant`, `seed` and the overrides for it, on
  `dataset` if given (`configs/<name>.py:<dataset>,<variant>`)."""
  path = CONFIG_DIR / f'{name}.py'
  if not path.is_file():
    raise UserError(f'config {name!r}: {path} does not exist')
  c = configlib.load_config_file(
      str(path), ','.join(a for a in (dataset, variant) if a))
  c.seed = seed
  if data_dir:
    c.data_dir = data_dir
  for scope in ('', name):
    for field, value in overrides.get(scope, {}).items():
      part, _, leaf = field.rpartition('.')  # A slice's: 'knn.k'.
      node = c[part] if part in c else (None if part else c)
      if node is None or leaf not in node:
        raise UserError(f'--override {field}: config {name} has no such field')
      node[leaf] = parse_value(value, node[leaf])
  return c


def final_metrics(workdir: str) -> dict:
  """The last 'test' record of metrics.jsonl, else the last 'eval' one."""
  path = os.path.join(workdir, 'metrics.jsonl')
  records = metrics_lib.read_metrics(path) if os.path.exists(path) else []
  for split in ('test', 'eval'):
    found = [r for r in records if r['split'] == split]
    if found:
      return found[-1]
  raise UserError(f'{workdir}: no eval or test record in metrics.jsonl')


def run_one(name: str, variant: str, seed: int, overrides: dict,
            workdir: str, data_dir: str = '', dataset: str = '') -> dict:
  """Trains (or resumes) one config/seed; writes and returns its sidecar."""
  sidecar = os.path.join(workdir, SIDECAR)
  if os.path.exists(sidecar):
    with open(sidecar) as f:
      return json.load(f)
  config = load_config(name, variant, seed, overrides, data_dir, dataset)
  os.makedirs(os.path.dirname(workdir), exist_ok=True)
  t0 = time.time()
  _, summary = main_lib.train_and_evaluate(config, workdir)
  if summary['interrupted']:
    raise KeyboardInterrupt(summary['interrupted'])
  info = data_lib.get_info(config.dataset)
  rec = final_metrics(workdir)
  steps = summary['steps_per_epoch']
  result = {
      'config': name, 'variant': variant, 'seed': seed,
      'dataset': config.dataset, 'metric': info.metric,
      'value': rec[info.metric], 'split': rec['split'],
      'epochs': (rec['step'] // steps) if steps else 0,
      'recipe_epochs': load_config(name, '', seed, {}, '',
                                   dataset).num_epochs,
      'trained': registry.get(config.model).trains,
      'wall_time': rec.get('wall_time', time.time() - t0),
      'device': machine(),
      'release': data_lib.release_id(config.dataset, config.data_dir or None),
      'checksums': data_lib.file_checksums(config.dataset, config.train_split,
                                           config.data_dir or None),
      'overrides': {k: v for s in ('', name)
                    for k, v in overrides.get(s, {}).items()},
  }
  fileio.write_json(sidecar, result)
  return result


def _fmt_pct(values) -> str:
  v = 100 * np.asarray(values, float)
  if len(v) == 1:
    return f'{v[0]:.2f}% (n=1)'
  return f'{v.mean():.2f} ± {v.std(ddof=1):.2f}% (n={len(v)})'


def _fmt_time(seconds: float) -> str:
  if seconds < 120:
    return f'{seconds:.0f} s'
  if seconds < 7200:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'


def _run_dataset(r: dict) -> str:
  """The dataset of a sidecar (older ones: by the config's name)."""
  return r.get('dataset') or ('k49' if r['config'].startswith('k49_')
                              else 'kmnist')


def shown_datasets(datasets) -> tuple[str, ...]:
  """Table columns: KMNIST and K49 side by side, else the datasets run."""
  if set(datasets) <= {'kmnist', 'k49'}:
    return ('kmnist', 'k49')
  return tuple(datasets)


def build_table(results: list[dict], skipped: dict[str, str],
                datasets=('kmnist', 'k49'),
                not_run: str = 'not run') -> pd.DataFrame:
  """One row per benchmark row; results are sidecar dicts."""
  runs_of: dict[tuple[str, str], list[dict]] = {}
  for r in results:
    runs_of.setdefault((r['config'], _run_dataset(r)), []).append(r)
  shown = shown_datasets(datasets)
  rows = []
  for row in ROWS:
    out = {'model': row.model}
    epochs, walls, devices, releases, nums = [], [], set(), set(), {}
    for ds in shown:
      label, cfg = data_lib.label(ds), row.config(ds)
      out[f'{label} published'] = row.published(ds) or '—'
      runs = sorted(runs_of.get((cfg, ds), []), key=lambda r: r['seed'])
      if not cfg:
        cell = row.no_config_reason
      elif runs:
        values = [r['value'] for r in runs]
        cell, nums[ds], e = _fmt_pct(values), values, runs[0]
        if e['trained']:
          capped = '' if e['epochs'] == e['recipe_epochs'] else (
              f' of {e["recipe_epochs"]}')
          epochs.append(f'{label} {e["epochs"]}{capped}')
        walls.append(f'{label} {_fmt_time(np.mean([r["wall_time"] for r in runs]))}')
        devices.update(r['device'] for r in runs)
        releases.update(f'{ds} {r["release"]}' for r in runs)
      elif cfg in skipped:
        cell = f'skipped: {skipped[cfg]}'
      else:
        cell = not_run if ds not in datasets else 'not run'
      out[f'{label} ours'] = cell
    out['epochs'] = ', '.join(epochs) or '—'
    out['wall time / run'] = ', '.join(walls) or '—'
    out['device'] = '; '.join(sorted(devices)) or '—'
    out['dataset release (md5)'] = ', '.join(sorted(releases)) or '—'
    for ds in shown:
      v = 100 * np.asarray(nums.get(ds, []), float)
      out[f'{ds}_mean'] = float(v.mean()) if len(v) else float('nan')
      out[f'{ds}_std'] = float(v.std(ddof=1)) if len(v) > 1 else float('nan')
      out[f'{ds}_n'] = len(v)
    rows.append(out)
  columns = ['model'] + [f'{data_lib.label(ds)} {k}' for ds in shown
                         for k in ('published', 'ours')] + [
                             'epochs', 'wall time / run', 'device',
                             'dataset release (md5)']
  numeric = [f'{ds}_{s}' for ds in shown for s in ('mean', 'std', 'n')]
  return pd.DataFrame(rows, columns=columns + numeric)


def to_markdown(df: pd.DataFrame, title: str, notes: list[str]) -> str:
  cols = [c for c in df.columns if not c.endswith(('_mean', '_std', '_n'))]
  esc = lambda v: str(v).replace('|', '\\|')
  lines = [f'# {title}', '', '| ' + ' | '.join(cols) + ' |',
           '|' + '---|' * len(cols)]
  for _, r in df.iterrows():
    lines.append('| ' + ' | '.join(esc(r[c]) for c in cols) + ' |')
  lines += [''] + [f'* {n}' for n in notes] + ['']
  return '\n'.join(lines)


def write_table(df: pd.DataFrame, name: str, title: str, notes: list[str],
                out_dir: pathlib.Path = RESULTS_DIR) -> tuple[str, str]:
  out_dir.mkdir(parents=True, exist_ok=True)
  md, csv = out_dir / f'{name}.md', out_dir / f'{name}.csv'
  md.write_text(to_markdown(df, title, notes), encoding='utf-8')
  df.to_csv(csv, index=False)
  return str(md), str(csv)


def _command_args(argv) -> str:
  """argv as a shell would take it, without the --note lines."""
  kept, skip_next = [], False
  for a in argv:
    if skip_next or a.startswith('--note='):
      skip_next = False
      continue
    if a == '--note':
      skip_next = True
      continue
    kept.append(a)
  return shlex.join(kept)


def configs_for(datasets) -> list[tuple[str, str]]:
  """(config, dataset) of every row's config on each of `datasets`."""
  return [(row.config(ds), ds) for ds in datasets for row in ROWS
          if row.config(ds)]


def run_dir(root: str, variant: str, name: str, dataset: str) -> pathlib.Path:
  """root/<variant>/<config>, or root/<variant>/<dataset>/<config> for a
  dataset the config is not written for (its `:<dataset>` argument)."""
  base = pathlib.Path(root) / (variant or 'full')
  own = 'k49' if name.startswith('k49_') else 'kmnist'
  return base / name if dataset in ('', own) else base / dataset / name


def collect(root: str, variant: str, todo) -> list[dict]:
  """The sidecars of finished runs of the (config, dataset) pairs `todo`."""
  out = []
  for name, dataset in todo:
    for sidecar in sorted(run_dir(root, variant, name, dataset).glob(
        f'seed*/{SIDECAR}')):
      out.append(json.loads(sidecar.read_text()))
  return out


def main(argv=None, setup_process: bool = False) -> int:
  """`setup_process`: apply the CLI's process settings (malloc for the
  models to train, compilation cache) first, as a script run does."""
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--name', default='full',
                 help='writes experiments/results/<name>/<name>.md and .csv')
  p.add_argument('--variant', default='', choices=['', 'proxy', 'smoke'])
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--datasets', default='kmnist,k49')
  p.add_argument('--configs', default='',
                 help='comma-separated; default: every row of the datasets')
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--skip', action='append', default=[],
                 help='CONFIG=REASON: leave CONFIG out, say why')
  p.add_argument('--workdir_root', default=str(REPO / 'workdirs' /
                                              'reproduce'))
  p.add_argument('--data_dir', default='')
  p.add_argument('--collect', action='store_true',
                 help='only rebuild the table from finished workdirs')
  p.add_argument('--title', default='')
  p.add_argument('--note', action='append', default=[],
                 help='a line to add under the table')
  p.add_argument('--out_dir', default='',
                 help='default: experiments/results/<name>/')
  args = p.parse_args(argv)
  try:
    datasets = [d for d in args.datasets.split(',') if d]
    for ds in datasets:
      data_lib.get_info(ds)  # An unknown name lists the valid ones.
    pairs = configs_for(datasets)
    if args.configs:
      wanted = [c for c in args.configs.split(',') if c]
      pairs = [(n, ds) for ds in datasets for n in wanted
               if ds not in ('kmnist', 'k49') or
               ds == ('k49' if n.startswith('k49_') else 'kmnist')]
    overrides = parse_overrides(args.override)
    skipped = dict(s.split('=', 1) for s in args.skip)
    todo = [(n, ds) for n, ds in pairs if n not in skipped]
    if not args.collect:
      if setup_process:  # As the CLI does, before JAX starts its threads.
        runtime.setup(models=[
            load_config(n, args.variant, 0, overrides, args.data_dir,
                        ds).model for n, ds in todo])
      for name, ds in todo:
        for seed in range(args.seeds):
          workdir = run_dir(args.workdir_root, args.variant, name, ds) / (
              f'seed{seed}')
          r = run_one(name, args.variant, seed, overrides, str(workdir),
                      args.data_dir, ds)
          print(f'{name} on {ds} seed {seed}: {r["metric"]} '
                f'{r["value"]:.4f} ({r["epochs"]} epochs, '
                f'{r["wall_time"]:.0f} s)', flush=True)
    results = collect(args.workdir_root, args.variant, todo)
    not_run = ('not run (no K49 data offline)' if args.variant == 'proxy'
               else 'not run')
    df = build_table(results, skipped, datasets, not_run)
    title = args.title or (
        f'Offline proxy on {machine()}: train {configlib.PROXY_TRAIN}, '
        f'evaluate {configlib.PROXY_EVAL}, capped epochs (not KMNIST '
        'benchmark results)'
        if args.variant == 'proxy' else
        f'Benchmark reproduction ({args.variant or "full data"}: '
        f'{", ".join(data_lib.label(d) for d in datasets)}) on {machine()}')
    notes = [FOOTNOTE,
             f'Ours: mean ± sample std over seeds 0..{args.seeds - 1} of the '
             'final ' + (f'eval ({configlib.PROXY_EVAL})' if args.variant == 'proxy'
                         else 'test') + ' metric. Epochs: run (of the '
             'recipe\'s, when capped). Overrides: '
             + (', '.join(args.override) or 'none') + '.',
             'Command: `python -m experiments.reproduce '
             + _command_args(argv if argv is not None else sys.argv[1:]) + '`'
            ] + args.note
    md, csv = write_table(df, args.name, title, notes,
                          pathlib.Path(args.out_dir or RESULTS_DIR / args.name))
    print(f'wrote {md} and {csv}')
    return 0
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main(setup_process=True))
