"""The methods, by name: one protocol, one registry.

A method is a module (or any object) that provides

* `NAMES`: the `config.model` values it answers to;
* `check_config(config)`: its own checks of `config`, one line each, before
  the workdir is touched (every field's type and range is checked before it,
  by `config.fields`);
* `fit(config, workdir, compiler_options=None) -> (state or None, summary)`:
  trains or fits on `config.train_split` and scores `eval_split` (and
  `test_split`), in a workdir that the harness has prepared, locked and
  recorded `config` in. The summary has the keys `console.summary_lines`
  reads (`train`, `eval`, `history`, `steps_per_epoch`, `epoch_seconds`,
  `interrupted`); `compiler_options` go to the XLA compilations that it
  owns;
* `probabilities(config, workdir, images, checkpoint_step) ->
  inference.results.Scores`: its class probabilities of uint8 `images`
  (N, 28, 28), from what `fit` saved in `workdir`;

and, where it trains in steps,

* `checkpoint_step(workdir, checkpoint_step) -> int`: the step that
  `probabilities` scores (a fit has one: 0);
* `TRAINS = True`: it has checkpoints and epochs, and `--mode eval` draws its
  eval plots.

`Method` wraps such a module with the defaults of the optional functions.
`methods.harness` runs every method the same way: `main`, the ensembles and
experiments/reproduce.py call `get(config.model)` and branch on nothing.
Adding a method is one new module and its line in `_BUILT_IN`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kmnist_jax.baselines import knn
from kmnist_jax.baselines import svm
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import network


@dataclasses.dataclass(frozen=True)
class Method:
  """A method module's functions (see the module docstring), with the
  defaults of the optional ones."""
  module: Any

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(self.module.NAMES)

  @property
  def trains(self) -> bool:
    return bool(getattr(self.module, 'TRAINS', False))

  def check_config(self, config) -> None:
    self.module.check_config(config)

  def fit(self, config, workdir: str,
          compiler_options: dict | None = None) -> tuple[Any, dict]:
    return self.module.fit(config, workdir, compiler_options)

  def probabilities(self, config, workdir: str, images,
                    checkpoint_step: int = -1):
    return self.module.probabilities(config, workdir, images,
                                     checkpoint_step)

  def checkpoint_step(self, workdir: str, checkpoint_step: int = -1) -> int:
    """The step `probabilities` scores; a fit has one: 0."""
    if not hasattr(self.module, 'checkpoint_step'):
      return 0
    return self.module.checkpoint_step(workdir, checkpoint_step)


# The built-in methods, one line each.
_BUILT_IN = (
    network,  # Every network of models.factory.MODELS.
    knn,  # knn, pca_knn.
    svm,  # svm.
)
_METHODS: dict[str, Method] = {}


def register(module) -> Method:
  """Registers the method `module` provides under each of its names."""
  method = Method(module)
  taken = [n for n in method.names if n in _METHODS]
  if taken:
    raise ValueError(f'method names already registered: {", ".join(taken)}')
  for name in method.names:
    _METHODS[name] = method
  return method


for _module in _BUILT_IN:
  register(_module)


def names() -> list[str]:
  """Every registered `config.model` value, sorted."""
  return sorted(_METHODS)


def get(name: str) -> Method:
  """The method of `config.model` `name`; an unknown name lists the valid
  ones."""
  if name not in _METHODS:
    raise UserError(f'config.model: unknown model {name!r}; valid: '
                    f'{", ".join(names())}')
  return _METHODS[name]
