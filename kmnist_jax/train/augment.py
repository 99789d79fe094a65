"""On-device augmentation for the jitted train step, and test-time augmentation.

Everything here is traced inside `jax.jit`. Per-example randomness comes from
`fold_in(key, example_index)`, so a batch's augmentation is a pure function
of (train-state key, step): a resumed run replays an uninterrupted one. No
flips anywhere: Kuzushiji characters are not mirror-symmetric.

Config fields (see `configlib.base_config`; 0 switches each off):

* `augment_translate`: random translation by up to this many pixels in each
  direction (the random crop of the zero-padded image).
* `cutout_size`: Cutout (DeVries & Taylor 2017): a size x size square set to
  `cutout_fill` (default 0, black) at a uniformly random centre, clipped at
  the border.
* `mixup_alpha`: input mixup (Zhang et al. 2018), one Beta(alpha, alpha)
  weight per batch.
* `manifold_mixup_alpha`: manifold mixup (Verma et al. 2019): the model mixes
  its hidden states at a random point (see `kmnist_jax.models.resnets`).
* `tta_shift`: test-time augmentation: the mean probability over the 9
  translations by (dy, dx) in {-s, 0, s}^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from kmnist_jax.models import resnets
from kmnist_jax.core import streams
from kmnist_jax.core.errors import UserError


def check_config(config) -> None:
  """One clear line for a bad augmentation field."""
  for name, high in (('augment_translate', 14), ('cutout_size', 28),
                     ('tta_shift', 14)):
    v = config[name]
    if not isinstance(v, int) or not 0 <= v <= high:
      raise UserError(f'config.{name}={v!r}: expected an integer in '
                      f'[0, {high}] (0 = off)')
  for name in ('mixup_alpha', 'manifold_mixup_alpha'):
    v = config[name]
    if not isinstance(v, (int, float)) or v < 0:
      raise UserError(f'config.{name}={v!r}: expected a number >= 0 (0 = off)')
  v = config['cutout_fill']
  if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
    raise UserError(f'config.cutout_fill={v!r}: expected a pixel value in '
                    '[0, 1]')
  if config['mixup_alpha'] and config['manifold_mixup_alpha']:
    raise UserError('config.mixup_alpha and config.manifold_mixup_alpha are '
                    'both set; expected at most one (manifold mixup already '
                    'mixes the input as one of its points)')
  if (config['manifold_mixup_alpha']
      and config.model not in resnets.MIXUP_POINTS):
    raise UserError(f'config.manifold_mixup_alpha needs a model with mixing '
                    f'points ({", ".join(sorted(resnets.MIXUP_POINTS))}); '
                    f'got config.model={config.model!r}')


def example_keys(key: jax.Array, n: int) -> jax.Array:
  """One key per example: fold_in(key, i) for i < n."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def translate(x: jax.Array, key: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each image of (B, H, W, C) by its own offset in [-s, s]^2,
  filling with zeros (a random crop of the image padded by s)."""
  if not max_shift:
    return x
  b, h, w, c = x.shape
  s = max_shift
  offsets = jax.vmap(lambda k: jax.random.randint(k, (2,), 0, 2 * s + 1))(
      example_keys(key, b))
  padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)))
  crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def cutout(x: jax.Array, key: jax.Array, size: int,
           fill: float = 0.0) -> jax.Array:
  """Sets a size x size square per image to `fill`, centred uniformly at
  random in the image and clipped at its border."""
  if not size:
    return x
  b, h, w, _ = x.shape
  centres = jax.vmap(lambda k: jax.random.randint(
      k, (2,), 0, jnp.array([h, w])))(example_keys(key, b))
  top = centres[:, 0] - size // 2
  left = centres[:, 1] - size // 2
  rows = jnp.arange(h)[None, :]
  cols = jnp.arange(w)[None, :]
  in_r = (rows >= top[:, None]) & (rows < top[:, None] + size)
  in_c = (cols >= left[:, None]) & (cols < left[:, None] + size)
  hole = in_r[:, :, None] & in_c[:, None, :]
  return jnp.where(hole[..., None], fill, x).astype(x.dtype)


def mix_params(key: jax.Array, alpha: float, batch: int):
  """(lam, perm): one Beta(alpha, alpha) weight and a batch permutation."""
  k_lam, k_perm = jax.random.split(key)
  lam = jax.random.beta(k_lam, alpha, alpha)
  return lam, jax.random.permutation(k_perm, batch)


def mix(a: jax.Array, lam, perm) -> jax.Array:
  return lam * a + (1.0 - lam) * a[perm]


def train_transform(config, x: jax.Array, y: jax.Array, num_classes: int,
                    key: jax.Array):
  """Augments a float batch: returns (x, soft targets, model kwargs).

  With every augmentation field at 0 this is (x, one_hot(y), {}): the
  train step computes exactly what it computes without augmentation.
  """
  targets = jax.nn.one_hot(y, num_classes)
  kwargs = {}
  sub = lambda tag: jax.random.fold_in(key, tag)
  x = translate(x, sub(streams.TRANSLATE),
                config['augment_translate'])
  x = cutout(x, sub(streams.CUTOUT), config['cutout_size'],
             config['cutout_fill'])
  alpha = config['mixup_alpha']
  if alpha:
    lam, perm = mix_params(sub(streams.MIXUP), alpha, x.shape[0])
    x, targets = mix(x, lam, perm), mix(targets, lam, perm)
  alpha = config['manifold_mixup_alpha']
  if alpha:
    k_mix, k_layer = jax.random.split(sub(streams.MIXUP))
    lam, perm = mix_params(k_mix, alpha, x.shape[0])
    layer = jax.random.randint(k_layer, (), 0,
                               resnets.MIXUP_POINTS[config.model])
    targets = mix(targets, lam, perm)
    kwargs['mixup'] = (lam.astype(x.dtype), perm, layer)
  return x, targets, kwargs


def soft_cross_entropy(logits, targets, label_smoothing: float):
  """Cross-entropy against soft targets, after optional label smoothing."""
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def shift(x: jax.Array, dy: int, dx: int) -> jax.Array:
  """Translates (B, H, W, C) by a static (dy, dx), filling with zeros."""
  b, h, w, c = x.shape
  p = max(abs(dy), abs(dx))
  if not p:
    return x
  padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return padded[:, p - dy:p - dy + h, p - dx:p - dx + w]


def tta_offsets(s: int) -> list[tuple[int, int]]:
  return [(dy, dx) for dy in (-s, 0, s) for dx in (-s, 0, s)] if s else [(0, 0)]


def tta_logits(apply_fn, x: jax.Array, s: int) -> jax.Array:
  """`apply_fn(x)` without TTA; else log of the mean softmax over the 9
  shifted views, which softmax / argmax / cross-entropy treat as logits."""
  if not s:
    return apply_fn(x)
  views = jnp.stack([shift(x, dy, dx) for dy, dx in tta_offsets(s)])
  # lax.map: one copy of the network in the compiled program, not nine.
  probs = jax.lax.map(
      lambda v: jax.nn.softmax(apply_fn(v).astype(jnp.float32)), views)
  return jnp.log(jnp.mean(probs, axis=0))
