"""PyTorch ports of kmnist_jax's CNNs and ResNets.

Runs in the torch environment (torch is no dependency of kmnist_jax); the
worker that times and trains them is experiments/torch_worker.py.

The models match `kmnist_jax.models.factory` / `resnets` / `densenet` layer by layer
(same shapes, initializers, dropout rates and BatchNorm settings: the
ResNets' heads PyTorch's default weight, their bias zero in hysts' models
and PyTorch's default in the manifold-mixup code's PreActResNet-18).
"""

from __future__ import annotations

import sys

import torch
from torch import nn
import torch.nn.functional as F

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


if __name__ == '__main__':
  print('the worker is: python -m experiments.torch_worker --data_dir DATA, '
        'from the repository root', file=sys.stderr)
  sys.exit(2)
