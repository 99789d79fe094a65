"""A download killed midway leaves no file under its final name; the next
run completes it (and removes the stale partial file). Served by a local
http.server on 127.0.0.1 from the real files (skipped without them)."""

import hashlib
import os
import subprocess
import sys
import time

from kmnist_jax.data import datasets as data

from faults import conftest as fc
from mirror_server import MirrorServer

_IMAGES = 'kmnist-test-imgs.npz'
_LABELS = 'kmnist-test-labels.npz'


def _md5(path):
  return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_killed_midway_then_rerun_completes(real_data_dir, tmp_path):
  data_dir, workdir = tmp_path / 'data', tmp_path / 'w'
  data_dir.mkdir()
  # The first request for the images sends half, then hangs until close().
  server = MirrorServer(real_data_dir, pause_s=60)
  server.plan[_IMAGES] = ['pause']
  env = dict(fc.env(), KMNIST_JAX_MIRROR=server.url,
             KMNIST_JAX_MIRROR_ONLY='1')
  cmd = [sys.executable, '-m', 'kmnist_jax.main', '--config',
         str(fc.REPO / 'configs' / 'seed_cnn.py:smoke'),
         f'--workdir={workdir}', f'--config.data_dir={data_dir}']
  try:
    proc = subprocess.Popen(cmd, cwd=fc.REPO, env=env,
                            stderr=subprocess.DEVNULL)
    try:
      assert server.paused.wait(120), 'the download never started'
      deadline = time.time() + 30
      while not any(p.stat().st_size for p in data_dir.glob(f'.{_IMAGES}.*')):
        assert time.time() < deadline, 'no partial file appeared'
        time.sleep(0.02)
      assert not (data_dir / _IMAGES).exists()
    finally:
      proc.kill()
      proc.wait()
    # Nothing under the final names; SIGKILL skips the cleanup, so a hidden
    # partial file stays. Aged past data.STALE_PART_S, the rerun deletes it.
    names = sorted(p.name for p in data_dir.iterdir())
    assert _IMAGES not in names and _LABELS not in names, names
    assert all(n.startswith(f'.{_IMAGES}.') and n.endswith('.tmp')
               for n in names), names
    old = time.time() - data.STALE_PART_S - 60
    for part in data_dir.iterdir():
      os.utime(part, (old, old))
    rerun = subprocess.run(cmd, cwd=fc.REPO, env=env, capture_output=True,
                           text=True, timeout=300)
  finally:
    server.close()
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert sorted(p.name for p in data_dir.iterdir()) == [_IMAGES, _LABELS]
  for name in (_IMAGES, _LABELS):
    assert _md5(data_dir / name) == _md5(real_data_dir / name)
  assert fc.metrics(workdir)[-1]['split'] == 'eval'
