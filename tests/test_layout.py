"""The package's layout (issue 19): no import cycle, small modules, a short
training loop."""

import ast
import inspect
import pathlib

from kmnist_jax import train

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'kmnist_jax'
MAX_MODULE_LINES = 450
MAX_LOOP_LINES = 100


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
  assert 'kmnist_jax.steps' in graph['kmnist_jax.train']
  assert find_cycle(graph) == []


def test_the_trainer_imports_no_method():
  graph = import_graph()
  assert 'kmnist_jax.knn' not in graph['kmnist_jax.train']
  assert 'kmnist_jax.train' not in graph['kmnist_jax.knn']


def test_no_module_is_long():
  long = {name: n for name, path in _modules().items()
          if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
  assert not long, f'modules over {MAX_MODULE_LINES} lines: {long}'


def test_the_training_loop_is_short():
  lines = inspect.getsource(train.train_and_evaluate).splitlines()
  assert len(lines) <= MAX_LOOP_LINES, len(lines)
