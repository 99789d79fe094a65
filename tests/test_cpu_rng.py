"""kmnist_jax.cpu.rng: dropout masks bit for bit equal to jax.random.bernoulli."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kmnist_jax import cpu
from kmnist_jax.cpu import rng


@pytest.mark.parametrize('key, count, expected', [
    # Known-answer vectors of Threefry-2x32, 20 rounds (Random123; the same
    # ones jax's own tests use).
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3),
     (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(key, count, expected):
  u = lambda v: jnp.asarray(v, jnp.uint32)
  out = rng.threefry2x32(u(key[0]), u(key[1]), u(count[0]), u(count[1]))
  assert tuple(int(v) for v in out) == expected


@pytest.mark.parametrize('shape', [(1,), (7,), (3, 5), (128, 128),
                                   (16, 12, 12, 64), (2, 3, 1, 5, 1)])
@pytest.mark.parametrize('p', [0.5, 0.75, 0.8, 0.01])
def test_bernoulli_equals_jax_bit_for_bit(shape, p):
  for seed in (0, 1, 2 ** 31 + 5):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 3)
    want = jax.random.bernoulli(key, p, shape)
    got = jax.jit(rng.bernoulli, static_argnums=(1, 2))(key, p, shape)
    assert got.shape == want.shape and got.dtype == want.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # The fraction kept is p (a wrong bit-to-float step would skew it).
  if np.prod(shape) >= 10_000:
    assert abs(float(got.mean()) - p) < 0.02


def test_typed_keys_and_fallbacks():
  typed = jax.random.key(11)
  np.testing.assert_array_equal(rng.bernoulli(typed, 0.3, (9, 9)),
                                jax.random.bernoulli(typed, 0.3, (9, 9)))
  # Another PRNG implementation and a scalar shape go to jax itself.
  rbg = jax.random.key(11, impl='rbg')
  assert not rng._fast_path(rbg)  # pylint: disable=protected-access
  np.testing.assert_array_equal(rng.bernoulli(rbg, 0.3, (9, 9)),
                                jax.random.bernoulli(rbg, 0.3, (9, 9)))
  assert rng.bernoulli(typed, 0.3, ()).shape == ()


def test_mask_has_no_loop_left():
  """The point of the module: the compiled mask is one fused loop on CPU."""
  key = jax.random.PRNGKey(0)
  fast = jax.jit(lambda k: rng.bernoulli(k, 0.75, (64, 12, 12, 64)))
  slow = jax.jit(lambda k: jax.random.bernoulli(k, 0.75, (64, 12, 12, 64)))
  hlo = lambda f: f.lower(key).compile().as_text()
  if jax.default_backend() == 'cpu':
    assert ' while(' in hlo(slow)  # jax's rolled CPU lowering, still there.
  assert ' while(' not in hlo(fast)


def test_dropout_matches_the_where_formulation():
  """cpu.dropout: the values and gradients of jnp.where(keep, x / q, 0)."""
  key = jax.random.PRNGKey(4)
  x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(5), (8, 12, 12, 64)))
  rate = 0.25

  def where_form(x):
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)

  ours = lambda x: cpu.dropout(x, rate, True, key)
  np.testing.assert_array_equal(ours(x), where_form(x))
  g = jax.random.normal(jax.random.PRNGKey(6), x.shape)
  np.testing.assert_array_equal(jax.vjp(ours, x)[1](g)[0],
                                jax.vjp(where_form, x)[1](g)[0])
  dropped = float((ours(x) == 0).mean())
  assert 0.2 < dropped < 0.8  # Some kept, some dropped.
  np.testing.assert_array_equal(cpu.dropout(x, rate, False, key), x)


def test_another_backend_gets_jax_bernoulli_itself(monkeypatch):
  """On a GPU (faked) the mask is jax.random.bernoulli's own computation:
  its random_bits, not the unrolled CPU copy."""
  key = jax.random.PRNGKey(7)
  # A new function per trace: jax caches traces by function.
  jaxpr = lambda: str(jax.make_jaxpr(lambda k: rng.bernoulli(k, 0.75, (4, 5)))(
      key))
  assert 'random_bits' not in jaxpr()
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert not rng._fast_path(key)  # pylint: disable=protected-access
  assert 'random_bits' in jaxpr()
