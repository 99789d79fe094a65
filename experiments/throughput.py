"""kmnist_jax against PyTorch on this machine, side by side (issue 6).

  KMNIST_JAX_TORCH_PYTHON=/work/torchvenv/bin/python \\
  .venv/bin/python experiments/throughput.py --data_dir /work/shared/data/kmnist

Sections (`--sections`, comma-separated; default all):

* `train`, `eval`: img/s of one train step (batch 128 and 400) and of the eval
  forward pass (batch 1000) for each model, JAX and the PyTorch port
  (experiments/torch_models.py, a subprocess in its own venv). The two sides
  alternate block by block, `--repeats` times, so machine noise hits both;
  the tables give medians and JAX/PyTorch ratios, and the fraction of the
  machine's 2-core f32 matmul peak each side reaches.
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
  128) and seed_cnn (batch 400); the XLA ops that take the most time per step,
  with their shapes and what they compute. The traces stay in
  `--out`_traces/ (open them in Perfetto; git ignores them).

Writes `--out`.md and `--out`.json (machine, versions, command, results).
The torch side is skipped with a note when `--torch_python` is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SECTIONS = ('train', 'eval', 'malloc', 'overhead', 'compile', 'predict',
            'tta', 'profile')
MODELS = ('seed_cnn', 'keras_cnn', 'resnet_preact20', 'preact_resnet18',
          'shake_shake26_2x96d')
# Steps per timed block: about one second of work per block on 2 cores (at
# least one step).
STEPS = {('seed_cnn', 128): 40, ('seed_cnn', 400): 15,
         ('keras_cnn', 128): 12, ('keras_cnn', 400): 4,
         ('resnet_preact20', 128): 5, ('resnet_preact20', 400): 2,
         ('preact_resnet18', 128): 2, ('preact_resnet18', 400): 1,
         ('shake_shake26_2x96d', 128): 1, ('shake_shake26_2x96d', 400): 1}
EVAL_BATCH = 1000
EVAL_STEPS = {'seed_cnn': 20, 'keras_cnn': 4, 'resnet_preact20': 2,
              'preact_resnet18': 1, 'shake_shake26_2x96d': 1}
TTA_TARGET = 0.93


# ----------------------------------------------------------------------------
# Pure helpers.


def median(xs):
  xs = [x for x in xs if x is not None]
  return statistics.median(xs) if xs else None


def rate(images: int, seconds_list) -> float | None:
  """Median images per second over repeats of `images` in `seconds`."""
  m = median(seconds_list)
  return images / m if m else None


def ratio(a, b):
  return a / b if a and b else None


def fmt(x, spec='.0f', none='n/a'):
  return none if x is None else format(x, spec)


def md_table(header: list[str], rows: list[list]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
  return '\n'.join(lines)


# ----------------------------------------------------------------------------
# The PyTorch worker.


class TorchWorker:
  """experiments/torch_models.py in a subprocess; one JSON line per command."""

  def __init__(self, python: str, data_dir: str, env: dict | None = None):
    script = os.path.join(ROOT, 'experiments', 'torch_models.py')
    self.proc = subprocess.Popen(
        [python, script, '--data_dir', data_dir], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=env)
    if not self._read().get('ready'):
      raise RuntimeError('torch worker did not start')

  def _read(self):
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError('torch worker exited')
    return json.loads(line)

  def __call__(self, cmd: str, **kw):
    self.proc.stdin.write(json.dumps(dict(cmd=cmd, **kw)) + '\n')
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    with contextlib.suppress(Exception):
      self('quit')
    self.proc.wait(timeout=30)


def torch_env(malloc: str) -> dict:
  """The worker's environment: `same` malloc settings as JAX's, or `stock`."""
  from kmnist_jax.cpu import malloc as cpu_malloc  # pylint: disable=g-import-not-at-top
  env = dict(os.environ)
  if malloc == 'stock':
    env[cpu_malloc.ENV] = '0'
  return env


def start_torch(python: str | None, data_dir: str, notes: list[str],
                malloc: str = 'same'):
  if not python or not os.path.exists(python):
    notes.append(f'PyTorch side skipped: no torch python ({python!r}); pass '
                 '--torch_python or set KMNIST_JAX_TORCH_PYTHON.')
    return None
  return TorchWorker(python, data_dir, torch_env(malloc))


# ----------------------------------------------------------------------------
# The JAX side.


def model_config(name: str):
  """The model's training config (its configs/ recipe, else SGD momentum)."""
  from kmnist_jax.config import base as configlib  # pylint: disable=g-import-not-at-top
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  if os.path.exists(path):
    import importlib.util  # pylint: disable=g-import-not-at-top
    spec = importlib.util.spec_from_file_location(f'_cfg_{name}', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config('proxy')
  c = configlib.apply_variant(configlib.base_config(), 'proxy')
  c.model, c.optimizer, c.learning_rate = name, 'sgd', 0.1
  c.momentum, c.weight_decay = 0.9, 1e-4
  return c


class JaxBench:
  """Compiled train and eval steps of one model over the proxy data."""

  def __init__(self, name: str, data, matmul_precision: str = 'default'):
    import jax  # pylint: disable=g-import-not-at-top
    from kmnist_jax.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
    from kmnist_jax.train import optim  # pylint: disable=g-import-not-at-top
    from kmnist_jax.train import steps  # pylint: disable=g-import-not-at-top
    from kmnist_jax.train import state as train_state  # pylint: disable=g-import-not-at-top
    from kmnist_jax.core import distributed  # pylint: disable=g-import-not-at-top
    from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
    self.jax, self.steps_lib = jax, steps
    self.name = name
    self.config = model_config(name)
    self.config.matmul_precision = matmul_precision
    mesh = distributed.make_mesh()
    repl = NamedSharding(mesh, P())
    (images, labels), (ev_images, ev_labels) = data
    self.n = len(images)
    self.images = jax.device_put(images, repl)
    self.labels = jax.device_put(labels.astype(np.int32), repl)
    self.perm = input_pipeline.epoch_permutation(0, 0, self.n)
    self.tx = optim.create_optimizer(self.config, self.n // 128)
    self.graphdef, state = train_state.init_state(self.config, 10, self.tx)
    self.mesh, self.repl = mesh, repl
    self.state0 = state
    self.steps, self.states = {}, {}
    self.eval_data = input_pipeline.make_eval_data(ev_images, ev_labels,
                                                   EVAL_BATCH, repl)
    self.eval_step = steps.make_eval_step(self.graphdef, 10, EVAL_BATCH, 0,
                                          matmul_precision)

  def _train_step(self, batch):
    if batch not in self.steps:
      self.steps[batch] = self.steps_lib.make_train_step(
          self.graphdef, self.tx, self.config, 10, batch, self.mesh)
      state = self.jax.tree.map(lambda x: x.copy(), self.state0)
      self.states[batch] = self.steps[batch](state, self.images, self.labels,
                                             self.perm, 0)
      self.jax.block_until_ready(self.states[batch])
    return self.steps[batch]

  def train(self, batch: int, steps: int) -> float:
    step = self._train_step(batch)
    spe = self.n // batch
    state = self.states[batch]
    t = time.perf_counter()
    for i in range(steps):
      state = step(state, self.images, self.labels, self.perm, i % spe)
    self.jax.block_until_ready(state)
    self.states[batch] = state
    return time.perf_counter() - t

  def eval(self, steps: int) -> float:
    jnp = self.jax.numpy
    state, ev = self.states.get(128, self.state0), self.eval_data
    acc = (jnp.zeros((), jnp.float32), jnp.zeros((10, 10), jnp.int32))
    acc = self.eval_step(state.params, state.batch_stats, ev.images,
                         ev.labels, ev.mask, acc, 0)
    self.jax.block_until_ready(acc)
    t = time.perf_counter()
    for i in range(steps):
      acc = self.eval_step(state.params, state.batch_stats, ev.images,
                           ev.labels, ev.mask, acc, i % ev.num_batches)
    self.jax.block_until_ready(acc)
    return time.perf_counter() - t

  def forward_flops(self) -> float | None:
    """XLA's FLOP count of the eval forward pass, per image."""
    jnp = self.jax.numpy
    fn = self.steps_lib.make_infer_fn(self.graphdef)
    x = jnp.zeros((EVAL_BATCH, 28, 28), jnp.uint8)
    try:
      cost = fn.lower(self.state0.params, self.state0.batch_stats,
                      x).compile().cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      return float(cost['flops']) / EVAL_BATCH
    except Exception:  # pylint: disable=broad-except
      return None


def matmul_peak(repeats: int = 5) -> float:
  """GFLOP/s of a 2048^3 f32 matmul in XLA (best of `repeats`)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda a: a @ a)
  mm(a).block_until_ready()
  best = min(_timed(lambda: mm(a).block_until_ready()) for _ in range(repeats))
  return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


# ----------------------------------------------------------------------------
# Sections.


def load_data(data_dir: str):
  # pylint: disable=g-import-not-at-top
  from kmnist_jax.config import base as configlib
  from kmnist_jax.data import datasets as data_lib
  return (data_lib.load('kmnist', configlib.PROXY_TRAIN, data_dir),
          data_lib.load('kmnist', configlib.PROXY_EVAL, data_dir))


def run_throughput(args, torch, data, sections, results, notes):
  from kmnist_jax.models import factory as models_lib  # pylint: disable=g-import-not-at-top
  peak = matmul_peak()
  results['peak_gflops'] = peak
  print(f'2-core f32 matmul peak: {peak:.0f} GFLOP/s', flush=True)
  rows = results.setdefault('throughput', [])
  for name in args.models:
    if name not in models_lib.MODELS:
      notes.append(f'{name}: not in kmnist_jax.models.factory.MODELS; skipped.')
      continue
    bench = JaxBench(name, data, args.jax_matmul_precision)
    flops = bench.forward_flops()
    peak = results['peak_gflops'] = max(peak, matmul_peak())
    cases = []
    if 'train' in sections:
      cases += [('train', b) for b in args.batches]
    if 'eval' in sections:
      cases.append(('eval', EVAL_BATCH))
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
      j_rate, t_rate = rate(batch * steps, jt), rate(batch * steps, tt)
      f = flops * (3 if kind == 'train' else 1) if flops else None
      row = dict(model=name, kind=kind, batch=batch, steps=steps,
                 jax_seconds=jt, torch_seconds=tt, jax_img_s=j_rate,
                 torch_img_s=t_rate, ratio=ratio(j_rate, t_rate),
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
sys.path.insert(0, {root!r})
from kmnist_jax import runtime
runtime.setup()
sys.argv = ['x']
sys.path.insert(0, {root!r} + '/experiments')
import throughput as tp
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
  return dict(ms_per_step=1e3 * median(seconds) / steps,
              faults_per_step=median(faults) / steps)


def run_malloc(args, results, notes):
  """Train steps with malloc's defaults and with kmnist_jax's, both sides."""
  from kmnist_jax.cpu import malloc as cpu_malloc  # pylint: disable=g-import-not-at-top
  rows = results.setdefault('malloc', [])
  envs = {key: dict(os.environ, **{cpu_malloc.ENV: on})
          for key, on in (('stock', '0'), ('kept', '1'))}
  workers = {}
  if args.torch_python and os.path.exists(args.torch_python):
    workers = {key: TorchWorker(args.torch_python, args.data_dir, env)
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
  from kmnist_jax.methods import harness  # pylint: disable=g-import-not-at-top
  name, epochs = 'keras_cnn', args.overhead_epochs
  bench = JaxBench(name, data)
  spe = bench.n // bench.config.batch_size
  pure = [bench.train(bench.config.batch_size, 1)]  # Compiles.
  pure = [bench.train(bench.config.batch_size, spe) / spe]
  config = model_config(name)
  config.num_epochs, config.write_plots = epochs, False
  config.data_dir = args.data_dir
  with tempfile.TemporaryDirectory() as workdir:
    _, summary = harness.fit(config, workdir)
  pure.append(bench.train(bench.config.batch_size, spe) / spe)
  epoch = median(summary['epoch_seconds'][1:])  # The first one compiles.
  step = median(pure)
  results['overhead'] = dict(
      model=name, batch=bench.config.batch_size, steps_per_epoch=spe,
      epoch_seconds=summary['epoch_seconds'], pure_step_seconds=pure,
      overhead=epoch / (spe * step) - 1)
  print(f'epoch host overhead: {results["overhead"]["overhead"]:+.1%} '
        f'(epoch {epoch:.2f} s vs {spe} x {step * 1e3:.1f} ms)', flush=True)


_FIRST_STEP = _PRELUDE + r'''
import jax, numpy as np
from kmnist_jax.data import pipeline as input_pipeline
from kmnist_jax.train import optim
from kmnist_jax.train import steps
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
  try:
    import kmnist_jax.inference.predict  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    notes.append('predict: kmnist_jax.inference.predict does not exist; not measured.')
    return
  from kmnist_jax.data import datasets as data_lib  # pylint: disable=g-import-not-at-top
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
  if not torch:
    notes.append('tta: PyTorch side not measured.')


PROFILE_RUNS = (('keras_cnn', 128), ('seed_cnn', 400), ('resnet_preact20', 128))
_RUNTIME_EVENTS = ('ThunkExecutor', 'PjitFunction', 'ParseArguments')


def _hlo_ops(hlo_text: str) -> dict[str, str]:
  """Instruction name -> 'shape op [jax op] {root of a fusion}' of a module."""
  ops, roots, calls = {}, {}, {}
  computation = None
  for line in hlo_text.splitlines():
    line = line.strip()
    if line.endswith('{') and not line.startswith(('ROOT', '%')) or (
        line.startswith('%') and ' = ' not in line and line.endswith('{')):
      computation = line.lstrip('%').split(' ', 1)[0]
      continue
    if ' = ' not in line or not line.startswith(('%', 'ROOT %')):
      continue
    is_root = line.startswith('ROOT ')
    name, rest = line.removeprefix('ROOT ')[1:].split(' = ', 1)
    shape, _, tail = rest.partition(' ')
    kind = tail.split('(', 1)[0]
    desc = f'{shape} {kind}'
    if 'window={' in rest:
      desc += ' window=' + rest.split('window={', 1)[1].split('}', 1)[0]
    if 'op_name="' in rest:
      desc += ' [' + rest.split('op_name="', 1)[1].split('"', 1)[0] + ']'
    if is_root and computation:
      roots[computation] = desc
    ops[name] = desc
    if 'calls=%' in rest:
      calls[name] = rest.split('calls=%', 1)[1].split(',', 1)[0].split(' ')[0]
  for name, comp in calls.items():
    if comp in roots:
      ops[name] += ' {fused: ' + roots[comp].split(' ', 1)[1] + '}'
  return ops


def run_profile(args, data, results):
  """Top XLA ops per train step, from a jax.profiler trace."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  rows = results.setdefault('profile', [])
  steps = 10
  for name, batch in PROFILE_RUNS:
    bench = JaxBench(name, data)
    step = bench._train_step(batch)  # pylint: disable=protected-access
    ops = _hlo_ops(step.lower(bench.states[batch], bench.images, bench.labels,
                              bench.perm, 0).compile().as_text())
    bench.train(batch, 2)
    trace_dir = f'{args.out}_traces/{name}_b{batch}'
    with tempfile.TemporaryDirectory() as tmp:
      jax.profiler.start_trace(tmp, create_perfetto_trace=True)
      wall = bench.train(batch, steps)
      jax.profiler.stop_trace()
      found = glob.glob(os.path.join(tmp, '**', '*.trace.json.gz'),
                        recursive=True)
      if not found:
        results['notes'].append(f'profile: no trace written for {name}.')
        continue
      os.makedirs(trace_dir, exist_ok=True)
      target = os.path.join(trace_dir, 'perfetto_trace.json.gz')
      shutil.copy(found[0], target)
    with gzip.open(target) as f:
      events = json.load(f)
    events = events['traceEvents'] if isinstance(events, dict) else events
    total = collections.Counter()
    for e in events:
      if e.get('ph') == 'X' and e.get('name') in ops:
        total[e['name']] += e.get('dur', 0) / 1e3 / steps  # ms per step
    step_ms = 1e3 * wall / steps
    top = [dict(op=op, ms=ms, share=ms / step_ms, what=ops[op])
           for op, ms in total.most_common(8)]
    rows.append(dict(model=name, batch=batch, step_ms=step_ms, top=top,
                     trace=os.path.relpath(target, ROOT)))
    print(f'profile {name} b{batch}: {step_ms:.1f} ms/step; ' + ', '.join(
        f'{t["op"]} {t["ms"]:.1f} ms' for t in top[:4]), flush=True)


# ----------------------------------------------------------------------------
# Report.


def machine_info(torch) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  from kmnist_jax.cpu import features  # pylint: disable=g-import-not-at-top
  cpu = features.describe()  # The model, with AMX / avx512_bf16 when present.
  from kmnist_jax.cpu import onednn  # pylint: disable=g-import-not-at-top
  from kmnist_jax.cpu import malloc as cpu_malloc  # pylint: disable=g-import-not-at-top
  info = dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
              jax=jax.__version__, flax=flax.__version__,
              xla_flags=os.environ.get('XLA_FLAGS', ''),
              onednn=onednn.describe(), malloc=cpu_malloc.describe(),
              load_average_start=os.getloadavg())
  if torch:
    info['torch'] = torch('info')
  return info


def add_peak_fractions(results: dict) -> None:
  """Model GFLOP/s of each side over the best matmul peak of the run."""
  peak = results.get('peak_gflops')
  for r in results.get('throughput', []):
    for side in ('jax', 'torch'):
      f, img_s = r.get('flops_per_image'), r.get(f'{side}_img_s')
      r[f'{side}_peak_frac'] = f * img_s / 1e9 / peak if f and img_s and \
          peak else None


def _load(machine: dict, when: str) -> str:
  load = machine.get(f'load_average_{when}')
  return '/'.join(f'{x:.1f}' for x in load) if load else 'n/a'


def tta_summary(rows: list[dict]) -> dict:
  """Median seconds to the target per side (None if a repeat missed it)."""
  med = lambda xs: median(xs) if xs and None not in xs else None
  j = med([r['jax']['seconds'] for r in rows])
  t = med([r['torch']['seconds'] for r in rows if 'torch' in r])
  return dict(jax=j, torch=t, ratio=ratio(j, t))


def write_report(path: str, results: dict) -> None:
  with open(path + '.json', 'w') as f:
    json.dump(results, f, indent=2)
    f.write('\n')
  m = results['machine']
  t = m.get('torch', {})
  out = ['# kmnist_jax vs PyTorch throughput', '',
         f'Command: `{results["command"]}`', '',
         f'Machine: {m["cpu"]}, {m["cores"]} cores. Python {m["python"]}, '
         f'jax {m["jax"]}, flax {m["flax"]}; torch {t.get("torch", "n/a")} '
         f'(Python {t.get("python", "n/a")}, {t.get("threads", "?")} threads). '
         f'JAX convolution gradients: {m.get("onednn", "n/a")}. '
         'JAX convolutions: '
         + ('bfloat16 operands, float32 sums (config.matmul_precision='
            "'bfloat16')" if results.get('jax_matmul_precision') == 'bfloat16'
            else 'float32') + '; PyTorch float32. '
         f'malloc: JAX {m.get("malloc", "n/a")}; PyTorch '
         f'{t.get("malloc", "n/a")}. '
         f'Date: {results["date"]}. Load average (1, 5, 15 min) at start '
         f'{_load(m, "start")}, at end {_load(m, "end")}: other work on the '
         'machine slows both sides.', '',
         f'Medians of {results["repeats"]} interleaved repeats. Peak: 2-core '
         f'f32 matmul {fmt(results.get("peak_gflops"))} GFLOP/s (XLA, 2048^3, '
         'best seen in the run); "% peak" is the model FLOP rate (XLA cost '
         'analysis, train = 3x forward) over it.'
         + (' With bfloat16 operands the CPU does twice the float32 FLOPs per '
            'instruction, so JAX % peak can pass 100.'
            if results.get('jax_matmul_precision') == 'bfloat16' else ''),
         '']
  if results.get('throughput'):
    rows = [[r['model'], r['kind'], r['batch'], fmt(r['jax_img_s']),
             fmt(r['torch_img_s']), fmt(r['ratio'], '.2f'),
             fmt(r['jax_peak_frac'] and 100 * r['jax_peak_frac'], '.0f'),
             fmt(r['torch_peak_frac'] and 100 * r['torch_peak_frac'], '.0f')]
            for r in results['throughput']]
    out += [md_table(['model', 'mode', 'batch', 'JAX img/s', 'PyTorch img/s',
                      'JAX/PyTorch', 'JAX % peak', 'PyTorch % peak'], rows), '']
  if results.get('malloc'):
    cell = lambda v: (f'{v["ms_per_step"]:.1f} ms, {v["faults_per_step"]:.0f}'
                      if v else 'n/a')
    out += ['Train step with the C library\'s malloc defaults ("stock") and '
            'with kmnist_jax.cpu.malloc.keep_freed_memory ("kept"): ms per '
            'step, minor page faults per step (fresh processes; medians):', '',
            md_table(['model', 'batch', 'JAX stock', 'JAX kept',
                      'PyTorch stock', 'PyTorch kept'],
                     [[r['model'], r['batch'], cell(r.get('jax_stock')),
                       cell(r.get('jax_kept')), cell(r.get('torch_stock')),
                       cell(r.get('torch_kept'))] for r in results['malloc']]),
            '']
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
  for r in results.get('profile', []):
    out += ['', f'Profile of {r["model"]} training, batch {r["batch"]} '
            f'({r["step_ms"]:.1f} ms/step under the tracer; the run wrote its '
            f'trace to `{r["trace"]}`, not committed). The XLA ops that take the most time per step '
            '(ops the thunk runtime runs concurrently overlap, so shares '
            'can sum past 100%):', '',
            md_table(['XLA op', 'ms/step', 'share of step', 'what it computes'],
                     [[t['op'], fmt(t['ms'], '.1f'), fmt(100 * t['share'], '.0f')
                       + '%', '`' + t['what'][:140] + '`'] for t in r['top']])]
  if results['notes']:
    out += ['', 'Notes:', ''] + [f'- {n}' for n in results['notes']]
  with open(path + '.md', 'w') as f:
    f.write('\n'.join(out) + '\n')


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
  p.add_argument('--sections', default=','.join(SECTIONS))
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--batches', default='128,400')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--overhead_epochs', type=int, default=3)
  p.add_argument('--tta_epochs', type=int, default=8)
  p.add_argument('--tta_repeats', type=int, default=3)
  p.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'results',
                                               'throughput', 'throughput'))
  args = p.parse_args(argv)
  args.sections = [s for s in args.sections.split(',') if s]
  bad = set(args.sections) - set(SECTIONS)
  if bad:
    p.error(f'unknown sections {sorted(bad)}; valid: {", ".join(SECTIONS)}')
  args.models = [m for m in args.models.split(',') if m]
  args.batches = [int(b) for b in args.batches.split(',') if b]
  return args


def main(argv=None):
  args = parse_args(argv)
  from kmnist_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()
  notes: list[str] = []
  results = dict(command=' '.join(shlex.quote(a) for a in sys.argv),
                 date=time.strftime('%Y-%m-%d %H:%M'), repeats=args.repeats,
                 sections=args.sections, notes=notes,
                 jax_matmul_precision=args.jax_matmul_precision)
  needs_torch = {'train', 'eval', 'tta'} & set(args.sections)
  torch = start_torch(args.torch_python, args.data_dir, notes,
                      args.torch_malloc) if needs_torch else None
  try:
    results['machine'] = machine_info(torch)
    if results['machine']['load_average_start'][0] > 1.0:
      notes.append('The machine was busy (load average above 1 at start): '
                   'PyTorch\'s OpenMP threads lose far more to other work '
                   'than XLA\'s, so the ratios favour JAX; rerun when idle.')
    data = load_data(args.data_dir)
    if {'train', 'eval'} & set(args.sections):
      run_throughput(args, torch, data, args.sections, results, notes)
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
      run_profile(args, data, results)
  finally:
    if torch:
      torch.close()
  results['machine']['load_average_end'] = os.getloadavg()
  add_peak_fractions(results)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  write_report(args.out, results)
  print(f'wrote {args.out}.md and {args.out}.json')


if __name__ == '__main__':
  main()
