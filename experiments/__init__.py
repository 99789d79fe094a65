"""Experiments beside kmnist_jax: benchmarks, the PyTorch comparison, tables.

Run each script as a module from the repository root, for example

  .venv/bin/python -m experiments.reproduce --name proxy --variant proxy

Shared code: `bench` (timing, the compiled JAX steps being timed),
`torch_client` (the PyTorch worker process), `report` (machine description,
tables, command lines), `recipe` (a config compressed to N epochs and the
plain recipe the PyTorch side trains from).
"""
