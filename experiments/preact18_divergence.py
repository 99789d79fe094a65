"""Which difference makes the manifold-mixup PreActResNet-18 diverge? (issue 16)

  V/bin/python -m experiments.preact18_divergence --data_dir DATA --steps 60

PyTorch only (the divergence showed in JAX and in this port alike). Trains
PreActResNet-18 on the offline proxy (test[:8000]; never a benchmark
result) for `--steps` steps of the recipe (batch 100, SGD lr 0.1, Nesterov
momentum 0.9, weight decay 1e-4, pixels / 255) from the code's own form
(vikasverma1077/manifold_mixup supervised/preact_resnet.py: the identity
shortcuts take the raw input and the projections the pre-activated one, no
BN-ReLU before pooling, PyTorch's default initializers), then with one
change at a time: our form's final BN-ReLU, its He (fan-out) init, its
pre-activated identity shortcuts, input normalisation by the proxy's mean
and std, a lower rate, and our whole form. Prints one line per variant: the
training loss at a few steps, its maximum and whether it went non-finite.
Writes `--out` (JSON) when given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

MEAN, STD = 0.1904, 0.3475  # test[:8000] pixels / 255 (configs use these).


class Block(nn.Module):

  def __init__(self, cin, cout, stride, preact_identity, he):
    super().__init__()
    self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.proj = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                 if stride != 1 or cin != cout else None)
    self.preact_identity = preact_identity
    if he:
      for m in (self.conv1, self.conv2, self.proj):
        if m is not None:
          nn.init.kaiming_normal_(m.weight, mode='fan_out',
                                  nonlinearity='relu')

  def forward(self, x):
    out = F.relu(self.bn1(x))
    if self.proj is not None:
      short = self.proj(out)  # Both forms: projections see the preactivation.
    else:
      short = out if self.preact_identity else x
    out = self.conv2(F.relu(self.bn2(self.conv1(out))))
    return out + short


class Net(nn.Module):

  def __init__(self, final_bn, he, preact_identity):
    super().__init__()
    self.stem = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    if he:
      nn.init.kaiming_normal_(self.stem.weight, mode='fan_out',
                              nonlinearity='relu')
    blocks, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
      for s in (stride, 1):
        blocks.append(Block(cin, cout, s, preact_identity, he))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.bn = nn.BatchNorm2d(512) if final_bn else None
    self.head = nn.Linear(512, 10)

  def forward(self, x):
    x = self.blocks(self.stem(x))
    if self.bn is not None:
      x = F.relu(self.bn(x))
    return self.head(x.mean((2, 3)))


CODE = dict(final_bn=False, he=False, preact_identity=False, normalise=False,
            lr=0.1)
VARIANTS = {
    'code form': {},
    '+ final BN-ReLU': dict(final_bn=True),
    '+ He init': dict(he=True),
    '+ pre-activated identity shortcuts': dict(preact_identity=True),
    '+ input mean/std': dict(normalise=True),
    'lr 0.05': dict(lr=0.05),
    'lr 0.02': dict(lr=0.02),
    'our form (all three)': dict(final_bn=True, he=True, preact_identity=True),
}


def run(images, labels, v, steps, seed, batch=100):
  torch.manual_seed(seed)
  model = Net(v['final_bn'], v['he'], v['preact_identity'])
  opt = torch.optim.SGD(model.parameters(), lr=v['lr'], momentum=0.9,
                        nesterov=True, weight_decay=1e-4)
  gen = torch.Generator().manual_seed(seed)
  order = torch.randperm(len(images), generator=gen)
  losses = []
  model.train()
  for i in range(steps):
    idx = order[(i * batch) % len(images):][:batch]
    x = images[idx].float().div_(255.0)
    if v['normalise']:
      x = (x - MEAN) / STD
    loss = F.cross_entropy(model(x), labels[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.item())
    if not math.isfinite(losses[-1]):
      break
  return losses


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--data_dir', default=os.environ.get(
      'KMNIST_JAX_DATA_DIR', '/work/shared/data/kmnist'))
  p.add_argument('--steps', type=int, default=60)
  p.add_argument('--seeds', type=int, default=1)
  p.add_argument('--variants', default=','.join(VARIANTS))
  p.add_argument('--out', default='')
  a = p.parse_args()
  imgs = np.load(os.path.join(a.data_dir, 'kmnist-test-imgs.npz'))['arr_0']
  labs = np.load(os.path.join(a.data_dir, 'kmnist-test-labels.npz'))['arr_0']
  images = torch.from_numpy(imgs[:8000]).unsqueeze(1)
  labels = torch.from_numpy(labs[:8000].astype(np.int64))
  results = []
  print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
        f'{a.steps} steps, offline proxy test[:8000]', flush=True)
  for name in a.variants.split(','):
    for seed in range(a.seeds):
      v = dict(CODE, **VARIANTS[name])
      t = time.time()
      losses = run(images, labels, v, a.steps, seed)
      finite = all(math.isfinite(x) for x in losses)
      at = {s: round(losses[s - 1], 3) for s in (1, 10, 20, 30, 40, 60)
            if s <= len(losses)}
      results.append(dict(variant=name, seed=seed, losses=losses,
                          finite=finite))
      print(f'{name:38s} seed {seed}: loss at steps {at}, max '
            f'{max(losses):.3g}, {"finite" if finite else "NON-FINITE at step " + str(len(losses))}'
            f' ({time.time() - t:.0f} s)', flush=True)
  if a.out:
    with open(a.out, 'w') as f:
      json.dump(dict(steps=a.steps, results=results), f)


if __name__ == '__main__':
  main()
