"""Every shell command of README.md and docs/*.md names things that exist
(issue 34).

The shell blocks are read, their commands split (line continuations,
`&&`, `;`, `for ... do ... done`), and each command is checked without
running it: the program is `.venv/bin/python` (never a bare `python`) or
one of the few setup programs; `-m MODULE` is importable; a script exists;
`kmnist_jax.main`'s flags are absl flags it defines (values parsed by the
flag's own parser), its `--config` file and `:variant` load, and every
`--config.FIELD=...` names a field of that config; `-m experiments.X`'s
options are those the argparse parser of experiments/X.py adds (read from
its source, not imported), with their literal `choices`, and an experiments
script run as a file (`experiments/X.py`, which only names the `-m`
command) is an error; a `pip install -e '.[extra]'`
names extras of pyproject.toml. The checker's own tests feed it made-up
flags, fields, variants and scripts and expect it to object.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib
import re
import shlex
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))
TEST_COMMAND = ".venv/bin/python -m pytest -q -n 2 -m 'not slow'"
MAX_README_LINES = 250

_FENCE = re.compile(r'^([ \t]*)```(\w*)[ \t]*\n(.*?)^\1```', re.M | re.S)
_SHELL = {'bash', 'sh', 'shell', 'console'}
_OPERATORS = {'&&', '||', ';', '|', '&', ';;'}
_KEYWORDS = {'for', 'while', 'if', 'then', 'else', 'fi', 'do', 'done'}
_ASSIGNMENT = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*=')
_WRAPPERS = {'srun', 'env', 'nohup', 'time'}
# Setup programs a page may run besides the project's interpreter.
_SETUP = {'export', 'cd', 'V/bin/pip'}


def shell_blocks(text: str) -> list[tuple[int, str]]:
  """(first line number, dedented body) of each bash/sh fenced block."""
  out = []
  for m in _FENCE.finditer(text):
    if m.group(2) not in _SHELL:
      continue
    indent = len(m.group(1))
    body = '\n'.join(line[indent:] for line in m.group(3).split('\n'))
    out.append((text.count('\n', 0, m.start(3)) + 1, body))
  return out


def commands(block: str) -> list[list[str]]:
  """The simple commands of a shell block, as argument lists."""
  out = []
  for line in re.sub(r'\\\n', ' ', block).split('\n'):
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)  # '#' starts a comment, as in the shell.
    command: list[str] = []
    for word in words + [';']:
      if word in _OPERATORS:
        if command and command[0] not in _KEYWORDS - {'do', 'then', 'else'}:
          while command and command[0] in {'do', 'then', 'else'}:
            command = command[1:]
          if command:
            out.append(command)
        command = []
      else:
        command.append(word)
  return out


@functools.lru_cache(maxsize=None)
def _main_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  import kmnist_jax.main  # pylint: disable=g-import-not-at-top,unused-import
  return flags.FLAGS


@functools.lru_cache(maxsize=None)
def _script_options(path: pathlib.Path) -> dict[str, dict]:
  """--option -> {'value': takes a value, 'choices': literal choices or None}
  for every add_argument call of an argparse script, read from its source."""
  options = {}
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == 'add_argument'):
      continue
    names = [a.value for a in node.args
             if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    keywords = {k.arg: k.value for k in node.keywords}
    action = keywords.get('action')
    takes_value = not (isinstance(action, ast.Constant) and action.value in (
        'store_true', 'store_false', 'count', 'help', 'version'))
    choices = None
    if isinstance(keywords.get('choices'), (ast.Tuple, ast.List)):
      choices = [e.value for e in keywords['choices'].elts
                 if isinstance(e, ast.Constant)]
    for name in names:
      if name.startswith('--'):
        options[name] = dict(value=takes_value, choices=choices)
  return options


@functools.lru_cache(maxsize=None)
def _extras() -> frozenset[str]:
  with open(REPO / 'pyproject.toml', 'rb') as f:
    project = tomllib.load(f)['project']
  return frozenset(project.get('optional-dependencies', {}))


def _load_config(spec: str):
  from kmnist_jax.config import base as configlib  # pylint: disable=g-import-not-at-top
  path, _, variant = spec.partition(':')
  if not (REPO / path).is_file():
    raise ValueError(f'{path}: no such config file')
  return configlib.load_config_file(str(REPO / path), variant)


def _check_main(args: list[str]) -> list[str]:
  fl = _main_flags()
  problems, overrides, config, workdir = [], [], None, False
  i = 0
  while i < len(args):
    word = args[i]
    i += 1
    if not word.startswith('--'):
      problems.append(f'stray argument {word!r}')
      continue
    name, has_value, value = word[2:].partition('=')
    if name.startswith('config.'):
      overrides.append(name[len('config.'):])
      continue
    flag_name = name
    if name not in fl and name.startswith('no') and name[2:] in fl:
      flag_name = name[2:]
      if fl[flag_name].boolean and not has_value:
        continue
    if flag_name not in fl:
      problems.append(f'unknown flag --{name}')
      continue
    flag = fl[flag_name]
    if not has_value and not flag.boolean:
      if i >= len(args):
        problems.append(f'--{name} needs a value')
        continue
      value = args[i]
      i += 1
    if flag_name == 'config':
      try:
        config = _load_config(value)
      except Exception as e:  # pylint: disable=broad-except
        problems.append(f'--config {value}: {e}')
      continue
    if flag_name == 'workdir':
      workdir = True
    if has_value or not flag.boolean:
      try:
        flag.parser.parse(value)
      except Exception as e:  # pylint: disable=broad-except
        problems.append(f'--{name}={value}: {e}')
  if not workdir:
    problems.append('no --workdir')
  for field in overrides:
    if config is None:
      problems.append(f'--config.{field} without a loadable --config')
      continue
    node = config
    for part in field.split('.'):
      if not hasattr(node, 'keys') or part not in node.keys():
        problems.append(f'--config.{field}: the config has no field {part!r}')
        break
      node = node[part]
  return problems


def _check_script(path: pathlib.Path, args: list[str]) -> list[str]:
  if not path.is_file():
    return [f'{path.relative_to(REPO)}: no such script']
  if path.parent != REPO / 'experiments':
    return []
  options = _script_options(path)
  problems = []
  i = 0
  while i < len(args):
    word = args[i]
    i += 1
    if not word.startswith('--'):
      problems.append(f'stray argument {word!r}')
      continue
    name, has_value, value = word.partition('=')
    if name not in options:
      problems.append(f'{path.name}: unknown option {name}')
      continue
    if options[name]['value'] and not has_value:
      if i >= len(args):
        problems.append(f'{name} needs a value')
        continue
      value = args[i]
      i += 1
    choices = options[name]['choices']
    if choices is not None and '$' not in value and value not in choices:
      problems.append(f'{name} {value!r}: not one of {choices}')
  return problems


def check(command: list[str]) -> list[str]:
  """What is wrong with one command: [] when everything it names exists."""
  words = list(command)
  while words and (_ASSIGNMENT.match(words[0]) or words[0] in _WRAPPERS):
    words = words[1:]
  if not words:
    return []
  program, args = words[0], words[1:]
  if program in ('python', 'python3'):
    return [f'bare {program}: use .venv/bin/python']
  if re.fullmatch(r'python3\.\d+', program):
    return [] if args[:2] == ['-m', 'venv'] else [
        f'{program} {" ".join(args)}: only to make a venv']
  if program == '.venv/bin/pip':
    problems = []
    for word in args:
      m = re.fullmatch(r'\.\[([\w,-]+)\]', word)
      if m:
        problems += [f'no extra {e!r} in pyproject.toml'
                     for e in m.group(1).split(',') if e not in _extras()]
    return problems
  if program in _SETUP:
    return []
  if program != '.venv/bin/python':
    return [f'unknown program {program!r}']
  if not args:
    return ['no module or script']
  if args[0] == '-m':
    if len(args) < 2:
      return ['-m without a module']
    module, rest = args[1], args[2:]
    if importlib.util.find_spec(module) is None:
      return [f'no module {module}']
    if module == 'kmnist_jax.main':
      return _check_main(rest)
    if module.startswith('experiments.'):
      return _check_script(
          REPO / 'experiments' / f'{module.partition(".")[2]}.py', rest)
    return []
  script = pathlib.PurePosixPath(args[0])
  if script.parent.name == 'experiments':
    return [f'{args[0]}: run it as -m experiments.{script.stem}']
  return _check_script(REPO / args[0], args[1:])


def _page_commands():
  for page in PAGES:
    for line, block in shell_blocks(page.read_text(encoding='utf-8')):
      for command in commands(block):
        yield pytest.param(command, id=f'{page.relative_to(REPO)}:{line}:'
                           f'{" ".join(command)[:60]}')


@pytest.mark.parametrize('command', list(_page_commands()))
def test_command_names_what_exists(command):
  assert check(command) == [], ' '.join(command)


def test_readme_is_short_and_starts_with_the_two_commands():
  text = (REPO / 'README.md').read_text(encoding='utf-8')
  assert len(text.splitlines()) <= MAX_README_LINES
  first = shell_blocks(text)[0][1]
  assert TEST_COMMAND in first.splitlines()
  setup = commands(first)[:3]
  assert [c[0] for c in setup] == ['python3.12', '.venv/bin/pip',
                                   '.venv/bin/python']
  assert setup[2][:5] == ['.venv/bin/python', '-m', 'kmnist_jax.main',
                          '--config', 'configs/default.py']


def test_no_bare_python_in_inline_code():
  for page in PAGES:
    for m in re.finditer(r'`(python3? [^`]*)`', page.read_text('utf-8')):
      pytest.fail(f'{page.relative_to(REPO)}: bare python in `{m.group(1)}`')


def test_relative_links_resolve():
  for page in PAGES:
    for target in re.findall(r'\]\(([^)\s]+)\)', page.read_text('utf-8')):
      if re.match(r'[a-z]+:', target) or target.startswith('#'):
        continue
      path = (page.parent / target.split('#')[0]).resolve()
      assert path.exists(), f'{page.relative_to(REPO)}: broken link {target}'


def test_pages_have_commands():
  # Guards the extraction itself: a fence regex that stopped matching would
  # make every command test vacuous.
  counts = {p.name: sum(len(commands(b)) for _, b in shell_blocks(
      p.read_text('utf-8'))) for p in PAGES}
  assert counts['README.md'] >= 5
  assert counts['benchmarks.md'] >= 20


GOOD = ['.venv/bin/python', '-m', 'kmnist_jax.main', '--config',
        'configs/default.py:proxy', '--workdir', 'W']


@pytest.mark.parametrize('command,expected', [
    (GOOD + ['--no_such_flag'], 'unknown flag --no_such_flag'),
    (GOOD + ['--config.no_such_field=1'], 'no field'),
    (GOOD + ['--config.learning_rate=0.5', '--mode', 'evaluate'],
     '--mode=evaluate'),
    (GOOD + ['--checkpoint_step', 'last'], '--checkpoint_step=last'),
    (['.venv/bin/python', '-m', 'kmnist_jax.main', '--config',
      'configs/default.py:nosuchvariant', '--workdir', 'W'], 'nosuchvariant'),
    (['.venv/bin/python', '-m', 'kmnist_jax.main', '--config',
      'configs/no_such.py', '--workdir', 'W'], 'no such config file'),
    (['.venv/bin/python', '-m', 'kmnist_jax.main', '--mode', 'eval'],
     'no --workdir'),
    (GOOD + ['extra'], 'stray argument'),
    (['.venv/bin/python', '-m', 'experiments.parity', '--no_such_option',
      '1'], 'unknown option --no_such_option'),
    (['.venv/bin/python', '-m', 'experiments.parity', '--sides', 'neither'],
     'not one of'),
    (['.venv/bin/python', 'experiments/parity.py', '--configs', 'best'],
     'run it as -m experiments.parity'),
    (['.venv/bin/python', '-m', 'experiments.no_such'], 'no module'),
    (['.venv/bin/python', 'tools/no_such.py'], 'no such script'),
    (['.venv/bin/python', '-m', 'kmnist_jax.no_such'], 'no module'),
    (['python', '-m', 'kmnist_jax.main'], 'bare python'),
    (['.venv/bin/pip', 'install', '-e', '.[dev,no_such_extra]'],
     'no_such_extra'),
    (['curl', 'http://example.com'], 'unknown program'),
])
def test_checker_objects(command, expected):
  problems = check(command)
  assert any(expected in p for p in problems), problems


def test_checker_accepts():
  assert check(['.venv/bin/python', '-m', 'experiments.parity', '--sides',
                '$side']) == []  # A shell variable: its value is unknown.
  assert check(GOOD + ['--config.learning_rate=0.5', '--debug', '--nodebug',
                       '--mode=eval', '--checkpoint_step', '100']) == []
  assert check(['KMNIST_JAX_TORCH_PYTHON=V/bin/python', '.venv/bin/python',
                '-m', 'experiments.parity', '--configs', 'best', '--epochs',
                '60', '--torch_python', '', '--eval_every_epoch']) == []


def test_commands_splits_shell():
  block = ('A=1 .venv/bin/python -m x \\\n  --y 1 && .venv/bin/pip install z '
           '# note\nfor s in 0 1; do\n  .venv/bin/python a.py --s $s\ndone\n'
           '#SBATCH --nodes=2\n')
  assert commands(block) == [
      ['A=1', '.venv/bin/python', '-m', 'x', '--y', '1'],
      ['.venv/bin/pip', 'install', 'z'],
      ['.venv/bin/python', 'a.py', '--s', '$s']]
