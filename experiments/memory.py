"""Peak memory of a training run, with and without kmnist_jax's malloc setting.

Each row trains one model for one epoch through the CLI (`python -m
kmnist_jax.main`, so with its defaults), in a fresh process, twice: with the
CLI defaults and with `KMNIST_JAX_MALLOC=0` (the C library's malloc
defaults). A process's peak resident set size is its rusage `ru_maxrss`,
read by `os.wait4` when it exits. Issue 32 bounds the ratio defaults / stock
at 1.5 for DenseNet-BC-100 at batch 64.

  python -m experiments.memory --out_dir experiments/results/memory

The runs train on `--train_split` of the dataset's test images (KMNIST's
proxy split by default), so no training set is needed: the figures are
memory, not accuracy. The processes run one after the other; other work on
the machine changes their time, not their peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from kmnist_jax.cpu import features

REPO = pathlib.Path(__file__).resolve().parents[1]
# (config, model, batch size): the small CNN, the ResNets and the DenseNet.
ROWS = (
    ('keras_cnn', 'keras_cnn', 128),
    ('resnet_preact20_cutout', 'resnet_preact20', 128),
    ('preact_resnet18', 'preact_resnet18', 128),
    ('k49_densenet100', 'densenet_bc100_k12', 64),
)
SETTINGS = (('CLI defaults', None), ('KMNIST_JAX_MALLOC=0', '0'))
BOUND = 1.5


def command(config: str, batch: int, args, workdir: str) -> list[str]:
  return [sys.executable, '-m', 'kmnist_jax.main',
          '--config', f'configs/{config}.py:{args.dataset},proxy',
          '--workdir', workdir, '--config.num_epochs=1',
          f'--config.batch_size={batch}',
          f'--config.train_split={args.train_split}',
          f'--config.eval_split={args.eval_split}',
          '--config.write_plots=False']


def run_one(config: str, batch: int, malloc: str | None, args) -> dict:
  """One CLI training in a fresh process: peak RSS (MB), seconds, malloc."""
  env = dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0')
  env.pop('KMNIST_JAX_MALLOC', None)
  if malloc is not None:
    env['KMNIST_JAX_MALLOC'] = malloc
  with tempfile.TemporaryDirectory() as workdir, \
      tempfile.TemporaryFile('w+') as log:
    cmd = command(config, batch, args, workdir)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - t0
    log.seek(0)
    out = log.read()
  if proc.returncode:
    raise SystemExit(f'{" ".join(cmd)}: exit {proc.returncode}\n{out[-2000:]}')
  said = [l.split('malloc:', 1)[1].strip() for l in out.splitlines()
          if l.startswith('malloc:')]
  return dict(peak_rss_mb=round(usage.ru_maxrss / 1024), seconds=round(seconds),
              malloc=said[0] if said else '?')


def table(rows: list[dict], args) -> str:
  lines = [f'# Peak RSS of one training epoch, CLI defaults against '
           f'KMNIST_JAX_MALLOC=0 on {features.describe()}, '
           f'{os.cpu_count()} cores', '',
           '| model | batch | CLI defaults (MB) | KMNIST_JAX_MALLOC=0 (MB) | '
           'ratio | malloc with the CLI defaults |',
           '|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["model"]} | {r["batch"]} | {r["defaults"]} | '
                 f'{r["stock"]} | {r["ratio"]:.2f} | {r["malloc"]} |')
  lines += ['', f'* Command: `python -m experiments.memory '
            f'--train_split "{args.train_split}" --eval_split '
            f'"{args.eval_split}" --out_dir {args.out_dir}`',
            f'* One epoch of `{args.dataset}` {args.train_split} through the '
            'CLI in a fresh process per cell; peak RSS = rusage ru_maxrss.',
            f'* Bound (issue 32): DenseNet-BC-100 at batch 64, ratio <= {BOUND}.']
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='kmnist')
  p.add_argument('--train_split', default='test[:2048]')
  p.add_argument('--eval_split', default='test[8000:8512]')
  p.add_argument('--models', default='',
                 help='comma-separated subset of: '
                 + ', '.join(m for _, m, _ in ROWS))
  p.add_argument('--out_dir', default='')
  args = p.parse_args(argv)
  wanted = set(filter(None, args.models.split(',')))
  unknown = wanted - {m for _, m, _ in ROWS}
  if unknown:
    p.error(f'--models: unknown {sorted(unknown)}; expected some of '
            + ', '.join(m for _, m, _ in ROWS))
  rows = []
  for config, model, batch in ROWS:
    if wanted and model not in wanted:
      continue
    cells = {key: run_one(config, batch, value, args)
             for key, value in SETTINGS}
    defaults, stock = cells['CLI defaults'], cells['KMNIST_JAX_MALLOC=0']
    rows.append(dict(model=model, batch=batch,
                     defaults=defaults['peak_rss_mb'],
                     stock=stock['peak_rss_mb'],
                     ratio=defaults['peak_rss_mb'] / stock['peak_rss_mb'],
                     malloc=defaults['malloc'], seconds=dict(
                         defaults=defaults['seconds'],
                         stock=stock['seconds'])))
    print(f'{model} b{batch}: {rows[-1]}', flush=True)
  text = table(rows, args)
  print(text)
  if args.out_dir:
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'memory.md').write_text(text)
    (out / 'memory.json').write_text(json.dumps(
        dict(cpu=features.describe(), cores=os.cpu_count(), rows=rows), indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
