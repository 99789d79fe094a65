"""Issue 35: nothing a user passes, plants or runs out of destroys data.

One test (or more) per numbered item of the issue: a planted lock link, a
predict output over an input or a workdir file, split names that collide,
damaged cached or saved artifacts, an empty predict path, a full disk and a
torn checkpoint file.
"""

import os
import re

from PIL import Image
import pytest

from kmnist_jax import inputs as inputs_lib
from kmnist_jax import predict
from kmnist_jax import workdir as workdir_lib
from kmnist_jax.errors import UserError


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
