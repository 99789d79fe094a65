"""SIGKILL at random points, rerun each time: nothing is lost.

Each kill is planned from one seed, printed and recorded (see the `fault
injection seeds` section of the pytest summary); set
KMNIST_JAX_FAULT_SEED to replay a run. The kills run one after another in
one workdir, each rerun resuming from what the previous kill left. After
every kill the latest checkpoint must restore and equal the uninterrupted
reference run's checkpoint of the same step, bit for bit; after the final
rerun, metrics.jsonl and the final state equal the reference's exactly.
"""

import os
import random

from kmnist_jax.train import checkpoints as checkpointing
from kmnist_jax.inference import evaluate

from faults import conftest as fc

TOTAL = fc.NUM_EPOCHS * fc.STEPS_PER_EPOCH
# Inside a train step, during an async checkpoint save, inside eval, and
# between the train and eval records of an epoch end.
KINDS = ['step'] * 3 + ['save'] * 3 + ['eval'] * 3 + ['write'] * 2


def saves_after(latest: int) -> list[int]:
  """The steps a run resuming from `latest` saves checkpoints at."""
  return [s for s in range(latest + 1, TOTAL + 1)
          if s % fc.STEPS_PER_EPOCH == 0 or s % fc.CHECKPOINT_EVERY == 0]


def choose(kind: str, rng: random.Random, latest: int):
  """(kind, n, delay_ms) of a fault that fires before the run can finish."""
  remaining = TOTAL - latest
  if kind == 'save':
    saves = len(saves_after(latest))
    if saves >= 2:
      return 'save', rng.randint(1, min(3, saves - 1)), round(
          rng.uniform(0, 40), 1)
    kind = 'step'
  if kind == 'step':
    if remaining <= 1:
      return 'step', 1, 0
    return 'step', rng.randint(1, min(8, remaining - 1)), rng.choice(
        [0, round(rng.uniform(1, 20), 1)])
  if kind == 'eval':
    return 'eval', rng.randint(1, fc.EVAL_BATCHES), 0
  return 'write', rng.randint(1, 2), 0


def latest_step(workdir) -> int | None:
  if not (workdir / 'checkpoints').is_dir():
    return None
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(
    learnable_data_dir, reference, tmp_path, record_property):
  seed = int(os.environ.get('KMNIST_JAX_FAULT_SEED')
             or random.SystemRandom().randrange(2**31))
  rng = random.Random(seed)
  kinds = rng.sample(KINDS, len(KINDS))
  record_property('fault_seed', f'KMNIST_JAX_FAULT_SEED={seed} '
                  f'({len(kinds)} SIGKILLs)')
  print(f'fault seed {seed}: KMNIST_JAX_FAULT_SEED={seed} replays this run')
  workdir = tmp_path / 'killed'
  args = fc.train_args(learnable_data_dir, workdir)
  log, latest = [], 0
  for kind in kinds:
    fault = choose(kind, rng, latest)
    proc = fc.run_fault(*fault, 'KILL', args)
    context = (f'seed {seed}, fault {fault} after {log}: rc '
               f'{proc.returncode}\n{proc.stderr[-2000:]}')
    assert proc.returncode == -9 and 'fault: SIGKILL' in proc.stderr, context
    step = latest_step(workdir)
    log.append((fault, step))
    print(f'  kill {len(log)}: {fault} -> latest checkpoint {step}')
    if step is None:
      continue
    assert step >= latest, context  # Never loses a saved checkpoint.
    latest = step
    # The latest checkpoint restores and is exactly the reference's.
    _, _, got, got_step = evaluate.restore_for_inference(str(workdir))
    _, _, want, _ = evaluate.restore_for_inference(str(reference), step)
    assert got_step == step
    fc.assert_same_state(got, want, context)
  assert len(log) >= 10
  proc = fc.run_main(args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert fc.metrics(workdir) == fc.metrics(reference), f'seed {seed}'
  _, _, got, got_step = evaluate.restore_for_inference(str(workdir))
  _, _, want, want_step = evaluate.restore_for_inference(str(reference))
  assert got_step == want_step == TOTAL
  fc.assert_same_state(got, want, f'seed {seed}')
  assert not list(workdir.glob('checkpoints/*tmp*')), 'temp dirs left over'
