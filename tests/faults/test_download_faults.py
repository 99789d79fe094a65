"""A download killed midway leaves no file under its final name; the next
run completes it (and removes the stale partial file). Served by a local
http.server on 127.0.0.1 from the real files (skipped without them)."""

import hashlib
import http.server
import os
import pathlib
import subprocess
import sys
import threading
import time

from kmnist_jax import data

from faults import conftest as fc

_IMAGES = 'kmnist-test-imgs.npz'
_LABELS = 'kmnist-test-labels.npz'


class _HangingServer:
  """Serves `root`; the first request for `hang` sends half, then hangs."""

  def __init__(self, root: pathlib.Path, hang: str):
    self.paused, self.release = threading.Event(), threading.Event()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # noqa: N802
        name = self.path.rsplit('/', 1)[-1]
        path = root / name
        if not path.is_file():
          self.send_error(404)
          return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if name == hang and not server.paused.is_set():
          self.wfile.write(body[:len(body) // 2])
          self.wfile.flush()
          server.paused.set()
          server.release.wait(60)
          return
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/mirror'
    threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                     daemon=True).start()

  def close(self):
    self.release.set()
    self.httpd.shutdown()
    self.httpd.server_close()


def _md5(path):
  return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_killed_midway_then_rerun_completes(real_data_dir, tmp_path):
  data_dir, workdir = tmp_path / 'data', tmp_path / 'w'
  data_dir.mkdir()
  server = _HangingServer(real_data_dir, _IMAGES)
  env = dict(fc.env(), KMNIST_JAX_MIRROR=server.url)
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
    assert all(n.startswith(f'.{_IMAGES}.part-') for n in names), names
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
