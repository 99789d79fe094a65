"""kmnist-jax: Kuzushiji-MNIST and Kuzushiji-49 recognition in JAX/Flax."""

from kmnist_jax.core.errors import UserError

__all__ = ['UserError']
__version__ = '0.1.0'
