"""XLA compiler options of the jitted init, train and eval functions.

Both were measured on XLA:CPU, where compiling a small CNN's step takes longer
than running it; `kmnist_jax.train.steps` reads them at jit time.
"""

from __future__ import annotations

from typing import Any

# XLA compiler options of the train, eval and init jits (None: XLA's
# defaults). The test suite sets LLVM optimisation level 0 for its `:smoke`
# runs, which compile far longer than they run.
COMPILER_OPTIONS: dict[str, Any] | None = None

# The init jit runs once: XLA's backend optimisation level 1 compiles it in
# under half the time (keras_cnn: 0.4 against 0.84 s) and computes bitwise
# the same state (tests/test_train.py checks every model). Level 0 would
# compile faster still but rounds the truncated-normal initialisers
# differently.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}
