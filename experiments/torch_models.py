"""PyTorch ports of kmnist_jax's CNNs and ResNets, and a timing worker.

Runs in its own environment (torch is no dependency of kmnist_jax):

  python3.11 -m venv V && V/bin/pip install torch==2.13.0 numpy
  V/bin/python experiments/torch_models.py --data_dir /work/shared/data/kmnist

`experiments/throughput.py` starts it as a subprocess and sends one JSON
command a line on stdin; each answer is one JSON line on stdout. The worker
blocks between commands, so the two frameworks never run at the same time.
Commands:

  {"cmd": "train", "model": M, "batch": B, "steps": N}  -> {"seconds": s}
  {"cmd": "eval", "model": M, "batch": B, "steps": N}   -> {"seconds": s}
  {"cmd": "tta", "target": 0.93, "max_epochs": E}       -> {"seconds": s, ...}
  {"cmd": "fit", "recipe": R, "seed": S, "steps_curve": K,
   "eval_every_epoch": B}                               -> accuracy, ...
  {"cmd": "info"}                                       -> versions, threads
  {"cmd": "quit"}

Like the JAX side, the worker keeps freed memory in glibc's malloc
(`kmnist_jax.cpu.malloc.keep_freed_memory`; that module needs only the
standard library) unless KMNIST_JAX_MALLOC=0.

The models match `kmnist_jax.models.factory` / `resnets` / `densenet` layer by layer
(same shapes, initializers, dropout rates and BatchNorm settings: the
ResNets' heads PyTorch's default weight, their bias zero in hysts' models
and PyTorch's default in the manifold-mixup code's PreActResNet-18); the
optimizers match the configs: seed_cnn Adam, keras_cnn Adadelta, the ResNets
SGD with momentum.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Standard library only: the same malloc settings as the JAX side (unless
# KMNIST_JAX_MALLOC=0), applied before torch starts its threads.
from kmnist_jax.cpu import malloc  # pylint: disable=g-import-not-at-top,wrong-import-position

malloc.keep_freed_memory()

import torch  # pylint: disable=g-import-not-at-top,wrong-import-position
from torch import nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,wrong-import-position

import torch_fit  # pylint: disable=g-import-not-at-top,wrong-import-position

_BN = dict(momentum=0.1, eps=1e-5)


class SeedCNN(nn.Module):

  def __init__(self, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 16, 5)
    self.bn1 = nn.BatchNorm2d(16, **_BN)
    self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
    self.bn2 = nn.BatchNorm2d(32, **_BN)
    self.head = nn.Linear(3 * 3 * 32, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
    x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
    x = F.dropout(x, 0.2, self.training)
    return self.head(x.flatten(1))


class KerasCNN(nn.Module):

  def __init__(self, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 3)
    self.conv2 = nn.Conv2d(32, 64, 3)
    self.fc1 = nn.Linear(12 * 12 * 64, 128)
    self.fc2 = nn.Linear(128, num_classes)
    for m in self.modules():  # Keras defaults, as in kmnist_jax.
      if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)

  def forward(self, x):
    x = F.relu(self.conv1(x))
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = F.dropout(x, 0.25, self.training)
    x = F.relu(self.fc1(x.flatten(1)))
    x = F.dropout(x, 0.5, self.training)
    return self.fc2(x)


def _conv(cin, cout, k, stride):
  conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
  nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
  return conv


def _hysts_head(cin, num_classes):
  """hysts' / janzd's `initialize_weights`: PyTorch's default Linear
  weight, a zero bias (kmnist_jax.models.resnets.head)."""
  head = nn.Linear(cin, num_classes)
  nn.init.zeros_(head.bias)
  return head


class PreActBlock(nn.Module):
  """`preact_shortcut`: the shortcut starts from the pre-activated input,
  else from the raw input (see kmnist_jax.models.resnets.PreActBlock)."""

  def __init__(self, cin, cout, stride, preact_shortcut):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin, **_BN)
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn2 = nn.BatchNorm2d(cout, **_BN)
    self.conv2 = _conv(cout, cout, 3, 1)
    self.preact_shortcut = preact_shortcut
    self.shortcut = (_conv(cin, cout, 1, stride)
                     if stride != 1 or cin != cout else None)

  def forward(self, x):
    out = F.relu(self.bn1(x))
    short = out if self.preact_shortcut else x
    if self.shortcut is not None:
      short = self.shortcut(short)
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    return out + short


class PreActResNet18(nn.Module):
  """kmnist_jax.models.resnets.PreActResNet18 (see there how it differs from the
  manifold-mixup code)."""

  def __init__(self, num_classes=10):
    super().__init__()
    self.stem = _conv(1, 64, 3, 1)
    blocks, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
      for s in (stride, 1):
        blocks.append(PreActBlock(cin, cout, s, True))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.bn = nn.BatchNorm2d(512, **_BN)
    self.head = nn.Linear(512, num_classes)

  def forward(self, x):
    x = self.blocks(self.stem(x))
    x = F.relu(self.bn(x))
    return self.head(x.mean((2, 3)))


class ResNetPreAct(nn.Module):
  """hysts' ResNet-preact (depth 6n+2) for 28x28 inputs."""

  def __init__(self, num_classes=10, depth=20, base=16):
    super().__init__()
    n = (depth - 2) // 6
    self.stem = _conv(1, base, 3, 1)
    blocks, cin = [], base
    for cout, stride in ((base, 1), (2 * base, 2), (4 * base, 2)):
      for i in range(n):
        blocks.append(PreActBlock(cin, cout, stride if i == 0 else 1, i == 0))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.bn = nn.BatchNorm2d(cin, **_BN)
    self.head = _hysts_head(cin, num_classes)

  def forward(self, x):
    x = F.relu(self.bn(self.blocks(self.stem(x))))
    return self.head(x.mean((2, 3)))


def shake(x1, x2, alpha, beta):
  """alpha * x1 + (1 - alpha) * x2 forward; gradients scaled by beta, 1-beta."""
  d = x1 - x2
  return x2 + beta * d + ((alpha - beta) * d).detach()


class _ResidualPath(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn1 = nn.BatchNorm2d(cout, **_BN)
    self.conv2 = _conv(cout, cout, 3, 1)
    self.bn2 = nn.BatchNorm2d(cout, **_BN)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(F.relu(x))))
    return self.bn2(self.conv2(x))


class _SkipConnection(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.stride = stride
    self.conv1 = _conv(cin, cout // 2, 1, 1)
    self.conv2 = _conv(cin, cout - cout // 2, 1, 1)
    self.bn = nn.BatchNorm2d(cout, **_BN)

  def forward(self, x):
    s = self.stride
    x = F.relu(x)
    y1 = self.conv1(x[:, :, ::s, ::s])
    shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
    y2 = self.conv2(shifted[:, :, ::s, ::s])
    return self.bn(torch.cat([y1, y2], 1))


class _ShakeBlock(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.path1 = _ResidualPath(cin, cout, stride)
    self.path2 = _ResidualPath(cin, cout, stride)
    self.skip = (_SkipConnection(cin, cout, stride)
                 if cin != cout or stride != 1 else None)

  def forward(self, x):
    x1, x2 = self.path1(x), self.path2(x)
    if self.training:
      shape = (x.shape[0], 1, 1, 1)  # S-S-I: one weight per image.
      y = shake(x1, x2, torch.rand(shape), torch.rand(shape))
    else:
      y = 0.5 * (x1 + x2)
    return y + (x if self.skip is None else self.skip(x))


class ShakeShake(nn.Module):
  """hysts' shake-shake for 28x28 inputs (kmnist_jax.models.resnets.ShakeShake)."""

  def __init__(self, num_classes=10, depth=26, base=96):
    super().__init__()
    n = (depth - 2) // 6
    self.stem = _conv(1, base, 3, 1)
    self.stem_bn = nn.BatchNorm2d(base, **_BN)
    blocks, cin = [], base
    for cout, stride in ((base, 1), (2 * base, 2), (4 * base, 2)):
      for i in range(n):
        blocks.append(_ShakeBlock(cin, cout, stride if i == 0 else 1))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.head = _hysts_head(cin, num_classes)

  def forward(self, x):
    x = self.blocks(F.relu(self.stem_bn(self.stem(x))))
    return self.head(x.mean((2, 3)))  # No ReLU before the pool (hysts).


class _DenseBlock(nn.Module):
  """BN-ReLU-conv (bottleneck: 1x1 to 4k, BN-ReLU-3x3 to k), its k channels
  appended to the input (hysts' / janzd's models/densenet.py)."""

  def __init__(self, cin, growth, bottleneck):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin, **_BN)
    mid = 4 * growth if bottleneck else growth
    self.conv1 = _conv(cin, mid, 1 if bottleneck else 3, 1)
    self.bn2 = nn.BatchNorm2d(mid, **_BN) if bottleneck else None
    self.conv2 = _conv(mid, growth, 3, 1) if bottleneck else None

  def forward(self, x):
    y = self.conv1(F.relu(self.bn1(x)))
    if self.conv2 is not None:
      y = self.conv2(F.relu(self.bn2(y)))
    return torch.cat([x, y], 1)


class DenseNet(nn.Module):
  """janzd's (hysts') DenseNet for 28x28 inputs: three stages of n blocks,
  BN-ReLU-conv1x1 + 2x2 average-pool transitions compressing the channels,
  final BN-ReLU, pooling, head (kmnist_jax.models.densenet.DenseNet)."""

  def __init__(self, num_classes=10, depth=100, growth=12, bottleneck=True,
               compression=0.5):
    super().__init__()
    n = (depth - 4) // (6 if bottleneck else 3)
    c = 2 * growth
    layers = [_conv(1, c, 3, 1)]
    for index in range(3):
      for _ in range(n):
        layers.append(_DenseBlock(c, growth, bottleneck))
        c += growth
      if index < 2:
        cout = int(c * compression)
        layers += [nn.BatchNorm2d(c, **_BN), nn.ReLU(), _conv(c, cout, 1, 1),
                   nn.AvgPool2d(2, 2)]
        c = cout
    self.features = nn.Sequential(*layers)
    self.bn = nn.BatchNorm2d(c, **_BN)
    self.head = _hysts_head(c, num_classes)

  def forward(self, x):
    x = F.relu(self.bn(self.features(x)))
    return self.head(x.mean((2, 3)))


MODELS = {'seed_cnn': SeedCNN, 'keras_cnn': KerasCNN,
          'preact_resnet18': PreActResNet18, 'resnet_preact20': ResNetPreAct,
          'shake_shake26_2x96d': ShakeShake,
          'densenet_bc100_k12': DenseNet,
          'densenet100_k12': lambda num_classes=10: DenseNet(
              num_classes, bottleneck=False, compression=1.0)}


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

  def _model(self, name):
    if name not in self.cache:
      torch.manual_seed(0)
      model = MODELS[name]()
      self.cache[name] = (model, make_optimizer(name, model.parameters()))
    return self.cache[name]

  def _batch(self, images, labels, idx):
    return images[idx].float().div_(255.0), labels[idx]

  def train(self, name, batch, steps):
    model, opt = self._model(name)
    model.train()
    gen = torch.Generator().manual_seed(0)
    n = len(self.images)

    def step():
      idx = torch.randint(0, n, (batch,), generator=gen)
      x, y = self._batch(self.images, self.labels, idx)
      opt.zero_grad(set_to_none=True)
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

  def eval(self, name, batch, steps):
    model, _ = self._model(name)
    model.eval()
    n = len(self.eval_images)
    with torch.inference_mode():
      def step(i):
        idx = torch.arange(i * batch, (i + 1) * batch) % n
        x, _ = self._batch(self.eval_images, self.eval_labels, idx)
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
          'malloc': malloc.describe()}


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
    elif kind == 'train':
      out = worker.train(cmd['model'], cmd['batch'], cmd['steps'])
    elif kind == 'eval':
      out = worker.eval(cmd['model'], cmd['batch'], cmd['steps'])
    elif kind == 'tta':
      out = worker.tta(cmd['target'], cmd['max_epochs'])
    elif kind == 'fit':  # experiments/parity.py; see torch_fit.py.
      data = (worker.images, worker.labels, worker.eval_images,
              worker.eval_labels)
      try:
        out = torch_fit.fit(cmd['recipe'], cmd['seed'], data, MODELS,
                            cmd.get('steps_curve', 300), cmd.get('target'),
                            cmd.get('eval_every_epoch', False))
      except Exception as e:  # pylint: disable=broad-except
        out = {'error': f'{type(e).__name__}: {e}'}
    else:
      out = {'error': f'unknown command {kind!r}'}
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
  main()
