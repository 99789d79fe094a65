"""Ctrl-C and SIGTERM during training: stop after this step, or abort.

The first SIGINT or SIGTERM is acknowledged at once, by a watcher thread
woken through `signal.set_wakeup_fd` (Python's own handlers wait until the
main thread leaves the step it is blocked in); the loop then saves a
checkpoint after the current step and returns. A second SIGINT exits the
process at once with status 130, without saving: Orbax writes each
checkpoint to a temporary folder and renames it when complete, so the last
complete checkpoint stays intact and the next run resumes from it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

import jax

from kmnist_jax.core import console
from kmnist_jax.core import distributed

ACK = 'stopping after this step; Ctrl-C again to abort without saving'


class StopRequest:
  """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and returns."""

  def __init__(self, checkpoints: str = ''):
    self.signum = None
    self._seen = 0
    self.checkpoints = checkpoints  # Named in the abort line.
    self._old = {}
    self._old_fd = None
    self._pair = None
    self._thread = None

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self
    for s in (signal.SIGTERM, signal.SIGINT):
      self._old[s] = signal.signal(s, self._handle)
    try:
      self._pair = socket.socketpair()
      for sock in self._pair:
        sock.setblocking(True)
      self._pair[1].setblocking(False)
      self._old_fd = signal.set_wakeup_fd(self._pair[1].fileno(),
                                          warn_on_full_buffer=False)
    except (OSError, ValueError):  # No wakeup fd: the handler alone.
      self._pair = None
      return self
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name='kmnist_jax_stop')
    self._thread.start()
    return self

  def _handle(self, signum, frame):
    """Python's handler, in the main thread between two bytecodes: the
    quickest way to stop the loop; the watcher thread does the talking."""
    del frame
    if self.signum is None:
      self.signum = signum
    if self._thread is None:  # Without the watcher, the handler talks.
      self.got(signum)

  def _watch(self):
    while True:
      try:
        data = self._pair[0].recv(64)
      except OSError:
        return
      if not data:
        return
      for signum in data:
        if signum in (signal.SIGINT, signal.SIGTERM):
          self.got(signum)

  def got(self, signum: int) -> None:
    """A signal arrived: the first asks to stop, a second SIGINT aborts."""
    name = signal.Signals(signum).name
    self._seen += 1
    if self._seen == 1:
      if self.signum is None:
        self.signum = signum
      what = 'Ctrl-C' if signum == signal.SIGINT else name
      console.say(f'{what}: {ACK}')
      return
    if signum == signal.SIGINT:
      where = f' in {self.checkpoints}' if self.checkpoints else ''
      console.say(f'aborted by a second Ctrl-C, without saving; the last '
                  f'complete checkpoint{where} is intact')
      os._exit(130)  # pylint: disable=protected-access

  def __exit__(self, *exc):
    if self._pair is not None:
      signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
      self._pair[1].close()
      self._pair[0].shutdown(socket.SHUT_RDWR)
      self._thread.join(timeout=1)
      self._pair[0].close()
      self._pair = None
    for s, h in self._old.items():
      signal.signal(s, h)
    self._old.clear()

  def requested(self, sync_point: bool) -> str:
    """The signal's name if any process got one, else ''. With several
    processes they agree at sync points (log steps, epoch ends) only, so
    all stop after the same step."""
    if jax.process_count() == 1:
      got = self.signum is not None
    else:
      got = sync_point and distributed.any_process(self.signum is not None)
    return signal.Signals(self.signum or signal.SIGTERM).name if got else ''
