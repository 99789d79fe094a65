"""The package's layout (issues 19 and 33): no import cycle, no import that
runs back up the layers, small modules, short functions."""

import ast
import inspect
import pathlib

from kmnist_jax.train import loop

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'kmnist_jax'
MAX_MODULE_LINES = 450
MAX_LOOP_LINES = 100
MAX_FUNCTION_LINES = 80
# The layers, lowest first: a module imports its own layer's and lower
# layers' modules only. In the order data -> model -> step -> checkpoint ->
# predict, under the methods and the CLI.
LAYERS = (
    ('kmnist_jax.core',),  # errors, files, console, devices, metrics
    ('kmnist_jax.cpu',),  # the XLA:CPU speed code
    ('kmnist_jax.data',),  # datasets, splits, downloads, training batches
    ('kmnist_jax.report',),  # plots
    ('kmnist_jax.models',),  # the networks
    ('kmnist_jax.train',),  # optimizers, steps, checkpoints, the loop
    ('kmnist_jax.config',),  # config fields, checks, the workdir's record
    ('kmnist_jax.inference', 'kmnist_jax.baselines'),  # restore, score, fit
    ('kmnist_jax.methods',),  # the method registry and the harness
    ('kmnist_jax.main', 'kmnist_jax.cli', 'kmnist_jax.runtime',
     'kmnist_jax.config_help',
     'kmnist_jax'),  # the CLI and process setup
)


def _modules() -> dict[str, pathlib.Path]:
  """'kmnist_jax.x.y' -> path, for every module of the package."""
  out = {}
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    if parts[-1] == '__init__':
      parts = parts[:-1]
    out['.'.join(parts)] = path
  return out


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """The package modules `name` imports, at the top or inside functions."""
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                 for a in node.names]
    else:
      continue
    for target in targets:
      while target and target not in modules:
        target = target.rpartition('.')[0]
      if target and target != name and target != 'kmnist_jax':
        found.add(target)
  return found


def import_graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules)
          for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
  """One import cycle of `graph` as [a, b, ..., a], or []."""
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 'open':
        return stack[stack.index(dep):] + [dep]
      if dep not in state:
        cycle = visit(dep)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return []

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return []


def test_find_cycle_finds_the_cycles_of_the_old_layout():
  old = {'kmnist_jax.train': {'kmnist_jax.knn', 'kmnist_jax.plots'},
         'kmnist_jax.knn': {'kmnist_jax.train'},
         'kmnist_jax.plots': set()}
  assert find_cycle(old) == ['kmnist_jax.knn', 'kmnist_jax.train',
                             'kmnist_jax.knn']
  assert find_cycle({'a': {'b'}, 'b': set()}) == []


def test_no_import_cycle():
  graph = import_graph()
  assert 'kmnist_jax.train.steps' in graph['kmnist_jax.train.loop']
  assert find_cycle(graph) == []


def layer(module: str) -> int:
  """The index in `LAYERS` of `module`'s layer."""
  for i, prefixes in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in prefixes):
      return i
  raise AssertionError(f'{module}: in no layer of LAYERS')


def test_every_module_has_a_layer():
  for name in _modules():
    layer(name)


def test_no_import_runs_back_up():
  up = sorted(f'{name} -> {dep}'
              for name, deps in import_graph().items() for dep in deps
              if layer(dep) > layer(name))
  assert not up, f'imports that run back up the layers: {up}'


def test_the_trainer_imports_no_method():
  graph = import_graph()
  trainer = {d for n, deps in graph.items() if n.startswith('kmnist_jax.train')
             for d in deps}
  assert not {d for d in trainer if d.startswith('kmnist_jax.baselines')}
  assert 'kmnist_jax.train.loop' not in graph['kmnist_jax.baselines.knn']


def test_no_module_is_long():
  long = {name: n for name, path in _modules().items()
          if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
  assert not long, f'modules over {MAX_MODULE_LINES} lines: {long}'


def test_the_training_loop_is_short():
  lines = inspect.getsource(loop.train).splitlines()
  assert len(lines) <= MAX_LOOP_LINES, len(lines)


# experiments/ (issue 33): a package like kmnist_jax, held to the same sizes.

EXPERIMENTS = PACKAGE.parent / 'experiments'


def _long_functions(root: pathlib.Path) -> dict[str, int]:
  """'file.py:Class.function' -> lines (def to last line, decorators
  included) of each function under `root` longer than MAX_FUNCTION_LINES."""
  long = {}

  def visit(node, prefix, path):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                            ast.ClassDef)):
        name = f'{prefix}{child.name}'
        if not isinstance(child, ast.ClassDef):
          first = min([child.lineno] + [d.lineno for d in
                                        child.decorator_list])
          n = child.end_lineno - first + 1
          if n > MAX_FUNCTION_LINES:
            long[f'{path.relative_to(root.parent)}:{name}'] = n
        visit(child, name + '.', path)
      else:
        visit(child, prefix, path)

  for path in sorted(root.rglob('*.py')):
    visit(ast.parse(path.read_text(), str(path)), '', path)
  return long


def test_long_functions_finds_a_long_method(tmp_path):
  root = tmp_path / 'pkg'
  root.mkdir()
  body = '\n'.join(f'    x = {i}' for i in range(MAX_FUNCTION_LINES))
  (root / 'm.py').write_text(f'class A:\n  def f(self):\n{body}\n'
                             '  def g(self):\n    return 1\n')
  assert _long_functions(root) == {
      'pkg/m.py:A.f': MAX_FUNCTION_LINES + 1}


def test_no_experiments_module_is_long():
  long = {path.name: n for path in sorted(EXPERIMENTS.rglob('*.py'))
          if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
  assert not long, f'modules over {MAX_MODULE_LINES} lines: {long}'


def test_no_experiments_function_is_long():
  long = _long_functions(EXPERIMENTS)
  assert not long, f'functions over {MAX_FUNCTION_LINES} lines: {long}'


def test_experiments_import_as_a_package():
  """No experiments file edits sys.path: they import `experiments.x`."""
  assert (EXPERIMENTS / '__init__.py').is_file()
  edits = [path.name for path in sorted(EXPERIMENTS.rglob('*.py'))
           if 'sys.path.insert' in path.read_text()
           or 'sys.path.append' in path.read_text()]
  assert not edits, f'sys.path edited in {edits}'


def test_no_function_is_long():
  long = _long_functions(PACKAGE)
  assert not long, f'functions over {MAX_FUNCTION_LINES} lines: {long}'
