"""The networks' numeric precision: their layers' compute dtype and the
precision their convolutions and matmuls are traced under (the steps'
`steps.precision_scope`)."""

from __future__ import annotations

import jax.numpy as jnp

# config.compute_dtype: the layers' compute dtype; params stay float32.
COMPUTE_DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}
# config.matmul_precision: 'default' is JAX's; 'bfloat16' traces the steps
# under jax.default_matmul_precision('bfloat16'): convolutions and matmuls
# take bfloat16 operands and sum in float32 (on XLA:CPU the convolutions run
# oneDNN's bfloat16 kernels, kmnist_jax.cpu.conv); the rest stays float32.
MATMUL_PRECISIONS = ('default', 'bfloat16')

