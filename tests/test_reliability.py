"""Issue 35: nothing a user passes, plants or runs out of destroys data.

One test (or more) per numbered item of the issue: a planted lock link, a
predict output over an input or a workdir file, split names that collide,
damaged cached or saved artifacts, an empty predict path, a full disk and a
torn checkpoint file.
"""

import os
import pathlib

import pytest

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
