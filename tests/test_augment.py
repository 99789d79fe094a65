"""On-device augmentation, TTA, and their wiring into the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kmnist_jax.train import augment
from kmnist_jax.config import base as configlib
from kmnist_jax.train import steps
from kmnist_jax.train import loop as train
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness


def images(n=8, seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), (n, 28, 28, 1))


def config(**kw):
  c = configlib.base_config()
  c.update(kw)
  return c


def test_disabled_is_identity():
  x, y = images(), jnp.arange(8) % 10
  out, targets, kwargs = augment.train_transform(config(), x, y, 10,
                                                 jax.random.PRNGKey(0))
  assert out is x and kwargs == {}
  np.testing.assert_array_equal(targets, jax.nn.one_hot(y, 10))


def test_soft_cross_entropy_equals_train_cross_entropy():
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 10))
  y = jnp.array([0, 3, 9, 1, 1])
  for ls in (0.0, 0.1):
    np.testing.assert_array_equal(
        augment.soft_cross_entropy(logits, jax.nn.one_hot(y, 10), ls),
        steps.cross_entropy(logits, y, 10, ls))


@pytest.mark.parametrize('s', [1, 2, 4])
def test_translate_is_a_per_example_shift(s):
  x = images(16)
  out = np.asarray(augment.translate(x, jax.random.PRNGKey(3), s))
  np.testing.assert_array_equal(
      out, augment.translate(x, jax.random.PRNGKey(3), s))  # Deterministic.
  seen = set()
  for i in range(16):
    match = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
             if np.array_equal(out[i], augment.shift(x[i:i + 1], dy, dx)[0])]
    assert match, f'example {i} is not a shift within {s} pixels'
    seen.add(match[0])
  assert len(seen) > 1  # Offsets differ between examples.


def test_shift_never_flips():
  x = jnp.zeros((1, 28, 28, 1)).at[0, 5, 3, 0].set(1.0)
  assert float(augment.shift(x, 1, 2)[0, 6, 5, 0]) == 1.0
  assert float(augment.shift(x, -1, -2)[0, 4, 1, 0]) == 1.0
  assert float(augment.shift(x, 1, 2).sum()) == 1.0


def test_cutout_zeroes_one_clipped_square_per_image():
  x = jnp.ones((32, 28, 28, 1))
  out = np.asarray(augment.cutout(x, jax.random.PRNGKey(0), 14))[..., 0]
  areas = set()
  for img in out:
    rows, cols = np.nonzero(img == 0)
    assert rows.size > 0
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert h <= 14 and w <= 14 and rows.size == h * w  # A full rectangle.
    areas.add(rows.size)
  assert 196 in areas and len(areas) > 1  # Whole squares and clipped ones.
  assert augment.cutout(x, jax.random.PRNGKey(0), 0) is x


def test_mixup_mixes_images_and_targets_alike():
  y = jnp.arange(8) % 10
  x = jnp.broadcast_to(y[:, None, None, None].astype(jnp.float32),
                       (8, 28, 28, 1))
  out, targets, kwargs = augment.train_transform(
      config(mixup_alpha=1.0), x, y, 10, jax.random.PRNGKey(1))
  assert kwargs == {}
  np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
  # Each image's value is the target-weighted mean of the label values.
  np.testing.assert_allclose(out[:, 0, 0, 0], targets @ jnp.arange(10.0),
                             rtol=1e-5)
  assert not np.allclose(out, x)


def test_manifold_mixup_kwargs():
  y = jnp.arange(8) % 10
  layers = set()
  for seed in range(12):
    x, targets, kwargs = augment.train_transform(
        config(model='preact_resnet18', manifold_mixup_alpha=2.0), images(),
        y, 10, jax.random.PRNGKey(seed))
    lam, perm, layer = kwargs['mixup']
    assert 0.0 <= float(lam) <= 1.0
    assert sorted(np.asarray(perm).tolist()) == list(range(8))
    np.testing.assert_allclose(
        targets, lam * jax.nn.one_hot(y, 10)
        + (1 - lam) * jax.nn.one_hot(y, 10)[perm], rtol=1e-6)
    layers.add(int(layer))
  assert layers == {0, 1, 2}


@pytest.mark.parametrize('fields, match', [
    (dict(augment_translate=-1), 'augment_translate'),
    (dict(cutout_size=40), 'cutout_size'),
    (dict(mixup_alpha=-0.5), 'mixup_alpha'),
    (dict(mixup_alpha=1.0, manifold_mixup_alpha=2.0), 'at most one'),
    (dict(model='keras_cnn', manifold_mixup_alpha=2.0), 'mixing points'),
])
def test_config_errors(fields, match):
  with pytest.raises(UserError, match=match):
    augment.check_config(config(**fields))
  with pytest.raises(UserError, match=match):
    train.check_config(config(**fields))


def test_tta():
  x = images(4)
  apply = lambda v: jnp.stack([v.mean((1, 2, 3)), -v.mean((1, 2, 3))], -1)
  np.testing.assert_array_equal(augment.tta_logits(apply, x, 0), apply(x))
  assert len(augment.tta_offsets(1)) == 9
  logp = augment.tta_logits(apply, x, 1)
  np.testing.assert_allclose(jnp.exp(logp).sum(-1), 1.0, rtol=1e-6)
  # Shift-invariant content (a centred blob) keeps its prediction.
  blob = jnp.zeros((1, 28, 28, 1)).at[0, 10:18, 10:18, 0].set(1.0)
  np.testing.assert_allclose(
      augment.tta_logits(apply, blob, 1),
      jax.nn.log_softmax(apply(blob)), rtol=1e-5)


def test_augmented_training_runs_and_is_deterministic(learnable_data_dir,
                                                      tmp_path):
  c = config(model='seed_cnn', data_dir=str(learnable_data_dir),
             train_split='train', eval_split='test', num_epochs=1,
             batch_size=32, eval_batch_size=100, write_plots=False,
             learning_rate=3e-3, augment_translate=2, cutout_size=6,
             mixup_alpha=0.4, tta_shift=1)
  _, m1 = harness.fit(c, str(tmp_path / 'a'))
  _, m2 = harness.fit(c, str(tmp_path / 'b'))
  assert np.isfinite(m1['train']['loss'])
  assert m1['train'] == m2['train'] and m1['eval'] == m2['eval']
  c2 = config(**{k: c[k] for k in c}); c2.augment_translate = 0
  _, m3 = harness.fit(c2, str(tmp_path / 'c'))
  assert m3['train']['loss'] != m1['train']['loss']
