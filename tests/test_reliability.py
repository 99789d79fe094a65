"""Issue 35: nothing a user passes, plants or runs out of destroys data.

One test (or more) per numbered item of the issue: a planted lock link, a
predict output over an input or a workdir file, split names that collide,
damaged cached or saved artifacts, an empty predict path, a full disk and a
torn checkpoint file.
"""

import json
import os
import pathlib
import re
import shutil

import jax
import numpy as np

from PIL import Image
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.methods import ensemble
from kmnist_jax.inference import evaluate
from kmnist_jax.inference import prediction_inputs as inputs_lib
from kmnist_jax.baselines import knn
from kmnist_jax.inference import predict
from kmnist_jax.train import loop as train
from kmnist_jax.config import workdir as workdir_lib
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness
from kmnist_jax.data import splits
from kmnist_jax.inference import results
from kmnist_jax.data import datasets as data_lib

REPO = pathlib.Path(__file__).resolve().parents[1]

# The synthetic files differ from the official release, which warns.
# Orbax's failed TensorStore reads (torn checkpoints) close their event
# loop late, in whichever test runs then.
pytestmark = [
    pytest.mark.filterwarnings('ignore::kmnist_jax.data.datasets.DataWarning'),
    pytest.mark.filterwarnings(
        'ignore::pytest.PytestUnraisableExceptionWarning')]


# --- 1. The lock never writes through a link ---------------------------------


@pytest.mark.parametrize('plant', ['symlink', 'dangling', 'fifo', 'folder',
                                   'hardlink'])
def test_a_planted_lock_is_refused_and_its_target_kept(tmp_path, plant):
  workdir = tmp_path / 'w'
  workdir.mkdir()
  target = tmp_path / 'precious.txt'
  target.write_text('precious data')
  lock = workdir / '.lock'
  if plant == 'symlink':
    lock.symlink_to(target)
  elif plant == 'dangling':
    lock.symlink_to(tmp_path / 'created_through_the_link')
  elif plant == 'fifo':
    os.mkfifo(lock)
  elif plant == 'hardlink':
    os.link(target, lock)
  else:
    lock.mkdir()
  with pytest.raises(UserError, match=r'\.lock: (a symbolic link|not a file|'
                     'a hard link to another file); expected a regular '
                     'file'):
    with workdir_lib.workdir_lock(str(workdir)):
      pass
  assert target.read_text() == 'precious data'
  assert not (tmp_path / 'created_through_the_link').exists()


def test_the_lock_is_a_regular_file_holding_the_pid(tmp_path):
  with workdir_lib.workdir_lock(str(tmp_path)):
    lock = tmp_path / '.lock'
    assert lock.is_file() and not lock.is_symlink()
    assert lock.read_text() == f'pid {os.getpid()}'
    with pytest.raises(UserError, match=f'another training is running on '
                       f'this workdir \\(pid {os.getpid()}\\)'):
      with workdir_lib.workdir_lock(str(tmp_path)):
        pass


# --- 2. Predict never writes over what it reads, nor the workdir's files ------


@pytest.fixture
def planted(tmp_path):
  """A workdir holding a config and a checkpoint file, and an input image."""
  workdir = tmp_path / 'w'
  (workdir / 'checkpoints' / '2').mkdir(parents=True)
  (workdir / 'config.json').write_text('{"dataset": "kmnist"}')
  (workdir / 'checkpoints' / '2' / 'meta').write_text('{}')
  images = tmp_path / 'images'
  images.mkdir()
  Image.new('L', (28, 28), 255).save(images / 'in.png')
  return workdir, images / 'in.png'


def _bytes(*roots):
  return {p: p.read_bytes() for r in roots for p in sorted(r.rglob('*'))
          if p.is_file()}


@pytest.mark.parametrize('output, inputs, message', [
    ('{image}', ['{image}'], 'is one of the --predict_input files'),
    ('{image}', ['{folder}'], 'is one of the --predict_input files'),
    ('{link}', ['{image}'], 'is one of the --predict_input files'),
    ('{w}/config.json', ['{image}'], 'a file of the workdir that predict '
     'does not write'),
    ('{w}/checkpoints/2/meta', ['{image}'], 'a file of the workdir'),
    ('{w}/checkpoints/new.csv', ['{image}'], 'a file of the workdir'),
    ('{w}/.lock', ['{image}'], 'a file of the workdir'),
    ('{w}/checkpoints', ['{image}'], 'is a folder; expected a CSV file name'),
])
def test_predict_output_over_an_input_or_the_workdir_is_refused(
    planted, output, inputs, message):
  workdir, image = planted
  (image.parent / 'link.png').symlink_to(image)
  names = dict(image=image, folder=image.parent, w=workdir,
               link=image.parent / 'link.png')
  before = _bytes(workdir, image.parent)
  output = output.format(**names)
  with pytest.raises(UserError, match=f'--predict_output {re.escape(output)}'
                     f': {message}'):
    predict.main(str(workdir), [x.format(**names) for x in inputs],
                 output_csv=output)
  assert _bytes(workdir, image.parent) == before


def test_predict_output_may_be_new_or_its_own_csv_in_the_workdir(planted):
  workdir, image = planted
  for name in ('predictions.csv', 'other.csv'):
    predict.check_output(str(workdir / name), [str(image)], str(workdir))
  (workdir / 'mine.csv').write_text('path,top1_index,top1_char\r\n')
  predict.check_output(str(workdir / 'mine.csv'), [str(image)], str(workdir))
  (workdir / 'notes.csv').write_text('my,own,notes\n')
  with pytest.raises(UserError, match='a file of the workdir'):
    predict.check_output(str(workdir / 'notes.csv'), [str(image)],
                         str(workdir))


# --- 6. An empty predict path is refused, not read as the current folder -----


def test_an_empty_predict_input_is_refused(planted, monkeypatch):
  workdir, image = planted
  monkeypatch.chdir(image.parent)  # '' would be this folder, with in.png.
  with pytest.raises(UserError, match="--predict_input '': empty path; "
                     'expected an image'):
    predict.main(str(workdir), [str(image), ''])
  items, errors = inputs_lib.collect([''])
  assert items == [] and errors == [('', 'empty path; expected an image, a '
                                     'folder or a .npy/.npz array')]


# --- 3. Every split has its own result files ---------------------------------

_SPLITS = ['test', 'train', 'test[8000:]', 'test[:8000]', 'test[-2000:]',
           'test[:-2000]', 'test[:]', 'test[0:8000]', 'test[10%:20%]',
           'test[:10%]', 'test[-10%:]', 'train[:90%]', 'train[54000:]']


def test_split_names_are_distinct_and_round_trip():
  names = [splits.split_name(s) for s in _SPLITS]
  assert len(set(names)) == len(_SPLITS), names
  assert [splits.split_from_name(n) for n in names] == _SPLITS
  assert names[2:6] == ['test_from8000', 'test_to8000', 'test_from-2000',
                        'test_to-2000']
  assert all(re.fullmatch(r'[A-Za-z0-9_-]+', n) for n in names), names
  with pytest.raises(UserError, match="'test_8000': not a split file name"):
    splits.split_from_name('test_8000')


def _fitted_workdir(tmp_path, data_dir):
  """A workdir with a config.json, as a training run leaves it."""
  config = configlib.base_config()
  config.update(dict(model='seed_cnn', data_dir=str(data_dir)))
  workdir = tmp_path / 'w'
  workdir.mkdir()
  workdir_lib.record_config(config, str(workdir))
  return config, workdir


@pytest.mark.parametrize('pair', [('test[:100]', 'test[100:]'),
                                  ('test[-50:]', 'test[:-50]')])
def test_two_slices_of_a_split_keep_their_own_results(tmp_path,
                                                      learnable_data_dir,
                                                      pair):
  config, workdir = _fitted_workdir(tmp_path, learnable_data_dir)
  written = {}
  for i, split in enumerate(pair):
    _, labels, indices = data_lib.load_indexed(config, split)
    probs = np.full((len(labels), 10), 0.1, np.float32)
    probs[:, i] = 0.91 - 0.1 * i  # One file each, told apart by this.
    probs /= probs.sum(1, keepdims=True)
    result = {'split': split, 'checkpoint_step': 7, 'accuracy': i}
    results.write_results(config, str(workdir), None, labels, indices,
                           probs, result, plots=False)
    written[split] = (result['path'], probs)
  assert len({path for path, _ in written.values()}) == 2
  for split, (path, probs) in written.items():
    assert json.loads(pathlib.Path(path).read_text())['split'] == split
    found = results.read_probabilities(
        results.probabilities_path(str(workdir), split),
        results.probabilities_meta(config, str(workdir), split, 7))
    assert found is not None, split
    np.testing.assert_array_equal(found[0], probs)


# --- 5. Ensembles check a member's saved probabilities; k-NN its fit ---------


def _knn_config(data_dir, **fields):
  config = configlib.load_config_file(str(REPO / 'configs' / 'knn.py'))
  config.knn.update({k: fields.pop(k) for k in ('k', 'pca_components')
                     if k in fields})
  config.update(dict(data_dir=str(data_dir), train_split='train',
                     eval_split='test', test_split='test', **fields))
  return config


def _knn_members(tmp_path, data_dir):
  """Two k-NN workdirs (k 1 and 5), each evaluated on the test split."""
  workdirs = []
  for k in (1, 5):
    workdir = str(tmp_path / f'knn{k}')
    harness.fit(_knn_config(data_dir, k=k), workdir)
    harness.evaluate(None, workdir)
    workdirs.append(workdir)
  return workdirs


def _rewrite_npz(path, **changes):
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  arrays.update(changes)
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def _damage(path, how):
  if how == 'truncated':
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[:len(data) // 2])
    return
  with np.load(path) as f:
    probs, labels = f['probabilities'], f['labels']
  if how == 'nan':
    _rewrite_npz(path, probabilities=np.full_like(probs, np.nan))
  elif how == 'wrong_shape':
    _rewrite_npz(path, probabilities=probs[:-3])
  elif how == 'wrong_classes':
    _rewrite_npz(path, probabilities=probs[:, :7])
  elif how == 'not_summing_to_1':
    _rewrite_npz(path, probabilities=probs * 3)
  elif how == 'labels_out_of_range':
    _rewrite_npz(path, labels=labels + 10)


@pytest.mark.parametrize('how', ['nan', 'truncated', 'wrong_shape',
                                 'wrong_classes', 'not_summing_to_1',
                                 'labels_out_of_range'])
def test_an_ensemble_recomputes_a_damaged_member_file(
    tmp_path, learnable_data_dir, how, caplog):
  workdirs = _knn_members(tmp_path, learnable_data_dir)
  clean = ensemble.evaluate(workdirs)
  path = results.probabilities_path(workdirs[1], 'test')
  _damage(path, how)
  with caplog.at_level('WARNING'):
    again = ensemble.evaluate(workdirs)
  assert again['accuracy'] == clean['accuracy']
  assert again['members'] == clean['members']
  warnings = [r.getMessage() for r in caplog.records
              if 'not reused, computed again' in r.getMessage()]
  assert len(warnings) == 1 and path in warnings[0], warnings
  # Computed again, the file is whole: the next ensemble reads it.
  assert results.read_probabilities(
      path, results.probabilities_meta(
          workdir_lib.load_workdir_config(workdirs[1]), workdirs[1], 'test',
          0), 10) is not None


@pytest.mark.parametrize('how', ['truncated', 'garbage', 'wrong_shape',
                                 'nan'])
def test_a_damaged_knn_fit_is_one_line(tmp_path, learnable_data_dir, how):
  workdir = str(tmp_path / 'pca')
  harness.fit(_knn_config(learnable_data_dir, model='pca_knn',
                                     pca_components=5), workdir)
  path = os.path.join(workdir, knn.MODEL_FILE)
  if how == 'truncated':
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[:len(data) // 2])
  elif how == 'garbage':
    pathlib.Path(path).write_bytes(b'\0' * 100)
  elif how == 'wrong_shape':
    with np.load(path) as f:
      _rewrite_npz(path, components=f['components'][:2])
  else:
    with np.load(path) as f:
      _rewrite_npz(path, mean=np.full_like(f['mean'], np.nan))
  with pytest.raises(UserError, match=f'{re.escape(path)}: not a readable '
                     r'k-NN fit \(.+\); run --mode train on this workdir '
                     'again'):
    harness.evaluate(None, workdir)


# --- 8. A torn file in the latest checkpoint: the one before is used ---------

_TORN = ['metrics/metrics', 'meta/metadata', 'state/_METADATA',
         'state/manifest.ocdbt', 'state/array_metadatas/process_0']


def _seed_cnn(data_dir, **fields):
  config = configlib.base_config()
  config.update({**dict(
      model='seed_cnn', data_dir=str(data_dir), train_split='train',
      eval_split='test', num_epochs=2, batch_size=32, eval_batch_size=64,
      log_every_steps=100, learning_rate=3e-3, write_plots=False,
      checkpoint_every_steps=4, keep_checkpoints=10), **fields})
  return config


@pytest.fixture(scope='module')
def two_epochs(tmp_path_factory, learnable_data_dir):
  """seed_cnn after 2 epochs of 10 steps: checkpoints 4, 8, 10, 12, 16, 20."""
  workdir = tmp_path_factory.mktemp('two_epochs') / 'w'
  harness.fit(_seed_cnn(learnable_data_dir), str(workdir))
  return workdir


@pytest.fixture(scope='module')
def three_epochs(tmp_path_factory, learnable_data_dir):
  """The same run, uninterrupted, for 3 epochs."""
  workdir = tmp_path_factory.mktemp('three_epochs') / 'w'
  harness.fit(_seed_cnn(learnable_data_dir, num_epochs=3),
                           str(workdir))
  return workdir


def _tear(workdir, step, name):
  path = workdir / 'checkpoints' / str(step) / name
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize('name', _TORN)
def test_eval_and_predict_use_the_step_before_a_torn_latest(two_epochs,
                                                            tmp_path, name):
  workdir = tmp_path / 'w'
  shutil.copytree(two_epochs, workdir)
  _tear(workdir, 20, name)
  result = harness.evaluate(None, str(workdir))
  assert result['checkpoint_step'] == 16
  predictor = predict.Predictor.from_workdir(str(workdir))
  assert predictor.step in (10, 16)
  with pytest.raises(UserError, match=f'checkpoints/20: checkpoint .*'
                     'unreadable'):
    harness.evaluate(None, str(workdir), checkpoint_step=20)


def test_an_ensemble_member_with_a_torn_latest_uses_the_step_before(
    two_epochs, tmp_path):
  members = []
  for i in range(2):
    members.append(tmp_path / f'w{i}')
    shutil.copytree(two_epochs, members[-1])
  _tear(members[1], 20, 'state/_METADATA')
  result = ensemble.evaluate([str(w) for w in members])
  assert result['checkpoint_step'] == [20, 16]
  assert [m['checkpoint_step'] for m in result['members']] == [20, 16]


@pytest.mark.parametrize('name', _TORN)
def test_training_sets_a_torn_latest_aside_and_resumes_bit_exactly(
    two_epochs, three_epochs, tmp_path, learnable_data_dir, name):
  workdir = tmp_path / 'w'
  shutil.copytree(two_epochs, workdir)
  _tear(workdir, 20, name)
  config = _seed_cnn(learnable_data_dir, num_epochs=3)
  harness.fit(config, str(workdir))
  assert (workdir / 'unreadable_checkpoints' / '20' / name).is_file()
  _, _, resumed, step = evaluate.restore_for_inference(str(workdir))
  _, _, expected, ref_step = evaluate.restore_for_inference(
      str(three_epochs))
  assert step == ref_step == 30
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- A workdir whose parts are of the wrong kind -------------------------------

_WRONG_KIND = [
    ('tensorboard', 'file', 'train', "not a folder; expected the run's "
     'TensorBoard folder'),
    ('eval_test.json', 'dir', 'eval', 'a folder; expected a file there'),
    ('probabilities_test.npz', 'dir', 'eval', 'a folder; expected a file'),
    ('config.json', 'dir', 'eval', 'not a readable config'),
    ('metrics.jsonl', 'dir', 'train', 'metrics.jsonl'),
    ('predictions.csv', 'dir', 'predict', 'is a folder; expected a CSV'),
    ('metrics.jsonl', 'link', 'train', 'a symbolic link'),
]


@pytest.mark.parametrize('part,kind,mode,needle', _WRONG_KIND,
                         ids=[f'{p}-{k}-{m}' for p, k, m, _ in _WRONG_KIND])
def test_a_workdir_part_of_the_wrong_kind_is_one_line(
    two_epochs, tmp_path, learnable_data_dir, part, kind, mode, needle):
  from faults import conftest as fc  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'w'
  shutil.copytree(two_epochs, workdir)
  path = workdir / part
  if path.is_dir():
    shutil.rmtree(path)
  elif path.exists():
    path.unlink()
  if kind == 'dir':
    path.mkdir()
  elif kind == 'link':  # Records appended through it would land there.
    path.symlink_to(tmp_path / 'elsewhere')
  else:
    path.write_text('x')
  image = tmp_path / 'in.npy'
  np.save(image, np.zeros((28, 28), np.uint8))
  before = fc.snapshot(workdir)
  if mode == 'train':
    args = fc.train_args(learnable_data_dir, workdir, num_epochs=3,
                         checkpoint_every_steps=4, keep_checkpoints=10,
                         log_every_steps=100)
  else:
    args = [f'--mode={mode}', f'--workdir={workdir}',
            f'--predict_input={image}']
  proc = fc.run_main(args)
  fc.assert_one_clear_error(proc, str(path), needle)
  assert proc.returncode == 2
  after = fc.snapshot(workdir)
  if mode == 'train':  # It records the new num_epochs, a resumable field.
    del before[str(workdir / 'config.json')]
  assert {k: after.get(k) for k in before} == before  # Earlier files kept.
  assert not (tmp_path / 'elsewhere').exists()


# --- Predict: EXIF orientation, a bound over all inputs ----------------------


def _ink_top_left():
  a = np.full((40, 60), 255, np.uint8)
  a[4:14, 4:24] = 0  # Dark ink in the top-left corner, on white paper.
  return a


@pytest.mark.parametrize('orientation,stored', [
    (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, 1)),
    (8, lambda a: np.rot90(a, -1)), (2, np.fliplr)])
@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_the_exif_orientation_is_honoured(tmp_path, orientation, stored, fmt):
  upright = _ink_top_left()
  exif = Image.Exif()
  exif[0x0112] = orientation  # Orientation
  path = tmp_path / f'photo.{fmt.lower()}'
  Image.fromarray(np.ascontiguousarray(stored(upright))).save(
      path, fmt, exif=exif, **({'quality': 100} if fmt == 'JPEG' else {}))
  reference = tmp_path / f'upright.{fmt.lower()}'
  Image.fromarray(upright).save(
      reference, fmt, **({'quality': 100} if fmt == 'JPEG' else {}))
  gray, display = inputs_lib.read_image(path)
  want, want_display = inputs_lib.read_image(reference)
  assert gray.shape == want.shape == (40, 60)
  np.testing.assert_allclose(gray, want, atol=8)
  assert display.shape == want_display.shape


def test_a_broken_exif_tag_reads_the_pixels_as_stored(tmp_path):
  exif = Image.Exif()
  exif[0x0112] = 99  # No such orientation.
  Image.fromarray(_ink_top_left()).save(tmp_path / 'x.png', exif=exif)
  gray, _ = inputs_lib.read_image(tmp_path / 'x.png')
  np.testing.assert_array_equal(gray, _ink_top_left().astype(np.float32))


def test_the_inputs_are_bounded_in_all_not_only_per_file(tmp_path,
                                                         monkeypatch):
  for i in range(4):  # Each file within the per-file limit.
    np.save(tmp_path / f'part{i}.npy', np.zeros((3, 28, 28), np.uint8))
  monkeypatch.setattr(inputs_lib, 'MAX_TOTAL_IMAGES', 10)
  items, errors = inputs_lib.collect([str(tmp_path / f'part{i}.npy')
                                      for i in range(3)])
  assert len(items) == 9 and errors == []
  with pytest.raises(UserError, match=r'the inputs up to .*part3.npy hold 12 '
                     r'images \(.* bytes\); expected at most 10 images and '
                     r'.* bytes in all: predict them in several runs'):
    inputs_lib.collect([str(tmp_path)])
  monkeypatch.setattr(inputs_lib, 'MAX_TOTAL_BYTES', 4000)
  with pytest.raises(UserError, match='expected at most 10 images and 4,000 '
                     'bytes in all'):
    inputs_lib.collect([np.zeros((28, 28), np.uint8)] * 3)


# --- A class map with control characters -------------------------------------


@pytest.mark.parametrize('codepoint,char', [
    ('U+001B', '\x1b'), ('U+202E', '\u202e'), ('U+0085', '\x85'),
    ('U+2028', '\u2028')])
def test_a_control_character_in_the_class_map_is_one_line(
    synthetic_data_dir, codepoint, char):
  from kmnist_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  path = synthetic_data_dir / 'kmnist_classmap.csv'
  rows = path.read_text(encoding='utf-8').splitlines()
  rows[3] = f'2,{codepoint},"{char}"'
  path.write_bytes(('\n'.join(rows) + '\n').encode('utf-8'))
  with pytest.raises(UserError, match=f'kmnist_classmap.csv row 3: '
                     f'{re.escape(codepoint)} is a control or format '
                     'character; expected a printable character'):
    data.class_map('kmnist', str(synthetic_data_dir))
