"""Runs `python -m kmnist_jax.main` and injects one fault at a planned point.

  python tests/faults/fault_runner.py KIND N DELAY_MS SIGNAL -- MAIN_FLAGS...

KIND picks the trigger, counted from this process's start:
  step   after the N-th train step is dispatched (its result may be pending)
  save   after the N-th checkpoint save starts (Orbax saves asynchronously)
  eval   after the N-th eval batch is dispatched
  write  after the N-th metrics.jsonl record is written
  hold   at the N-th train step, wait until the file DELAY_MS names exists
DELAY_MS later (0: at once, in the triggering thread) the process sends
itself SIGNAL (KILL, TERM or INT). Before a fault it prints one line
`fault: ...` to stderr. The patches wrap functions the training loop looks
up at call time; nothing in the package changes.
"""

import os
import pathlib
import runpy
import signal
import sys
import threading
import time

from kmnist_jax.train import checkpoints as checkpointing
from kmnist_jax.core import metrics
from kmnist_jax.train import steps


def _install(kind: str, n: int, delay_ms: str, signame: str) -> None:
  counts = {'n': 0}
  signum = getattr(signal, f'SIG{signame}')

  def fire(where: str) -> None:
    print(f'fault: SIG{signame} {delay_ms} ms after {where} #{n}',
          file=sys.stderr, flush=True)
    delay = float(delay_ms) / 1000
    if delay <= 0:
      os.kill(os.getpid(), signum)
      return
    threading.Thread(target=lambda: (time.sleep(delay),
                                     os.kill(os.getpid(), signum)),
                     daemon=True).start()

  def hit() -> bool:
    counts['n'] += 1
    return counts['n'] == n

  def wrap_step_factory(factory, where):

    def make(*args, **kwargs):
      step = factory(*args, **kwargs)

      def wrapped(*a, **k):
        out = step(*a, **k)
        if hit():
          if kind == 'hold':
            print('fault: holding', file=sys.stderr, flush=True)
            while not pathlib.Path(delay_ms).exists():
              time.sleep(0.02)
          else:
            fire(where)
        return out

      return wrapped

    return make

  if kind in ('step', 'hold'):
    steps.make_train_step = wrap_step_factory(steps.make_train_step,
                                              'train step')
  elif kind == 'eval':
    steps.make_eval_step = wrap_step_factory(steps.make_eval_step,
                                             'eval batch')
  elif kind == 'save':
    save = checkpointing.Checkpointer.save

    def wrapped_save(self, *a, **k):
      save(self, *a, **k)
      if hit():
        fire('checkpoint save')

    checkpointing.Checkpointer.save = wrapped_save
  elif kind == 'write':
    write = metrics.MetricWriter.write

    def wrapped_write(self, record):
      write(self, record)
      if hit():
        fire('metrics record')

    metrics.MetricWriter.write = wrapped_write
  else:
    raise SystemExit(f'fault_runner: unknown kind {kind!r}')


def main() -> None:
  args = sys.argv[1:]
  split = args.index('--')
  kind, n, delay_ms, signame = args[:split]
  _install(kind, int(n), delay_ms, signame)
  sys.argv = ['kmnist_jax.main'] + args[split + 1:]
  runpy.run_module('kmnist_jax.main', run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
