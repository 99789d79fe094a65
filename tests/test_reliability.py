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

import numpy as np

from PIL import Image
import pytest

from kmnist_jax import configlib
from kmnist_jax import evaluate
from kmnist_jax import inputs as inputs_lib
from kmnist_jax import predict
from kmnist_jax import workdir as workdir_lib
from kmnist_jax.errors import UserError

# The synthetic files differ from the official release, which warns.
pytestmark = pytest.mark.filterwarnings('ignore::kmnist_jax.data.DataWarning')


# --- 1. The lock never writes through a link ---------------------------------


@pytest.mark.parametrize('plant', ['symlink', 'dangling', 'fifo', 'folder'])
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
  else:
    lock.mkdir()
  with pytest.raises(UserError, match=r'\.lock: (a symbolic link|not a file)'
                     '; expected a regular file'):
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
  names = [workdir_lib.split_name(s) for s in _SPLITS]
  assert len(set(names)) == len(_SPLITS), names
  assert [workdir_lib.split_from_name(n) for n in names] == _SPLITS
  assert names[2:6] == ['test_from8000', 'test_to8000', 'test_from-2000',
                        'test_to-2000']
  assert all(re.fullmatch(r'[A-Za-z0-9_-]+', n) for n in names), names
  with pytest.raises(UserError, match="'test_8000': not a split file name"):
    workdir_lib.split_from_name('test_8000')


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
    _, labels, indices = evaluate.load_split(config, split)
    probs = np.full((len(labels), 10), 0.1, np.float32)
    probs[:, i] = 0.91 - 0.1 * i  # One file each, told apart by this.
    probs /= probs.sum(1, keepdims=True)
    result = {'split': split, 'checkpoint_step': 7, 'accuracy': i}
    evaluate.write_results(config, str(workdir), None, labels, indices,
                           probs, result, plots=False)
    written[split] = (result['path'], probs)
  assert len({path for path, _ in written.values()}) == 2
  for split, (path, probs) in written.items():
    assert json.loads(pathlib.Path(path).read_text())['split'] == split
    found = evaluate.read_probabilities(
        evaluate.probabilities_path(str(workdir), split),
        evaluate.probabilities_meta(config, str(workdir), split, 7))
    assert found is not None, split
    np.testing.assert_array_equal(found[0], probs)
