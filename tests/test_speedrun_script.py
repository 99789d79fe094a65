"""experiments.speedrun: reading a growing metrics file, the summary."""

import json

from experiments import speedrun


def test_eval_records_skip_train_records_and_a_half_written_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  recs = [dict(split='train', epoch=1, accuracy=0.5),
          dict(split='eval', epoch=1, accuracy=0.9)]
  text = ''.join(json.dumps(r) + '\n' for r in recs)
  path.write_text(text + '{"split": "eval", "epo')  # Being written.
  out, seen = speedrun._eval_records(str(path), 0)
  assert [r['accuracy'] for r in out] == [0.9] and seen == 2
  # Later, the line is complete: only the new record comes back.
  path.write_text(text + json.dumps(dict(split='eval', epoch=2,
                                         accuracy=0.99)) + '\n')
  out, seen = speedrun._eval_records(str(path), seen)
  assert [(r['epoch'], r['accuracy']) for r in out] == [(2, 0.99)]
  assert seen == 3
  assert speedrun._eval_records(str(tmp_path / 'none.jsonl'), 0) == ([], 0)


def test_median_only_when_every_seed_got_there():
  assert speedrun.summary([dict(seconds=30.0), dict(seconds=10.0),
                           dict(seconds=20.0)]) == 20.0
  assert speedrun.summary([dict(seconds=30.0), dict(seconds=None)]) is None


def test_jax_overrides_reach_the_command_line(tmp_path, monkeypatch):
  """--jax_override k=v becomes --config.k=v of the CLI the clock times."""
  seen = {}

  class Done:
    def __init__(self, cmd, **kwargs):
      seen['cmd'] = cmd
      seen['env'] = kwargs['env']

    def poll(self):
      return 0

  monkeypatch.setattr(speedrun.subprocess, 'Popen', Done)
  r = speedrun.jax_time_to(0.99, 2, 'configs/speedrun.py', str(tmp_path), 5,
                           ['--config.compute_dtype=bfloat16'])
  assert seen['cmd'][-2:] == ['--config.seed=2',
                              '--config.compute_dtype=bfloat16']
  assert seen['env']['KMNIST_JAX_COMPILATION_CACHE'] == '0'
  assert r['seconds'] is None and r['history'] == []


def test_torch_times_count_from_a_fresh_worker_process(monkeypatch, tmp_path):
  """Each PyTorch seed gets its own worker, closed after; its epoch times
  move by the worker's start-up (process start to the first step), so both
  sides are timed from a process's start."""
  calls, clock = [], iter([1000.0])

  class Worker:
    def __init__(self, python, data_dir, env):
      calls.append(('start', python, data_dir))

    def __call__(self, cmd, **kw):
      calls.append((cmd, kw['seed'], kw['mode'], kw['eval_from_epoch']))
      return {'started_at': 1004.5, 'history': [
          {'epoch': 3, 'accuracy': 0.985, 'seconds': 20.0},
          {'epoch': 4, 'accuracy': 0.9905, 'seconds': 26.0}]}

    def close(self):
      calls.append(('close',))

  monkeypatch.setattr(speedrun.torch_client, 'TorchWorker', Worker)
  monkeypatch.setattr(speedrun.time, 'time', lambda: next(clock))
  monkeypatch.setattr(speedrun.recipe, 'compressed_config',
                      lambda *a: 'config')
  monkeypatch.setattr(speedrun.recipe, 'torch_recipe', lambda c: {'r': c})
  args = speedrun.argparse.Namespace(
      torch_config='speedrun', torch_epochs=16, data_dir='D',
      torch_python='P', target=0.99, torch_mode='bf16_cl', torch_eval_from=3)
  r = speedrun.torch_time_to(args, 1)
  assert calls == [('start', 'P', 'D'), ('fit', 1, 'bf16_cl', 3), ('close',)]
  assert r['startup_seconds'] == 4.5
  assert r['seconds'] == 30.5 and r['epochs'] == 4
  assert [h['seconds'] for h in r['history']] == [24.5, 30.5]
  # A data root (a folder per dataset) gives the worker its kmnist folder.
  (tmp_path / 'kmnist').mkdir()
  calls.clear()
  clock = iter([1000.0])
  speedrun.torch_time_to(
      speedrun.argparse.Namespace(**dict(vars(args), data_dir=str(tmp_path))), 1)
  assert calls[0] == ('start', 'P', str(tmp_path / 'kmnist'))
