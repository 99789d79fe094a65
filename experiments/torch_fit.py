"""A recipe-driven PyTorch training loop for experiments/parity.py (issue 16).

`fit(recipe, seed, data, models)` trains one of the PyTorch ports in
experiments/torch_models.py on the recipe that `experiments/parity.py`
derives from a kmnist_jax config (a plain dict; see `parity.torch_recipe`),
and returns the final eval accuracy, the seconds of each epoch and the loss
of each of the first train steps. The worker of torch_models.py runs it as
its `fit` command. Nothing here calls JAX or kmnist_jax: the augmentations,
the loss and the schedule are written again from what kmnist_jax documents
(kmnist_jax/train/augment.py, optim.py, models.Normalized):

* each epoch a fresh permutation of the train images; the last partial batch
  is dropped;
* pixels / 255, then a random crop of the image zero-padded by
  `augment_translate` (per-image offsets), then Cutout (a `cutout_size`
  square set to `cutout_fill`, centre uniform in the image, clipped), then
  input mixup (one Beta(alpha, alpha) weight per batch, a batch
  permutation, targets mixed alike); then (x - input_mean) / input_std;
* manifold mixup: one weight, permutation and mixing point per batch, the
  point drawn from range(mixup_points): 0 mixes the (normalised) input, k
  the output of stage k (a forward hook on the stage's last block; the model
  classes are not changed);
* cross-entropy against the soft targets after label smoothing
  ((1 - s) * t + s / classes);
* SGD (momentum, Nesterov) / Adam / AdamW / Adadelta of torch.optim with
  coupled weight decay as `optax.add_decayed_weights` before the update;
  optional global-norm gradient clipping first; the learning rate set
  before every step from `schedules.lr_at`;
* eval in eval mode (BatchNorm running statistics), batches of
  `eval_batch_size`; with `tta_shift` the mean softmax over the 9 views
  shifted by {-s, 0, s}^2 with zero fill (before normalising);
* `mode`: 'f32', or PyTorch's bfloat16 CPU autocast around the forward
  passes and the loss ('bf16'), with the model and its inputs in
  `channels_last` as well ('bf16_cl'), as Intel and PyTorch advise on a CPU
  with bfloat16 support (the modes of torch_worker's throughput commands).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from experiments import schedules

# Stages of each port: manifold mixup point k mixes the output of stage k.
STAGES = {'preact_resnet18': 4, 'resnet_preact20': 3,
          'shake_shake26_2x96d': 3}


def translate(x: torch.Tensor, s: int, gen: torch.Generator) -> torch.Tensor:
  """(B, C, H, W): each image cropped from its zero-padded copy at its own
  offset in [0, 2s]^2, i.e. shifted by up to s pixels each way."""
  if not s:
    return x
  b, c, h, w = x.shape
  padded = F.pad(x, (s, s, s, s))
  off = torch.randint(0, 2 * s + 1, (b, 2), generator=gen)
  rows = (off[:, 0, None] + torch.arange(h))[:, None, :, None]
  cols = (off[:, 1, None] + torch.arange(w))[:, None, None, :]
  return padded[torch.arange(b)[:, None, None, None],
                torch.arange(c)[None, :, None, None], rows, cols]


def cutout(x: torch.Tensor, size: int, fill: float,
           gen: torch.Generator) -> torch.Tensor:
  """A size x size square per image set to `fill`, its centre uniform over
  the image's pixels, clipped at the border."""
  if not size:
    return x
  b, _, h, w = x.shape
  top = torch.randint(0, h, (b,), generator=gen) - size // 2
  left = torch.randint(0, w, (b,), generator=gen) - size // 2
  r, c = torch.arange(h)[None, :], torch.arange(w)[None, :]
  in_r = (r >= top[:, None]) & (r < top[:, None] + size)
  in_c = (c >= left[:, None]) & (c < left[:, None] + size)
  hole = (in_r[:, :, None] & in_c[:, None, :])[:, None]
  return torch.where(hole, torch.full_like(x, fill), x)


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
  """(B, C, H, W) translated by (dy, dx) with zero fill."""
  p = max(abs(dy), abs(dx))
  if not p:
    return x
  h, w = x.shape[2:]
  return F.pad(x, (p, p, p, p))[:, :, p - dy:p - dy + h, p - dx:p - dx + w]


def soft_cross_entropy(logits, targets, label_smoothing: float):
  if label_smoothing:
    targets = (1.0 - label_smoothing) * targets + (
        label_smoothing / targets.shape[1])
  return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def make_optimizer(recipe: dict, params):
  name, wd = recipe['optimizer'], recipe['weight_decay']
  if name == 'sgd':
    m = recipe['momentum'] or 0.0
    return torch.optim.SGD(params, lr=recipe['learning_rate'], momentum=m,
                           nesterov=bool(recipe['nesterov'] and m),
                           weight_decay=wd)
  betas = (recipe['beta1'], recipe['beta2'])
  if name == 'adam':
    return torch.optim.Adam(params, lr=recipe['learning_rate'], betas=betas,
                            eps=recipe['eps'], weight_decay=wd)
  if name == 'adamw':
    return torch.optim.AdamW(params, lr=recipe['learning_rate'], betas=betas,
                             eps=recipe['eps'], weight_decay=wd)
  if name == 'adadelta':
    return torch.optim.Adadelta(params, lr=recipe['learning_rate'],
                                rho=recipe['rho'], eps=recipe['eps'],
                                weight_decay=wd)
  raise ValueError(f'optimizer {name!r}: no PyTorch counterpart here')


def _normalise(x, recipe):
  mean, std = recipe['input_mean'], recipe['input_std']
  return x if (mean, std) == (0.0, 1.0) else (x - mean) / std


def _mix(t, lam, perm):
  return lam * t + (1.0 - lam) * t[perm]


class Augmenter:
  """The recipe's train-time transform; its own seeded random streams."""

  def __init__(self, recipe: dict, model, seed: int):
    self.r = recipe
    self.gen = torch.Generator().manual_seed(seed)
    self.rng = np.random.default_rng(seed)
    self.hook_sites = []
    if recipe['manifold_mixup_alpha']:
      blocks = model.blocks
      per = len(blocks) // STAGES[recipe['model']]
      # Point k >= 1: after the last block of stage k.
      self.hook_sites = [None] + [blocks[k * per - 1]
                                  for k in range(1, recipe['mixup_points'])]

  def __call__(self, x, y, num_classes):
    """(model input, soft targets, forward hook handle or None)."""
    r, b = self.r, x.shape[0]
    targets = F.one_hot(y, num_classes).float()
    x = translate(x, r['augment_translate'], self.gen)
    x = cutout(x, r['cutout_size'], r['cutout_fill'], self.gen)
    if r['mixup_alpha']:
      lam = float(self.rng.beta(r['mixup_alpha'], r['mixup_alpha']))
      perm = torch.randperm(b, generator=self.gen)
      x, targets = _mix(x, lam, perm), _mix(targets, lam, perm)
    x = _normalise(x, r)
    handle = None
    if r['manifold_mixup_alpha']:
      a = r['manifold_mixup_alpha']
      lam = float(self.rng.beta(a, a))
      perm = torch.randperm(b, generator=self.gen)
      point = int(self.rng.integers(0, r['mixup_points']))
      targets = _mix(targets, lam, perm)
      if point == 0:
        x = _mix(x, lam, perm)
      else:
        handle = self.hook_sites[point].register_forward_hook(
            lambda mod, inp, out: _mix(out, lam, perm))
    return x, targets, handle


MODES = ('f32', 'bf16', 'bf16_cl')


def _autocast(mode: str):
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; valid: {", ".join(MODES)}')
  if mode == 'f32':
    return contextlib.nullcontext()
  return torch.autocast('cpu', dtype=torch.bfloat16)


def _layout(x, mode: str):
  return x.contiguous(memory_format=torch.channels_last) if (
      mode == 'bf16_cl') else x


def _in_mode(model, mode: str):
  """The model in `mode`'s memory format; an unknown mode fails here,
  before any training."""
  _autocast(mode)
  return (model.to(memory_format=torch.channels_last) if mode == 'bf16_cl'
          else model)


def evaluate(model, images, labels, recipe: dict, mode: str = 'f32') -> dict:
  """Accuracy and mean loss of uint8 `images` (N, 1, H, W) in eval mode."""
  model.eval()
  s, bs = recipe['tta_shift'], recipe['eval_batch_size']
  views = ([(dy, dx) for dy in (-s, 0, s) for dx in (-s, 0, s)] if s
           else [(0, 0)])
  correct, loss = 0, 0.0
  with torch.inference_mode(), _autocast(mode):
    for i in range(0, len(images), bs):
      x = images[i:i + bs].float().div_(255.0)
      y = labels[i:i + bs]
      probs = torch.stack([
          F.softmax(model(_layout(_normalise(shift(x, dy, dx), recipe),
                                  mode)).float(), dim=1)
          for dy, dx in views]).mean(0)
      log_probs = torch.log(probs)
      correct += int((log_probs.argmax(1) == y).sum())
      loss += float(F.nll_loss(log_probs, y, reduction='sum'))
  return {'accuracy': correct / len(images), 'loss': loss / len(images)}


def fit(recipe: dict, seed: int, data, models: dict,
        steps_curve: int = 300, target: float | None = None,
        eval_every_epoch: bool = False, mode: str = 'f32',
        eval_from_epoch: int = 1) -> dict:
  """Trains `models[recipe['model']]` on `recipe`; see the module doc.

  `target` (experiments/speedrun.py): evaluate after every epoch from
  `eval_from_epoch` on, record `history` (epoch, accuracy, seconds since
  the start, evaluations included) and stop at the first epoch whose
  accuracy reaches it.
  `eval_every_epoch` (experiments/parity.py): the same `history`, no stop.

  `data`: (train images, train labels, eval images, eval labels), uint8
  (N, 1, 28, 28) and int64 tensors; the first `train_examples` and
  `eval_examples` of each are used. Returns accuracy, eval_loss,
  epoch_seconds (training only, no eval), epoch_train_loss, losses (the
  first `steps_curve` steps) and steps_per_epoch.
  """
  images, labels, ev_images, ev_labels = data
  images, labels = (images[:recipe['train_examples']],
                    labels[:recipe['train_examples']])
  ev_images, ev_labels = (ev_images[:recipe['eval_examples']],
                          ev_labels[:recipe['eval_examples']])
  torch.manual_seed(seed)  # Initialisation, dropout, shake-shake weights.
  num_classes = recipe['num_classes']
  model = _in_mode(models[recipe['model']](num_classes=num_classes), mode)
  opt = make_optimizer(recipe, model.parameters())
  augment = Augmenter(recipe, model, seed)
  n, batch = len(images), recipe['batch_size']
  spe = n // batch
  recipe = dict(recipe, steps_per_epoch=spe)
  order = torch.Generator().manual_seed(seed + 1)
  losses, epoch_seconds, epoch_loss, step = [], [], [], 0
  history, t_start = [], time.perf_counter()
  started_at = time.time()  # speedrun.py: seconds from the process start.
  for epoch in range(1, recipe['num_epochs'] + 1):
    model.train()
    t0, total = time.perf_counter(), 0.0
    perm = torch.randperm(n, generator=order)
    for s in range(spe):
      idx = perm[s * batch:(s + 1) * batch]
      x = images[idx].float().div_(255.0)
      x, targets, handle = augment(x, labels[idx], num_classes)
      for group in opt.param_groups:
        group['lr'] = schedules.lr_at(recipe, step)
      opt.zero_grad(set_to_none=True)
      try:
        with _autocast(mode):
          logits = model(_layout(x, mode))
          loss = soft_cross_entropy(logits.float(), targets,
                                    recipe['label_smoothing'])
      finally:
        if handle is not None:
          handle.remove()
      loss.backward()
      if recipe['grad_clip_norm'] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(),
                                       recipe['grad_clip_norm'])
      opt.step()
      value = loss.item()
      total += value
      if step < steps_curve:
        losses.append(value)
      step += 1
    epoch_seconds.append(time.perf_counter() - t0)
    epoch_loss.append(total / spe)
    if eval_every_epoch or (target is not None and epoch >= eval_from_epoch):
      ev = evaluate(model, ev_images, ev_labels, recipe, mode)
      history.append({'epoch': epoch, 'accuracy': ev['accuracy'],
                      'seconds': time.perf_counter() - t_start})
      if target is not None and ev['accuracy'] >= target:
        break
  if (target is None and not eval_every_epoch) or not history:
    ev = evaluate(model, ev_images, ev_labels, recipe, mode)
  return {'accuracy': ev['accuracy'], 'eval_loss': ev['loss'],
          'history': history, 'started_at': started_at,
          'epoch_seconds': epoch_seconds, 'epoch_train_loss': epoch_loss,
          'losses': losses, 'steps_per_epoch': spe,
          'threads': torch.get_num_threads()}
