"""The PyTorch timing and training worker: one JSON command a line.

Runs in its own environment (torch is no dependency of kmnist_jax), from the
repository root:

  python3.11 -m venv V && V/bin/pip install torch==2.13.0 numpy
  V/bin/python -m experiments.torch_worker --data_dir DATA

`experiments.throughput`, `experiments.parity` and `experiments.speedrun`
start it as a subprocess (experiments/torch_client.py) and send one JSON
command a line on stdin; each answer is one JSON line on stdout. The worker
blocks between commands, so the two frameworks never run at the same time.
Commands:

  {"cmd": "train", "model": M, "batch": B, "steps": N,
   "mode": "f32" | "bf16" | "bf16_cl"}                  -> {"seconds": s}
  {"cmd": "eval", "model": M, "batch": B, "steps": N, "mode": ...}
                                                        -> {"seconds": s}
  {"cmd": "tta", "target": 0.93, "max_epochs": E}       -> {"seconds": s, ...}
  {"cmd": "fit", "recipe": R, "seed": S, "steps_curve": K,
   "eval_every_epoch": B}                               -> accuracy, ...
  {"cmd": "info"}                                       -> versions, threads
  {"cmd": "quit"}

Like the JAX side, the worker keeps freed memory in glibc's malloc
(`kmnist_jax.cpu.malloc.keep_freed_memory`; that module needs only the
standard library) unless KMNIST_JAX_MALLOC=0. The models are the ports of
experiments/torch_models.py; their optimizers here match the configs:
seed_cnn Adam, keras_cnn Adadelta, the ResNets SGD with momentum.

Modes (`MODES`), as Intel's and PyTorch's CPU guides advise for bfloat16:
`f32`; `bf16`, the forward pass under `torch.autocast('cpu',
dtype=torch.bfloat16)`; `bf16_cl`, the same with the model and its inputs in
`channels_last`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import time

import numpy as np

if __name__ == '__main__' and not __package__:  # A file, not -m.
  print('run it from the repository root as: python -m '
        'experiments.torch_worker [options]', file=sys.stderr)
  sys.exit(2)

# pylint: disable=wrong-import-position
from kmnist_jax.cpu import malloc
from kmnist_jax.cpu import openmp

# The same malloc settings as the JAX side (unless KMNIST_JAX_MALLOC=0),
# applied before torch is imported and starts its threads: the one import
# of experiments/ that has to wait for a call.
malloc.keep_freed_memory()

import torch
import torch.nn.functional as F

from experiments import torch_fit
from experiments.torch_models import KerasCNN
from experiments.torch_models import MODELS


def make_optimizer(name, params):
  if name == 'seed_cnn':
    return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
  if name == 'keras_cnn':
    return torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7)
  return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def load_test(data_dir):
  """The test set in `data_dir`: KMNIST's .npz files, else the idx files
  (gzipped or not) of an MNIST-format release such as MNIST's."""
  npz = os.path.join(data_dir, 'kmnist-test-imgs.npz')
  if os.path.exists(npz):
    imgs = np.load(npz)['arr_0']
    labels = np.load(os.path.join(data_dir, 'kmnist-test-labels.npz'))['arr_0']
    return imgs, labels.astype(np.int64)
  return (_read_idx(data_dir, 't10k-images-idx3-ubyte'),
          _read_idx(data_dir, 't10k-labels-idx1-ubyte').astype(np.int64))


def _read_idx(data_dir, stem):
  path = os.path.join(data_dir, stem)
  if os.path.exists(path + '.gz'):
    with gzip.open(path + '.gz', 'rb') as f:
      raw = f.read()
  else:
    with open(path, 'rb') as f:
      raw = f.read()
  dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big')
          for i in range(raw[3])]
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


MODES = ('f32', 'bf16', 'bf16_cl')


def _autocast(mode):
  return torch.autocast('cpu', dtype=torch.bfloat16, enabled=mode != 'f32')


class Worker:
  """Keeps the data as uint8 tensors; batches are gathered and scaled per step
  (the same work as kmnist_jax's on-device pipeline)."""

  def __init__(self, data_dir):
    imgs, labels = load_test(data_dir)
    self.images = torch.from_numpy(imgs[:8000]).unsqueeze(1)  # (N, 1, 28, 28)
    self.labels = torch.from_numpy(labels[:8000])
    self.eval_images = torch.from_numpy(imgs[8000:]).unsqueeze(1)
    self.eval_labels = torch.from_numpy(labels[8000:])
    self.cache = {}

  def _model(self, name, mode='f32'):
    if mode not in MODES:
      raise ValueError(f'mode {mode!r}: expected one of {", ".join(MODES)}')
    if (name, mode) not in self.cache:
      torch.manual_seed(0)
      model = MODELS[name]()
      if mode == 'bf16_cl':
        model = model.to(memory_format=torch.channels_last)
      self.cache[name, mode] = (model, make_optimizer(name, model.parameters()))
    return self.cache[name, mode]

  def _batch(self, images, labels, idx, mode='f32'):
    x = images[idx].float().div_(255.0)
    if mode == 'bf16_cl':
      x = x.contiguous(memory_format=torch.channels_last)
    return x, labels[idx]

  def train(self, name, batch, steps, mode='f32'):
    model, opt = self._model(name, mode)
    model.train()
    gen = torch.Generator().manual_seed(0)
    n = len(self.images)

    def step():
      idx = torch.randint(0, n, (batch,), generator=gen)
      x, y = self._batch(self.images, self.labels, idx, mode)
      opt.zero_grad(set_to_none=True)
      with _autocast(mode):
        loss = F.cross_entropy(model(x), y)
      loss.backward()
      opt.step()
      return loss

    step()  # Warm-up: allocator and oneDNN primitive caches.
    faults = _minor_faults()
    t = time.perf_counter()
    for _ in range(steps):
      loss = step()
    loss.item()
    return {'seconds': time.perf_counter() - t,
            'minor_faults': _minor_faults() - faults}

  def eval(self, name, batch, steps, mode='f32'):
    model, _ = self._model(name, mode)
    model.eval()
    n = len(self.eval_images)
    with torch.inference_mode(), _autocast(mode):
      def step(i):
        idx = torch.arange(i * batch, (i + 1) * batch) % n
        x, _ = self._batch(self.eval_images, self.eval_labels, idx, mode)
        return model(x).argmax(-1)
      step(0)
      t = time.perf_counter()
      for i in range(steps):
        out = step(i)
      out.sum().item()
    return {'seconds': time.perf_counter() - t}

  def tta(self, target, max_epochs, batch=128, eval_batch=1000, seed=0):
    """keras_cnn recipe on test[:8000] until test[8000:] accuracy >= target."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = KerasCNN()
    opt = make_optimizer('keras_cnn', model.parameters())
    n = len(self.images)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, max_epochs + 1):
      model.train()
      perm = torch.randperm(n, generator=gen)
      for s in range(n // batch):
        x, y = self._batch(self.images, self.labels,
                           perm[s * batch:(s + 1) * batch])
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
      model.eval()
      correct = 0
      with torch.inference_mode():
        for i in range(0, len(self.eval_images), eval_batch):
          x = self.eval_images[i:i + eval_batch].float().div_(255.0)
          pred = model(x).argmax(-1)
          correct += int((pred == self.eval_labels[i:i + eval_batch]).sum())
      acc = correct / len(self.eval_images)
      history.append({'epoch': epoch, 'accuracy': acc,
                      'seconds': time.perf_counter() - t0})
      if acc >= target:
        return {'seconds': time.perf_counter() - t0, 'epochs': epoch,
                'accuracy': acc, 'history': history}
    return {'seconds': None, 'epochs': None, 'accuracy': acc,
            'history': history}


def info():
  return {'torch': torch.__version__, 'python': sys.version.split()[0],
          'threads': torch.get_num_threads(),
          'mkldnn': torch.backends.mkldnn.is_available(),
          'malloc': malloc.describe(),
          'openmp': openmp.describe()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--data_dir', required=True)
  args = parser.parse_args()
  worker = Worker(args.data_dir)
  print(json.dumps({'ready': True}), flush=True)
  for line in sys.stdin:
    cmd = json.loads(line)
    kind = cmd.pop('cmd')
    if kind == 'quit':
      break
    if kind == 'info':
      out = info()
    elif kind in ('train', 'eval'):
      run = worker.train if kind == 'train' else worker.eval
      try:
        out = run(cmd['model'], cmd['batch'], cmd['steps'],
                  cmd.get('mode', 'f32'))
      except ValueError as e:
        out = {'error': str(e)}
    elif kind == 'tta':
      out = worker.tta(cmd['target'], cmd['max_epochs'])
    elif kind == 'fit':  # experiments/parity.py; see torch_fit.py.
      data = (worker.images, worker.labels, worker.eval_images,
              worker.eval_labels)
      try:
        out = torch_fit.fit(cmd['recipe'], cmd['seed'], data, MODELS,
                            cmd.get('steps_curve', 300), cmd.get('target'),
                            cmd.get('eval_every_epoch', False),
                            cmd.get('mode', 'f32'),
                            cmd.get('eval_from_epoch', 1))
      except Exception as e:  # pylint: disable=broad-except
        out = {'error': f'{type(e).__name__}: {e}'}
    else:
      out = {'error': f'unknown command {kind!r}'}
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
  main()
