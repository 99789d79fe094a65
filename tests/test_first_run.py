"""The README's first command, as a new user runs it in a fresh clone.

Its main job, `python -m kmnist_jax.main --config configs/default.py
--workdir workdirs/default`, runs verbatim in a fresh folder holding only
the repository's `configs/`, with an empty home (so the default data folder
~/.cache/kmnist_jax/kmnist is empty) and KMNIST_JAX_MIRROR pointing at a
local mirror that serves the real KMNIST files except kmnist-train-imgs.npz
(which no machine here has). The run must create `workdirs/default` and fail
with the one download line only.

No real host is contacted: the official URLs are only used without a
mirror, and a `sitecustomize` module blocks (and records) every name lookup
and connection to anything but the loopback interface in the subprocess.
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

from mirror_server import MirrorServer  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMAND = ('-m', 'kmnist_jax.main', '--config', 'configs/default.py',
           '--workdir', 'workdirs/default')
ABSENT = 'kmnist-train-imgs.npz'

_NETWORK_GUARD = '''\
"""Test guard: no name lookup or connection beyond the loopback interface."""
import os
import socket

_LOG = os.environ['KMNIST_JAX_TEST_NETWORK_LOG']
_LOCAL = ('127.0.0.1', 'localhost', '::1')


def _refuse(what):
  with open(_LOG, 'a') as f:
    f.write(f'{what}\\n')
  raise OSError(f'network blocked by the test: {what}')


_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):
  name = host.decode() if isinstance(host, bytes) else host
  if name is not None and name not in _LOCAL:
    _refuse(f'lookup {name}')
  return _getaddrinfo(host, *args, **kwargs)


_connect = socket.socket.connect


def _guarded_connect(self, address):
  if self.family in (socket.AF_INET, socket.AF_INET6) and (
      address[0] not in _LOCAL):
    _refuse(f'connect {address}')
  return _connect(self, address)


socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect
'''


def _md5(path: pathlib.Path) -> str:
  return hashlib.md5(path.read_bytes()).hexdigest()


def test_readme_first_command_in_a_fresh_clone(real_data_dir, tmp_path):
  assert ' '.join(COMMAND[1:]) in (REPO / 'README.md').read_text(), (
      'the README\'s first command changed; update COMMAND')
  clone = tmp_path / 'clone'
  shutil.copytree(REPO / 'configs', clone / 'configs')
  mirror_root = tmp_path / 'mirror'
  mirror_root.mkdir()
  for f in real_data_dir.iterdir():
    if f.is_file() and f.name != ABSENT and f.name.startswith('kmnist'):
      shutil.copy(f, mirror_root / f.name)
  guard = tmp_path / 'guard'
  guard.mkdir()
  (guard / 'sitecustomize.py').write_text(_NETWORK_GUARD)
  network_log = tmp_path / 'network.log'
  home = tmp_path / 'home'
  home.mkdir()
  server = MirrorServer(mirror_root)
  try:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('KMNIST_JAX_') and not k.lower().endswith(
               '_proxy') and k not in ('PYTHONPATH', 'XDG_CACHE_HOME')}
    env.update(HOME=str(home), PYTHONPATH=f'{guard}{os.pathsep}{REPO}',
               KMNIST_JAX_MIRROR=server.url, KMNIST_JAX_MIRROR_ONLY='1',
               KMNIST_JAX_COMPILATION_CACHE='0',
               KMNIST_JAX_TEST_NETWORK_LOG=str(network_log))
    proc = subprocess.run([sys.executable, *COMMAND], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)
  finally:
    server.close()
  stderr = proc.stderr[-3000:]
  assert (clone / 'workdirs' / 'default').is_dir(), stderr
  assert proc.returncode not in (0, None), stderr
  assert 'Traceback' not in proc.stderr, stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, stderr
  assert ABSENT in errors[0] and 'download' in errors[0], errors[0]
  assert ABSENT in server.log, server.log  # The mirror was asked.
  assert not network_log.exists(), network_log.read_text()
  # What the mirror served landed verified; nothing half-written.
  data_dir = home / '.cache' / 'kmnist_jax' / 'kmnist'
  landed = sorted(p.name for p in data_dir.iterdir()) if (
      data_dir.is_dir()) else []
  served = sorted({n for n in server.log if (mirror_root / n).is_file()})
  assert landed == served, (landed, server.log)
  for name in landed:
    assert _md5(data_dir / name) == _md5(real_data_dir / name), name
