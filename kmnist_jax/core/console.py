"""What the CLI shows a person: plain lines, progress bars, run summaries.

`say` prints one plain line on stderr (no absl prefix). `Bar` draws a
progress bar with its rate and ETA, on stderr, only when stderr is a
terminal; elsewhere (a log file, a pipe, CI) it draws nothing at all, and
the callers print their plain progress lines instead. KMNIST_JAX_PROGRESS=0
switches bars off on a terminal too. `set_quiet(True)` silences both, for
the processes other than 0 of a multi-process run.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

from kmnist_jax.core.environment import switched_off

_STATE = {'quiet': False, 'bar': None}
# Exit codes of a training stopped by a signal after saving a checkpoint:
# 128 + the signal's number, as a shell reports a process the signal killed,
# so that schedulers record the job as interrupted, not done.
EXIT_INTERRUPTED = {'SIGINT': 130, 'SIGTERM': 143}
_LOCK = threading.RLock()  # Lines come from the Ctrl-C watcher thread too.
BAR_WIDTH = 24


def set_quiet(quiet: bool) -> None:
  _STATE['quiet'] = bool(quiet)


def bars_enabled() -> bool:
  """Whether progress bars are drawn: stderr is a terminal, not quiet,
  and KMNIST_JAX_PROGRESS is not an off-word."""
  if _STATE['quiet'] or switched_off(os.environ.get('KMNIST_JAX_PROGRESS',
                                                    '1')):
    return False
  try:
    return sys.stderr.isatty()
  except (AttributeError, ValueError):
    return False


def say(message: str) -> None:
  """One plain line on stderr, above the bar being drawn (if any)."""
  if _STATE['quiet']:
    return
  with _LOCK:
    bar = _STATE['bar']
    if bar is not None:
      sys.stderr.write('\r\x1b[K')
    sys.stderr.write(message + '\n')
    if bar is not None:
      bar.draw()
    sys.stderr.flush()


def clock(seconds: float | None) -> str:
  """'1:02:03', '02:03' or '?' for an unknown time."""
  if seconds is None or not math.isfinite(seconds):
    return '?'
  s = int(round(seconds))
  h, rest = divmod(s, 3600)
  return (f'{h}:' if h else '') + f'{rest // 60:02d}:{rest % 60:02d}'


def duration(seconds: float) -> str:
  """'4.6 s', '3 min 05 s', '2 h 03 min'."""
  if seconds < 60:
    return f'{seconds:.1f} s'
  s = int(round(seconds))
  if s < 3600:
    return f'{s // 60} min {s % 60:02d} s'
  return f'{s // 3600} h {s % 3600 // 60:02d} min'


class Bar:
  """A progress bar: `desc |████      | n/total [elapsed<ETA, rate unit/s]`.

  Use as a context manager (or call `close`). Draws nothing unless
  `bars_enabled()`; `update` then costs a counter increment. `leave`: keep
  the finished bar's line; else it is erased (the caller prints a line).
  """

  def __init__(self, total: int, desc: str, unit: str = 'step',
               initial: int = 0, enabled: bool | None = None,
               leave: bool = False):
    self.total, self.desc, self.unit = max(int(total), 0), desc, unit
    self.leave = leave
    self.n = self.initial = int(initial)
    self.start = self.last = time.time()
    self.on = bars_enabled() if enabled is None else enabled
    if self.on:
      with _LOCK:
        _STATE['bar'] = self
        self.draw()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def update(self, n: int = 1) -> None:
    self.n += n
    if self.on and (time.time() - self.last >= 0.1 or self.n >= self.total):
      with _LOCK:
        self.draw()

  def line(self) -> str:
    elapsed = time.time() - self.start
    done = self.n - self.initial
    rate = done / elapsed if done and elapsed > 0 else None
    eta = (self.total - self.n) / rate if rate else None
    filled = BAR_WIDTH * min(self.n, self.total) // max(self.total, 1)
    speed = f'{rate:.1f} {self.unit}/s' if rate else f'? {self.unit}/s'
    return (f'{self.desc} |{"█" * filled}{" " * (BAR_WIDTH - filled)}| '
            f'{self.n}/{self.total} [{clock(elapsed)}<{clock(eta)}, '
            f'{speed}]')

  def draw(self) -> None:
    sys.stderr.write('\r' + self.line() + '\x1b[K')
    sys.stderr.flush()
    self.last = time.time()

  def close(self) -> None:
    if not self.on:
      return
    with _LOCK:
      if self.leave:
        self.draw()
        sys.stderr.write('\n')
      else:
        sys.stderr.write('\r\x1b[K')
      sys.stderr.flush()
      if _STATE['bar'] is self:
        _STATE['bar'] = None
      self.on = False


def _eval_records(workdir: str) -> list[dict]:
  import json  # pylint: disable=g-import-not-at-top
  records = []
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue
        if record.get('split') == 'eval' and 'accuracy' in record:
          records.append(record)
  except OSError:
    pass
  return records


def summary_lines(config, workdir: str, summary: dict,
                  seconds: float) -> list[str]:
  """The closing summary of a training run (or a k-NN / SVM fit): what it
  did, its final and best eval accuracy, its test accuracy, the paths."""
  step, total = summary.get('step'), summary.get('total_steps')
  wall = summary.get('wall_seconds') or 0.0
  took = f'in {duration(seconds)}' + (
      f' ({duration(wall)} over all resumes)' if wall > seconds + 1 else '')
  if summary.get('interrupted'):
    signame = summary['interrupted']
    head = (f'Stopped by {signame}; checkpoint saved at step {step}/{total}, '
            f'{took}. Interrupted, resumable (exit '
            f'{EXIT_INTERRUPTED.get(signame, 1)}): rerun the same command to '
            'resume.')
  elif summary.get('already_complete'):
    head = f'already complete: step {step}/{total}'
  else:
    head = 'done' + (f': step {step}/{total} {took}' if step is not None
                     else f' {took}')
  lines = [head]
  records = _eval_records(workdir)
  final = summary.get('eval') or {}
  if 'accuracy' in final or records:
    acc = final.get('accuracy', records[-1]['accuracy'] if records else None)
    text = f'{config.eval_split}: final accuracy {acc:.4f}'
    if len(records) > 1:  # Epochs of training; a fit has one record.
      best = max(records, key=lambda r: r['accuracy'])
      text += (f', best {best["accuracy"]:.4f} (step {best["step"]}, '
               f'epoch {best["epoch"]})')
    lines.append(f'  eval {text}')
  if 'accuracy' in (summary.get('test') or {}):
    lines.append(f'  test {config.test_split}: accuracy '
                 f'{summary["test"]["accuracy"]:.4f}')
  try:
    written = sorted(n + ('/' if os.path.isdir(os.path.join(workdir, n))
                          else '')
                     for n in os.listdir(workdir) if not n.startswith('.'))
  except OSError:
    written = []
  lines.append(f'  wrote {os.path.abspath(workdir)}/: {", ".join(written)}')
  return lines
