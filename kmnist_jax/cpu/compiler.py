"""XLA compiler options of the jitted init function.

Measured on XLA:CPU, where compiling a small CNN's step takes longer than
running it. The train and eval steps' options are passed to the training
(`methods.harness.fit(..., compiler_options=...)`): XLA's defaults unless a
caller asks otherwise (the tests' `:smoke` runs, which compile far longer
than they run, ask for LLVM optimisation level 0).
"""

# The init jit runs once: XLA's backend optimisation level 1 compiles it in
# under half the time (keras_cnn: 0.4 against 0.84 s) and computes bitwise
# the same state (tests/test_train.py checks every model). Level 0 would
# compile faster still but rounds the truncated-normal initialisers
# differently.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}
