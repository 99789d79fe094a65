"""The bad-input catalog: what a new user may feed the CLI.

Every case asserts a non-zero exit (or a `UserError`, which the CLI prints
as one line and exits 2 on), exactly one `error:` line naming the file or
field and what was expected, no traceback, and that no existing file was
changed or deleted (sizes, mtimes and sha256 of everything under the test's
folder, data and workdir included, before and after). Cases run through the
real CLI (`python -m kmnist_jax.main`) where the CLI adds something (flag
parsing, the error printer, exit codes); the rest call the library, whose
`UserError` the CLI prints the same way. Predict inputs are at the end.
"""

import csv
import http.server
import json
import pathlib
import shutil
import subprocess
import sys
import threading

import numpy as np
from PIL import Image
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.data import datasets as data
from kmnist_jax.inference import evaluate
from kmnist_jax.train import loop as train
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness

from faults import conftest as fc
from test_preprocess import lying_inputs

IMGS, LABELS = 'kmnist-train-imgs.npz', 'kmnist-train-labels.npz'
CLASSMAP = 'kmnist_classmap.csv'

# The synthetic files differ from the official release, which warns.
pytestmark = pytest.mark.filterwarnings('ignore::kmnist_jax.data.datasets.DataWarning')


@pytest.fixture(scope='module', autouse=True)
def _compilation_cache(tmp_path_factory):
  """A JAX compilation cache for the CLI runs, as tests/faults has."""
  if fc.CACHE['dir'] == '0':
    fc.CACHE['dir'] = str(tmp_path_factory.mktemp('jax_cache'))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, learnable_data_dir) -> pathlib.Path:
  """A workdir trained for one epoch of 2 steps: checkpoint 2 only."""
  workdir = tmp_path_factory.mktemp('trained') / 'w'
  proc = fc.run_main(fc.train_args(learnable_data_dir, workdir,
                                   train_split='train[:64]', num_epochs=1))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


class Case:
  """Per-test copies: `data` (learnable files), `workdir` (fresh or trained)."""

  def __init__(self, tmp_path, learnable, trained=None):
    self.root = tmp_path
    self.data = pathlib.Path(shutil.copytree(learnable, tmp_path / 'data'))
    self.workdir = tmp_path / 'w'
    if trained is not None:
      shutil.copytree(trained, self.workdir)
      config = json.loads((self.workdir / 'config.json').read_text())
      config['data_dir'] = str(self.data)
      (self.workdir / 'config.json').write_text(json.dumps(config))

  def args(self, *extra, **overrides):
    return fc.train_args(self.data, self.workdir, **overrides) + list(extra)

  def npz(self, name, array=None, **arrays):
    if array is not None:
      arrays['arr_0'] = array
    (self.data / name).unlink()
    np.savez(self.data / name, **arrays)

  def images(self):
    with np.load(self.data / IMGS) as f:
      return f['arr_0']

  def labels(self):
    with np.load(self.data / LABELS) as f:
      return f['arr_0']

  def corrupt_arrays(self):
    for path in (self.workdir / 'checkpoints' / '2' / 'state').rglob('d/*'):
      path.write_bytes(path.read_bytes()[:20])


def _truncate(path):
  blob = path.read_bytes()
  path.write_bytes(blob[:len(blob) // 2])


class _NotFoundServer:
  """A mirror on 127.0.0.1 that answers 404 to everything."""

  def __init__(self):

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # noqa: N802
        self.send_error(404)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/m'
    threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                     daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


def _ink_png(path):
  Image.fromarray(_ink()).save(path)


def _no_config(c):
  return [a for a in c.args() if not a.startswith(('--config', 'configs'))
          and not a.endswith('seed_cnn.py')]


# (setup(case) -> argv, needles, needs a trained workdir).
CLI_CASES = {
    # Flags, config files, overrides.
    'override_wrong_type': (lambda c: c.args('--config.batch_size=abc'), [
        '--config.batch_size=abc', 'expected an integer']),
    'override_float_for_int': (lambda c: c.args('--config.num_epochs=1.5'), [
        '--config.num_epochs=1.5', 'expected an integer']),
    'override_not_a_number': (lambda c: c.args('--config.learning_rate=fast'),
                              ['config.learning_rate', 'expected a number']),
    'override_not_a_bool': (lambda c: c.args('--config.write_plots=maybe'), [
        'config.write_plots', 'expected true or false']),
    'override_field_typo': (lambda c: c.args('--config.modle=seed_cnn'), [
        "no field 'modle'", "did you mean 'model'", 'valid: ', 'batch_size']),
    'override_nested_field': (lambda c: c.args('--config.optimizer.lr=1'), [
        "no field 'optimizer.lr'", 'valid: ']),
    'config_file_missing': (
        lambda c: ['--config', 'configs/nope.py', f'--workdir={c.workdir}'],
        ['configs/nope.py', 'No such file', 'expected a Python file']),
    'config_file_syntax': (
        lambda c: (c.root / 'bad.py').write_text('def get_config(:\n') and [
            '--config', str(c.root / 'bad.py'), f'--workdir={c.workdir}'],
        ['bad.py', 'invalid syntax', 'expected a Python file']),
    'config_variant_typo': (
        lambda c: ['--config', 'configs/seed_cnn.py:smok',
                   f'--workdir={c.workdir}'],
        ["unknown config variant 'smok'", 'valid: proxy, smoke']),
    'mode_typo': (lambda c: c.args('--mode=trian'), [
        '--mode=trian', 'train|eval|predict']),
    'stray_argument': (lambda c: c.args('extra'), [
        'unexpected arguments: extra']),
    'train_without_config': (_no_config, ['--config is required']),
    # Data files.
    'data_missing_404': (lambda c: [(c.data / IMGS).unlink(), (
        c.data / LABELS).unlink()] and c.args(), [
            IMGS, 'HTTP 404', 'expected the file there']),
    'data_empty': (lambda c: (c.data / IMGS).write_bytes(b'') or c.args(), [
        IMGS, 'is empty (0 bytes)', 'expected a .npz']),
    'data_truncated': (lambda c: _truncate(c.data / IMGS) or c.args(), [
        IMGS, 'expected a .npz']),
    'data_not_a_zip': (
        lambda c: (c.data / LABELS).write_text('0,1,2\n') and c.args(), [
            LABELS, 'not a readable .npz archive']),
    'data_wrong_key': (lambda c: c.npz(LABELS, y=c.labels()) or c.args(), [
        LABELS, "no array 'arr_0' (keys: y)"]),
    'data_wrong_dtype': (
        lambda c: c.npz(IMGS, c.images().astype(np.float32)) or c.args(), [
            IMGS, 'expected images of dtype uint8, got float32']),
    'data_wrong_shape': (
        lambda c: c.npz(IMGS, c.images().reshape(-1, 784)) or c.args(), [
            IMGS, 'expected images of shape (N, 28, 28), got (320, 784)']),
    'labels_out_of_range': (
        lambda c: c.npz(LABELS, c.labels().astype(np.int64) + 5) or c.args(), [
            LABELS, 'expected labels in [0, 10)']),
    'labels_length_mismatch': (
        lambda c: c.npz(LABELS, c.labels()[:-1]) or c.args(), [
            IMGS, LABELS, '320 images', '319 labels',
            'expected equal lengths']),
    # Splits and config values.
    'split_typo': (lambda c: c.args(train_split='trian'), [
        "unknown split 'trian'", "expected 'train' or 'test'"]),
    'model_typo': (lambda c: c.args(model='resnet9'), [
        "unknown model 'resnet9'", 'keras_cnn', 'seed_cnn']),
    'batch_negative': (lambda c: c.args(batch_size=-5), [
        'config.batch_size=-5', 'expected a positive integer']),
    'batch_larger_than_split': (lambda c: c.args(batch_size=400), [
        'config.batch_size=400', "split 'train'", 'expected at most 320']),
    # Checkpoints.
    'checkpoint_step_missing': (
        lambda c: ['--mode=eval', f'--workdir={c.workdir}',
                   '--checkpoint_step=999'],
        ['no checkpoint at step 999', 'available: [2]'], True),
    'checkpoint_corrupt': (
        lambda c: c.corrupt_arrays() or ['--mode=eval',
                                         f'--workdir={c.workdir}'],
        ['checkpoints/2', 'unreadable'], True),
    'resume_other_model': (lambda c: c.args(model='keras_cnn'), [
        'holds checkpoints of a different config',
        "model: 'seed_cnn' (saved) vs 'keras_cnn' (now)"], True),
    'predict_top_k_zero': (
        lambda c: ['--mode=predict', f'--workdir={c.workdir}', '--top_k=0',
                   f'--predict_input={c.data}'],
        ['--top_k=0', 'expected a positive integer'], True),
    'predict_output_folder_missing': (
        lambda c: _ink_png(c.root / 'x.png') or [
            '--mode=predict', f'--workdir={c.workdir}',
            f'--predict_input={c.root / "x.png"}',
            f'--predict_output={c.root / "nowhere" / "p.csv"}'],
        ['--predict_output', 'nowhere', 'does not exist'], True),
    'eval_not_a_workdir': (
        lambda c: ['--mode=eval', f'--workdir={c.data}'],
        ['config.json: missing', '--workdir must hold a training run']),
}


@pytest.mark.parametrize('name', sorted(CLI_CASES))
def test_cli_bad_input(name, tmp_path, learnable_data_dir, request):
  setup, needles, *trained = CLI_CASES[name]
  case = Case(tmp_path, learnable_data_dir,
              request.getfixturevalue('trained') if trained else None)
  server = _NotFoundServer()
  try:
    argv = setup(case)
    before = fc.snapshot(tmp_path)
    proc = fc.run_main(argv, KMNIST_JAX_MIRROR=server.url,
                       KMNIST_JAX_MIRROR_ONLY='1')
  finally:
    server.close()
  fc.assert_one_clear_error(proc, *needles)
  after = fc.snapshot(tmp_path)
  assert before.items() <= after.items(), 'an existing file changed'


def _config(case, **overrides):
  c = configlib.base_config()
  c.update(dict(model='seed_cnn', data_dir=str(case.data),
                train_split='train', eval_split='test', num_epochs=1,
                batch_size=32, eval_batch_size=64, write_plots=False))
  c.update(overrides)
  return c


def _train(**overrides):
  return lambda c: harness.fit(_config(c, **overrides),
                                            str(c.workdir))


def _evaluate(c):
  return harness.evaluate(None, str(c.workdir))


def _classmap(text):

  def run(c):
    (c.data / CLASSMAP).write_text(text, encoding='utf-8')
    return data.class_map('kmnist', c.data)

  return run


_ROWS = ['index,codepoint,char'] + [
    f'{i},U+{ord(ch):04X},{ch}' for i, ch in enumerate('おきすつなはまやれを')]


def _rewrite_config(**fields):

  def edit(c):
    config = json.loads((c.workdir / 'config.json').read_text())
    config.update(fields)
    (c.workdir / 'config.json').write_text(json.dumps(config))

  return edit


# (prepare(case), run(case), needles, needs a trained workdir).
LIBRARY_CASES = {
    'labels_2d': (lambda c: c.npz(LABELS, c.labels()[:, None]), _train(), [
        LABELS, 'expected labels of shape (N,)']),
    'labels_float': (lambda c: c.npz(LABELS, c.labels().astype(np.float32)),
                     _train(), [LABELS, 'expected integer labels']),
    'labels_negative': (
        lambda c: c.npz(LABELS, c.labels().astype(np.int8) - 1), _train(), [
            LABELS, 'expected labels in [0, 10), found values from -1']),
    'images_bare_npy': (
        lambda c: np.save(c.data / 'x.npy', c.images()) or (
            c.data / IMGS).unlink() or (c.data / 'x.npy').rename(
                c.data / IMGS), _train(), [IMGS, 'holds a bare array']),
    'eval_split_empty': (None, _train(eval_split='test[150:100]'), [
        "split 'test[150:100]' selects no examples", 'expected start < stop']),
    'split_bound_out_of_range': (None, _train(train_split='train[:500]'), [
        "split 'train[:500]'", 'bound 500 is out of range',
        'expected -320..320']),
    'split_percent_out_of_range': (None, _train(train_split='train[:150%]'), [
        "split 'train[:150%]'", 'expected percentages between']),
    'split_malformed': (None, _train(train_split='train[1:2:3]'), [
        "malformed split 'train[1:2:3]'", "expected 'train' or 'test'"]),
    'eval_batch_zero': (None, _train(eval_batch_size=0), [
        'config.eval_batch_size=0', 'expected a positive integer']),
    'learning_rate_negative': (None, _train(learning_rate=-1.0), [
        'config.learning_rate=-1.0', 'expected a positive number']),
    'label_smoothing_one': (None, _train(label_smoothing=1.0), [
        'config.label_smoothing=1.0', 'expected a number in [0, 1)']),
    'checkpoint_every_negative': (None, _train(checkpoint_every_steps=-1), [
        'config.checkpoint_every_steps=-1', 'expected an integer >= 0']),
    'classmap_wrong_char': (None, _classmap(
        '\n'.join(_ROWS[:3] + ['2,U+3059,X'] + _ROWS[4:]) + '\n'), [
            CLASSMAP, 'row 3', "character 'X' does not match U+3059"]),
    'classmap_too_many_rows': (None, _classmap(
        '\n'.join(_ROWS + ['10,U+3093,ん']) + '\n'), [
            CLASSMAP, 'expected 10 class rows, got 11']),
    'classmap_no_header': (None, _classmap('\n'.join(_ROWS[1:]) + '\n'), [
        CLASSMAP, 'expected header index,codepoint,char']),
    'checkpoint_foreign_dir': (
        lambda c: shutil.rmtree(c.workdir / 'checkpoints') or (
            c.workdir / 'checkpoints' / '7').mkdir(parents=True) or (
                c.workdir / 'checkpoints' / '7' / 'notes.txt').write_text(
                    'not a checkpoint'), _evaluate, [
                        'checkpoints/7', 'unreadable'], True),
    'checkpoint_other_model': (_rewrite_config(model='keras_cnn'), _evaluate, [
        'checkpoints/2', "checkpoint of model 'seed_cnn'",
        "config.json says 'keras_cnn'"], True),
    'checkpoint_meta_corrupt': (
        lambda c: (c.workdir / 'checkpoints' / '2' / 'meta' / 'metadata'
                   ).write_text('{bad'), _evaluate, [
                       'checkpoints/2', 'unreadable'], True),
    'checkpoints_is_a_file': (
        lambda c: shutil.rmtree(c.workdir / 'checkpoints') or (
            c.workdir / 'checkpoints').write_text('x'), _evaluate, [
                'checkpoints', 'no checkpoints directory'], True),
    'workdir_config_not_object': (
        lambda c: (c.workdir / 'config.json').write_text('[1, 2]'),
        _evaluate, ['config.json', 'expected the JSON object'], True),
    'workdir_config_not_json': (
        lambda c: (c.workdir / 'config.json').write_text('{"model": '),
        _evaluate, ['config.json', 'not a readable config'], True),
}


@pytest.mark.parametrize('name', sorted(LIBRARY_CASES))
def test_library_bad_input(name, tmp_path, learnable_data_dir, request):
  prepare, run, needles, *trained = LIBRARY_CASES[name]
  case = Case(tmp_path, learnable_data_dir,
              request.getfixturevalue('trained') if trained else None)
  if prepare is not None:
    prepare(case)
  before = fc.snapshot(tmp_path)
  with pytest.raises(UserError) as error:
    run(case)
  message = str(error.value)
  assert '\n' not in message, message
  for needle in needles:
    assert needle in message, (needle, message)
  after = fc.snapshot(tmp_path)
  assert before.items() <= after.items(), 'an existing file changed'


# ----------------------------------------------------------- predict inputs


def _run_measured(argv):
  """The CLI run plus its peak resident memory in MiB (Linux ru_maxrss)."""
  wrapper = ('import resource, subprocess, sys; '
             'r = subprocess.run(sys.argv[1:]); '
             'print("maxrss", resource.getrusage('
             'resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); '
             'sys.exit(r.returncode)')
  proc = subprocess.run(
      [sys.executable, '-c', wrapper, sys.executable, '-m',
       'kmnist_jax.main', *argv], cwd=fc.REPO, env=fc.env(),
      capture_output=True, text=True, timeout=300)
  rss = int(proc.stderr.rsplit('maxrss ', 1)[1].split()[0]) // 1024
  return proc, rss


def _ink(side=40):
  img = np.zeros((side, side), np.uint8)
  img[side // 4:3 * side // 4, side // 3:2 * side // 3] = 255
  return img


def _bad_predict_inputs(d: pathlib.Path) -> dict:
  """{path: words its error line must hold} for bad predict inputs."""
  Image.fromarray(_ink()).save(d / 'good.png')
  blob = (d / 'good.png').read_bytes()
  (d / 'good.png').unlink()
  (d / 'zero.png').write_bytes(b'')
  (d / 'corrupt.png').write_bytes(np.random.default_rng(0).bytes(500))
  (d / 'truncated.png').write_bytes(blob[:len(blob) // 2])
  Image.fromarray(_ink()).convert('RGB').save(d / 'photo.jpg')
  (d / 'photo_cut.jpg').write_bytes((d / 'photo.jpg').read_bytes()[:300])
  (d / 'photo.jpg').unlink()
  (d / 'notes.txt').write_text('not an image')
  (d / 'no_images').mkdir()
  (d / 'no_images' / 'readme.md').write_text('nothing to see')
  np.save(d / 'wrong_shape.npy', np.zeros((5, 28, 27), np.uint8))
  np.save(d / 'rgb_stack.npy', np.zeros((2, 28, 28, 3), np.uint8))
  np.savez(d / 'no_arrays.npz')
  np.save(d / 'objects.npy', np.array([{'a': 1}], object), allow_pickle=True)
  np.save(d / 'nan.npy', np.full((28, 28), np.nan, np.float32))
  Image.new('L', (20000, 20000)).save(d / 'bomb.png')  # 400 Mpx, 0.4 MB.
  return {
      'zero.png': ['empty file (0 bytes)', 'expected an image'],
      'corrupt.png': ['not an image', 'expected an image'],
      'truncated.png': ['truncated or corrupt image', 'expected a complete'],
      'photo_cut.jpg': ['truncated or corrupt image', 'expected a complete'],
      'notes.txt': ['expected an image'],
      'no_images': ['folder without images', 'expected image files'],
      'wrong_shape.npy': ['shape (5, 28, 27)', 'expected (N, 28, 28)'],
      'rgb_stack.npy': ['shape (2, 28, 28, 3)', 'expected (N, 28, 28)'],
      'no_arrays.npz': ['holds no arrays', 'expected one of shape'],
      'objects.npy': ['not a readable .npy/.npz array', 'expected a NumPy'],
      'nan.npy': ['NaN', 'expected pixel values'],
      'bomb.png': ['image too large', 'expected at most'],
      'missing.png': ['no such file or folder', 'expected an image'],
  }


def _assert_one_error_line_each(stderr: str, inputs, cases: dict) -> None:
  """Exactly one `error:` line per bad file in `cases`, holding its needles."""
  lines = fc.error_lines(stderr)
  assert len(lines) == len(cases), lines
  for name, needles in cases.items():
    mine = [l for l in lines if l.startswith(f'error: {inputs / name}: ')]
    assert len(mine) == 1, (name, lines)
    for needle in needles:
      assert needle in mine[0], (needle, mine[0])

def test_predict_bad_inputs_one_line_each(trained, tmp_path):
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  cases = _bad_predict_inputs(inputs)
  workdir = pathlib.Path(shutil.copytree(trained, tmp_path / 'w'))
  before = fc.snapshot(tmp_path)
  proc, rss = _run_measured(
      ['--mode=predict', f'--workdir={workdir}'] +
      [f'--predict_input={inputs / name}' for name in sorted(cases)])
  assert proc.returncode != 0 and 'Traceback' not in proc.stderr, (
      proc.stderr[-3000:])
  _assert_one_error_line_each(proc.stderr, inputs, cases)
  assert rss < 1500, f'peak memory {rss} MiB for a 400 Mpx image'
  assert fc.snapshot(tmp_path) == before  # No CSV, no gallery.


def test_predict_lying_inputs_one_line_each_the_rest_predicted(trained,
                                                              tmp_path):
  """Content that lies about the file (another format than the name, headers
  declaring shapes no machine holds, a 3 GiB .npz bomb): one `error:` line
  per file, in bounded memory, and the good inputs (odd names included) are
  still predicted into the CSV."""
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  cases = lying_inputs(inputs)
  good = ['good.png', '=1+2 $x$ \x1b[2J.png']
  for name in good:
    Image.fromarray(_ink()).save(inputs / name)
  workdir = pathlib.Path(shutil.copytree(trained, tmp_path / 'w'))
  proc, rss = _run_measured(
      ['--mode=predict', f'--workdir={workdir}'] +
      [f'--predict_input={inputs / name}' for name in sorted(cases) + good])
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, (
      proc.stderr[-3000:])
  assert '\x1b' not in proc.stdout + proc.stderr
  _assert_one_error_line_each(proc.stderr, inputs, cases)
  with open(workdir / 'predictions.csv', encoding='utf-8', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['path'] for r in rows] == [str(inputs / n) for n in good]
  assert f'{inputs}/=1+2 $x$ \\x1b[2J.png ' in proc.stdout
  assert (workdir / 'plots' / 'predictions.png').is_file()
  assert rss < 1500, f'peak memory {rss} MiB'


def test_predict_one_bad_input_is_one_line(trained, tmp_path):
  (tmp_path / 'empty.png').write_bytes(b'')
  workdir = pathlib.Path(shutil.copytree(trained, tmp_path / 'w'))
  (workdir / 'predictions.csv').write_text('an earlier result\n')
  before = fc.snapshot(tmp_path)
  proc = fc.run_main(['--mode=predict', f'--workdir={workdir}',
                      f'--predict_input={tmp_path / "empty.png"}'])
  fc.assert_one_clear_error(proc, 'empty.png', 'empty file (0 bytes)',
                            'expected an image')
  assert fc.snapshot(tmp_path) == before


def test_predict_unusual_but_valid_images(trained, tmp_path):
  """16-bit, palette (also with transparency), gray+alpha, animated GIF,
  a large image and an array stack are all predicted, in bounded memory."""
  d = tmp_path / 'inputs'
  d.mkdir()
  ink = _ink()
  Image.fromarray(ink.astype(np.uint16) * 257).save(d / 'sixteen_bit.png')
  Image.fromarray(ink).convert('P').save(d / 'palette.png')
  palette = Image.fromarray(255 - ink).convert('P')  # Dark ink, clear paper.
  palette.save(d / 'palette_alpha.png', transparency=palette.getpixel((0, 0)))
  Image.fromarray(np.stack([255 - ink, ink], -1), 'LA').save(d / 'la.png')
  frames = [Image.fromarray(ink), Image.fromarray(255 - ink)]
  frames[0].save(d / 'two_frames.gif', save_all=True,
                 append_images=frames[1:])
  Image.fromarray(_ink(6000)).save(d / 'large.png')  # 36 Mpx.
  np.save(d / 'stack.npy', np.stack([ink[6:34, 6:34]] * 3))
  workdir = pathlib.Path(shutil.copytree(trained, tmp_path / 'w'))
  proc, rss = _run_measured(['--mode=predict', f'--workdir={workdir}',
                             f'--predict_input={d}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not fc.error_lines(proc.stderr), proc.stderr[-3000:]
  table = (workdir / 'predictions.csv').read_text()
  for name in ('sixteen_bit.png', 'palette.png', 'palette_alpha.png',
               'la.png', 'two_frames.gif',
               'large.png', 'stack.npy[0]', 'stack.npy[2]'):
    assert name in table, (name, table)
  assert rss < 1500, f'peak memory {rss} MiB'
