"""Issue 35: every config field is checked once, in every mode; exit codes.

Table-driven: for each field of `fields.FIELDS`, values of the wrong type,
out of range or not finite (derived from the field's spec), each run
through the CLI in train, eval, predict and ensemble mode; each gives exit
2, exactly one `error:` line naming the field, and no traceback. The CLI
runs in this process (`main.main` after absl's flag parsing), so that the
hundreds of cases take seconds; a saved config.json with a bad field is
refused the same way, naming the file.
"""

import contextlib
import io
import json
import math
import pathlib
import sys
import threading

from absl import flags
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.config import fields
from kmnist_jax import cli as cli_lib
from kmnist_jax import main

REPO = pathlib.Path(__file__).resolve().parents[1]
MODES = ('train', 'eval', 'predict', 'ensemble')


def bad_values(spec: fields.Field) -> list:
  """Values `spec` refuses: wrong types, out of range, not finite."""
  if spec.kind in ('int', 'float'):
    out = ['1', None, True, [1]]
    out += [1.5] if spec.kind == 'int' else [math.nan, math.inf, -math.inf]
    if spec.lo != -math.inf:
      out.append(spec.lo if spec.lo_open else spec.lo - 1)
    if spec.hi != math.inf:
      out.append(spec.hi if spec.hi_open else spec.hi + 1)
    if spec.kind == 'int':
      out.append(10**15)  # eval_batch_size=1e15: 696 PiB, once.
    return out
  if spec.kind == 'bool':
    return [1, 'yes', None]
  if spec.kind == 'split':
    return [5, None, 'validation', 'test[5:2:1]', 'test[:200%]']
  if spec.check is not None:  # The dataset.
    return [5, None, 'no_such_dataset']
  return [5, None, ['a']]


CASES = [(name, value) for name, spec in fields.FIELDS.items()
         for value in bad_values(spec)]


def config_file(tmp_path, name, value) -> str:
  """A config file whose `name` is `value`, whatever its type."""
  path = tmp_path / f'bad_{name}.py'
  path.write_text(
      'import ml_collections\n'
      'from kmnist_jax.config import base as configlib\n\n'
      'nan, inf = float("nan"), float("inf")\n\n'
      'def get_config(arg=None):\n'
      '  d = configlib.base_config().to_dict()\n'
      '  d["model"] = "seed_cnn"\n'
      + (f'  d[{name.split(".")[0]!r}] = configlib.SLICES['
         f'{name.split(".")[0]!r}]().to_dict()\n'
         f'  d[{name.split(".")[0]!r}][{name.split(".")[1]!r}] = {value!r}\n'
         if '.' in name else f'  d[{name!r}] = {value!r}\n')
      + '  return ml_collections.ConfigDict(d)\n')
  return str(path)


@pytest.fixture
def cli(monkeypatch):
  """Runs `python -m kmnist_jax.main ARGS` in this process: (rc, stderr)."""
  monkeypatch.setattr(sys, 'unraisablehook', sys.unraisablehook)
  monkeypatch.setattr(threading, 'excepthook', threading.excepthook)
  # A case that got through would not download anything.
  monkeypatch.setenv('KMNIST_JAX_MIRROR', 'http://127.0.0.1:9/')
  monkeypatch.setenv('KMNIST_JAX_MIRROR_ONLY', '1')

  def run(*args):
    err = io.StringIO()
    flags.FLAGS.unparse_flags()
    with contextlib.redirect_stderr(err):
      try:
        argv = cli_lib.parse_flags(['kmnist_jax.main', *args])
        rc = main.main(argv)
      except SystemExit as e:
        rc = e.code
    flags.FLAGS.unparse_flags()
    return rc, err.getvalue()

  return run


def mode_args(mode, workdir) -> list[str]:
  if mode == 'ensemble':
    return ['--mode=eval', f'--workdir={workdir}', f'--ensemble={workdir}2']
  args = [f'--mode={mode}', f'--workdir={workdir}']
  return args + (['--predict_input=x.png'] if mode == 'predict' else [])


def assert_one_line(rc, stderr, *needles):
  assert rc == 2, stderr
  assert 'Traceback' not in stderr, stderr
  lines = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, stderr
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize('name,value', CASES,
                         ids=[f'{n}={v!r}' for n, v in CASES])
def test_a_bad_field_is_one_line_in_every_mode(cli, tmp_path, name, value):
  path = config_file(tmp_path, name, value)
  for mode in MODES:
    rc, stderr = cli('--config', path, *mode_args(mode, tmp_path / 'w'))
    assert_one_line(rc, stderr, f'config.{name}=', 'expected')
  assert not (tmp_path / 'w').exists()


def all_fields() -> set[str]:
  """The base config's fields and the method slices' ('knn.k', ...)."""
  return set(configlib.base_config().keys()) | {
      f'{name}.{key}' for name, make in configlib.SLICES.items()
      for key in make().keys()}


def test_the_table_covers_every_field_of_the_base_config():
  assert set(fields.FIELDS) == all_fields()


@pytest.mark.parametrize('name', sorted(fields.FIELDS))
def test_a_bad_field_in_a_saved_config_is_one_line(cli, tmp_path, name):
  value = bad_values(fields.FIELDS[name])[1]
  workdir = tmp_path / 'w'
  workdir.mkdir()
  config = json.loads(configlib.base_config().to_json())
  config['model'] = 'seed_cnn'
  if '.' in name:
    part, field = name.split('.')
    config[part] = {**configlib.SLICES[part]().to_dict(), field: value}
  else:
    config[name] = value
  (workdir / 'config.json').write_text(json.dumps(config))
  before = (workdir / 'config.json').read_bytes()
  for mode in ('eval', 'predict', 'ensemble'):
    rc, stderr = cli(*mode_args(mode, workdir))
    assert_one_line(rc, stderr, f'{workdir}/config.json: config.{name}=')
  assert (workdir / 'config.json').read_bytes() == before


@pytest.mark.parametrize('returned', ['{"model": "seed_cnn"}', 'None', '42'])
def test_a_config_that_is_not_a_config_dict_is_one_line(cli, tmp_path,
                                                        returned):
  path = tmp_path / 'odd.py'
  path.write_text(f'def get_config(arg=None):\n  return {returned}\n')
  for mode in MODES:
    rc, stderr = cli('--config', str(path), *mode_args(mode, tmp_path / 'w'))
    assert rc == 2 and 'Traceback' not in stderr, stderr
    assert len([l for l in stderr.splitlines()
                if l.startswith('error:')]) == 1, stderr


def test_a_config_that_lacks_fields_is_one_line(cli, tmp_path):
  path = tmp_path / 'short.py'
  path.write_text('import ml_collections\n\ndef get_config(arg=None):\n'
                  '  return ml_collections.ConfigDict({"model": "seed_cnn"})\n')
  for mode in MODES:
    rc, stderr = cli('--config', str(path), *mode_args(mode, tmp_path / 'w'))
    assert_one_line(rc, stderr, 'config lacks field(s) dataset, data_dir',
                    'expected a config built on configlib.base_config()')


def test_every_shipped_config_passes(tmp_path):
  import glob  # pylint: disable=g-import-not-at-top
  for path in sorted(glob.glob(str(fields.__file__).replace(
      'kmnist_jax/config/fields.py', 'configs/*.py'))):
    for variant in ('', 'proxy', 'smoke'):
      fields.check_config(configlib.load_config_file(path, variant))


# --- Signals: Ctrl-C outside the loop, SIGTERM's exit code ------------------


@pytest.mark.parametrize('mode,target', [
    ('train', 'kmnist_jax.main.train_and_evaluate'),
    ('eval', 'kmnist_jax.main.evaluate'),
    ('predict', 'kmnist_jax.inference.predict.main')])
def test_ctrl_c_outside_the_training_loop_is_one_line(cli, tmp_path,
                                                      monkeypatch, mode,
                                                      target):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(target, interrupted)
  args = mode_args(mode, tmp_path / 'w')
  if mode == 'train':
    args += ['--config', str(REPO / 'configs' / 'seed_cnn.py')]
  rc, stderr = cli(*args)
  assert rc == 130 and 'Traceback' not in stderr, stderr
  assert [l for l in stderr.splitlines() if l.startswith('error:')] == [
      'error: interrupted (Ctrl-C); nothing was half-written, rerun the '
      'same command']


@pytest.mark.parametrize('signame,code', [('SIGTERM', 143), ('SIGINT', 130)])
def test_a_signalled_training_exits_interrupted_resumable(
    cli, tmp_path, monkeypatch, caplog, signame, code):
  monkeypatch.setattr('kmnist_jax.main.train_and_evaluate',
                      lambda *a: (None, {'interrupted': signame}))
  del caplog
  rc, stderr = cli('--config', str(REPO / 'configs' / 'seed_cnn.py'),
                   f'--workdir={tmp_path / "w"}')
  assert rc == code
  assert f'Stopped by {signame}; checkpoint saved' in stderr
  assert f'Interrupted, resumable (exit {code})' in stderr


# --- Environment variables --------------------------------------------------

ENV_CASES = [
    ('KMNIST_JAX_MIRROR', 'ftp://example.org/', 'expected the http://'),
    ('KMNIST_JAX_MIRROR', 'http://host:99999/', 'Port out of range'),
    ('KMNIST_JAX_MIRROR', 'http:///kmnist', 'expected the http://'),
    ('KMNIST_JAX_MIRROR', 'http://a b/', 'white space or control'),
    ('KMNIST_JAX_MIRROR', 'example.org/kmnist', 'expected the http://'),
    ('KMNIST_JAX_MIRROR_ONLY', 'maybe', 'expected one of 0, 1'),
    ('KMNIST_JAX_ONEDNN', '2', 'expected one of 0, 1'),
    ('KMNIST_JAX_MALLOC', 'sometimes', 'expected one of 0, 1'),
    ('KMNIST_JAX_COMPILATION_CACHE', '{file}', 'not a folder'),
    ('KMNIST_JAX_DATA_DIR', '{file}', 'not a folder'),
    ('JAX_PLATFORMS', 'gpu,quantum', "unknown platform(s) 'quantum'"),
    ('JAX_PLATFORMS', 'cpu,', "unknown platform(s) ''"),
    ('JAX_PLATFORM_NAME', 'abacus', "unknown platform(s) 'abacus'"),
    ('SLURM_NTASKS', 'two', 'expected an integer >= 1'),
    ('SLURM_NTASKS', '0', 'expected an integer >= 1'),
    ('SLURM_PROCID', '-1', 'expected an integer >= 0'),
    ('OMPI_COMM_WORLD_SIZE', '4x', 'expected an integer >= 1'),
    ('OMPI_COMM_WORLD_RANK', 'first', 'expected an integer >= 0'),
]


@pytest.mark.parametrize('name,value,needle', ENV_CASES,
                         ids=[f'{n}={v}' for n, v, _ in ENV_CASES])
def test_a_malformed_environment_variable_is_one_line_in_every_mode(
    cli, tmp_path, monkeypatch, name, value, needle):
  (tmp_path / 'a_file').write_text('x')
  value = value.format(file=tmp_path / 'a_file')
  monkeypatch.setenv(name, value)
  for mode in MODES:
    args = mode_args(mode, tmp_path / 'w')
    if mode == 'train':
      args += ['--config', str(REPO / 'configs' / 'seed_cnn.py')]
    rc, stderr = cli(*args)
    assert_one_line(rc, stderr, f'{name}={value!r}: ', needle)
  assert not (tmp_path / 'w').exists()


def test_a_platform_this_machine_lacks_is_one_line(tmp_path):
  """JAX asserts when its plugin for JAX_PLATFORMS is not installed."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, '-m', 'kmnist_jax.main', '--mode=eval',
       f'--workdir={tmp_path}'], cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, JAX_PLATFORMS='tpu', PYTHONPATH=str(REPO)),
      timeout=300, check=False)
  assert_one_line(proc.returncode, proc.stderr, "JAX_PLATFORMS='tpu': JAX "
                  'could not start a backend', 'expected a platform this '
                  'machine has')
