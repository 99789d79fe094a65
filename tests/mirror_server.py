"""A local http.server mirror with scripted failures, for download tests."""

import http.server
import pathlib
import threading


class MirrorServer:
  """http.server on 127.0.0.1 serving `root`, with scripted failures.

  `plan[name]` is a list of modes used by successive requests for `name`:
  'ok', '500', 'truncate' (Content-Length of the full body, half sent),
  'wrong' (same length, different bytes), 'pause' (half sent, then waits
  for `release`, at most `pause_s` seconds) or 'endless' (no Content-Length,
  the file repeated up to `endless_bytes`, until the client hangs up).
  `sent[name]` counts the body bytes written to the socket.
  """

  def __init__(self, root: pathlib.Path, pause_s: float = 10,
               endless_bytes: int = 64 << 20):
    self.root, self.plan, self.log, self.sent = root, {}, [], {}
    self.endless_bytes = endless_bytes
    self.release, self.paused = threading.Event(), threading.Event()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # noqa: N802
        name = self.path.rsplit('/', 1)[-1]
        server.log.append(name)
        modes = server.plan.get(name)
        mode = modes.pop(0) if modes else 'ok'
        path = server.root / name
        if mode == '500':
          self.send_error(500, 'scripted failure')
          return
        if not path.is_file():
          self.send_error(404)
          return
        body = path.read_bytes()
        if mode == 'wrong':
          body = bytes(b ^ 0xFF for b in body)
        if mode == 'endless':
          self._endless(name, body)
          return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        half = len(body) // 2
        if mode in ('truncate', 'pause'):
          self.wfile.write(body[:half])
          self.wfile.flush()
          if mode == 'truncate':
            return
          server.paused.set()
          server.release.wait(pause_s)
          self.wfile.write(body[half:])
          return
        self.wfile.write(body)

      def _endless(self, name, body):
        self.send_response(200)
        self.end_headers()
        server.sent[name] = 0
        while server.sent[name] < server.endless_bytes:
          try:
            self.wfile.write(body)
            self.wfile.flush()
          except OSError:  # The client hung up.
            return
          server.sent[name] += len(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/mirror'
    self.thread = threading.Thread(target=self.httpd.serve_forever,
                                   args=(0.05,), daemon=True)
    self.thread.start()

  def close(self):
    self.release.set()
    self.httpd.shutdown()
    self.httpd.server_close()
