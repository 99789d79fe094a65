"""Training, evaluation and checkpointing on tiny synthetic data."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from absl import logging as absl_logging
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from kmnist_jax.config import base as configlib
from kmnist_jax.models import densenet
from kmnist_jax.inference import evaluate
from kmnist_jax.train import batches as input_pipeline
from kmnist_jax.core import metrics as metrics_lib
from kmnist_jax.models import factory as models
from kmnist_jax.train import optim
from kmnist_jax.models import resnets
from kmnist_jax.train import steps
from kmnist_jax.train import state as train_state
from kmnist_jax.core import distributed
from kmnist_jax.cpu import compiler
from kmnist_jax.train import loop as train
from kmnist_jax.core.errors import UserError
from kmnist_jax.methods import harness

from conftest import make_learnable_dir  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return make_learnable_dir(tmp_path_factory.mktemp('learnable'))


def tiny_config(data_dir, **overrides):
  c = configlib.base_config()
  c.update(dict(
      model='seed_cnn', data_dir=str(data_dir), train_split='train',
      eval_split='test', num_epochs=2, batch_size=32, eval_batch_size=64,
      log_every_steps=5, write_plots=False, learning_rate=3e-3))
  c.update(overrides)
  return c


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(
      (state.params, state.batch_stats, state.opt_state))]


def strip_time(records):
  return [{k: v for k, v in r.items() if k != 'wall_time'} for r in records]


def read_jsonl(path):
  return [json.loads(l) for l in open(path)]


def test_eval_from_epoch_skips_the_early_evaluations(data_dir, tmp_path,
                                                     caplog):
  """Epochs before eval_from_epoch: a train record and a checkpoint, no
  eval and no Orbax warning for the missing metrics; the last epoch always
  evaluates, and equals a run that evaluates every epoch (skipping
  evaluations changes no training number)."""
  config = tiny_config(data_dir, train_split='train[:64]', num_epochs=3,
                       eval_from_epoch=5)
  with caplog.at_level('WARNING'):
    _, m = harness.fit(config, str(tmp_path / 'w'))
    absl_logging.warning('a warning of our own still shows')
  assert 'did not provide metrics' not in caplog.text
  assert 'a warning of our own still shows' in caplog.text
  recs = read_jsonl(tmp_path / 'w' / 'metrics.jsonl')
  assert [(r['epoch'], r['split']) for r in recs] == [
      (1, 'train'), (2, 'train'), (3, 'train'), (3, 'eval')]
  assert sorted(os.listdir(tmp_path / 'w' / 'checkpoints')) == ['2', '4',
                                                                '6']
  _, every = harness.fit(
      tiny_config(data_dir, train_split='train[:64]', num_epochs=3),
      str(tmp_path / 'every'))
  assert m['eval']['accuracy'] == every['eval']['accuracy']
  assert m['train'] == every['train']


def test_one_step(data_dir, tmp_path):
  config = tiny_config(data_dir, train_split='train[:32]', num_epochs=1)
  state, m = harness.fit(config, str(tmp_path / 'w'))
  assert int(state.step) == 1 and m['steps_per_epoch'] == 1
  assert np.isfinite(m['train']['loss']) and m['train']['loss'] > 0
  assert m['eval']['num_examples'] == 200
  assert sorted(os.listdir(tmp_path / 'w' / 'checkpoints')) == ['1']
  recs = read_jsonl(tmp_path / 'w' / 'metrics.jsonl')
  assert [r['split'] for r in recs] == ['train', 'eval']
  assert recs[1]['accuracy'] == m['eval']['accuracy']


def test_training_learns_and_eval_reproduces(data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  state, m = harness.fit(tiny_config(data_dir, num_epochs=3),
                                      workdir)
  assert int(state.step) == 3 * (320 // 32)
  assert m['eval']['accuracy'] > 0.8, m['eval']  # Chance is 0.1.
  recs = read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  assert [(r['epoch'], r['split']) for r in recs] == [
      (e, s) for e in (1, 2, 3) for s in ('train', 'eval')]
  assert {'step', 'epoch', 'split', 'loss', 'accuracy', 'balanced_accuracy',
          'wall_time'} <= set(recs[-1])
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  # Eval of the saved checkpoint reproduces the final training eval exactly.
  result = harness.evaluate(None, workdir)
  assert result['accuracy'] == m['eval']['accuracy']
  # The same 200 per-example losses, summed by another compilation (in
  # another order: with oneDNN off on Intel AMX the two differ by 1.1e-6):
  # float32 bounds a sum of n positive terms by (n - 1) * eps relative.
  assert result['loss'] == pytest.approx(
      m['eval']['loss'], rel=200 * float(np.finfo(np.float32).eps))
  assert result['checkpoint_step'] == int(state.step)
  assert np.asarray(result['confusion_matrix']).sum() == 200
  saved = json.load(open(os.path.join(workdir, 'eval_test.json')))
  assert saved['accuracy'] == result['accuracy']
  assert len(saved['per_class_accuracy']) == 10
  assert set(saved['checksums']) == {'kmnist-test-imgs.npz',
                                     'kmnist-test-labels.npz'}
  # Checkpoint round-trip: restored params equal the final ones.
  _, _, restored, step = evaluate.restore_for_inference(workdir)
  assert step == int(state.step)
  for a, b in zip(leaves(state), leaves(restored)):
    np.testing.assert_array_equal(a, b)


def test_eval_may_change_the_test_time_views_only(data_dir, tmp_path):
  """`--mode eval` of a run trained without test-time views scores its
  checkpoint with them when the config asks (and any other change of the
  recipe is still refused)."""
  workdir = str(tmp_path / 'w')
  config = tiny_config(data_dir, num_epochs=1)
  _, m = harness.fit(config, workdir)
  plain = harness.evaluate(config, workdir)
  assert plain['accuracy'] == m['eval']['accuracy']
  views = harness.evaluate(tiny_config(data_dir, num_epochs=1, tta_shift=1),
                           workdir)
  _, graphdef, state, _ = evaluate.restore_for_inference(workdir)
  images, labels = np.load(data_dir / 'kmnist-test-imgs.npz')['arr_0'], (
      np.load(data_dir / 'kmnist-test-labels.npz')['arr_0'])
  log_probs = steps.infer(steps.make_infer_fn(graphdef, 1), state, images,
                          64)
  assert views['accuracy'] == np.mean(log_probs.argmax(-1) == labels)
  assert views['loss'] != plain['loss']  # The views changed the scores.
  with pytest.raises(UserError, match='learning_rate'):
    harness.evaluate(tiny_config(data_dir, num_epochs=1, learning_rate=0.1),
                     workdir)


def test_same_seed_same_numbers_and_resume_equals_uninterrupted(
    data_dir, tmp_path):
  config = tiny_config(data_dir, num_epochs=2, checkpoint_every_steps=4)
  state_a, m_a = harness.fit(config, str(tmp_path / 'a'))
  state_b, m_b = harness.fit(config, str(tmp_path / 'b'))
  assert strip_time(m_a['history']) == strip_time(m_b['history'])
  # Resume: stop after epoch 1, then continue to epoch 2.
  harness.fit(tiny_config(data_dir, num_epochs=1,
                                       checkpoint_every_steps=4),
                           str(tmp_path / 'c'))
  state_c, _ = harness.fit(config, str(tmp_path / 'c'))
  for a, c in zip(leaves(state_a), leaves(state_c)):
    np.testing.assert_array_equal(a, c)
  assert strip_time(read_jsonl(tmp_path / 'a' / 'metrics.jsonl')) == (
      strip_time(read_jsonl(tmp_path / 'c' / 'metrics.jsonl')))


def test_batch_stream_resume_equivalence():
  n, b = 100, 16
  full = [input_pipeline.batch_indices(7, s, n, b) for s in range(20)]
  resumed = [input_pipeline.batch_indices(7, s, n, b) for s in range(9, 20)]
  for x, y in zip(full[9:], resumed):
    np.testing.assert_array_equal(x, y)
  epoch0 = np.concatenate(full[:6])  # 6 steps per epoch, 4 examples dropped.
  assert len(set(epoch0.tolist())) == 96
  assert not np.array_equal(full[0], full[6])  # A new order each epoch.
  assert input_pipeline.iterator_state(13, 6, 7) == {
      'epoch': 2, 'step_in_epoch': 1, 'step': 13, 'seed': 7}


def test_eval_counts_every_example_once():
  images = np.arange(7 * 28 * 28, dtype=np.uint32).reshape(7, 28, 28)
  ev = input_pipeline.make_eval_data(images.astype(np.uint8),
                                     np.arange(7), batch_size=3)
  assert ev.num_batches == 3 and ev.num_examples == 7
  assert np.asarray(ev.mask).tolist() == [True] * 7 + [False] * 2
  np.testing.assert_array_equal(np.asarray(ev.labels)[:7], np.arange(7))


def test_eval_step_compiles_once_for_all_batches():
  config = tiny_config('unused')
  tx = optim.create_optimizer(config, 1)
  graphdef, state = train_state.init_state(config, 10, tx)
  repl = NamedSharding(distributed.make_mesh(), P())
  images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), np.uint8)
  ev = input_pipeline.make_eval_data(images, np.arange(7) % 10, 3, repl)
  eval_step = steps.make_eval_step(graphdef, 10, 3)
  m = steps.evaluate_arrays(eval_step, state, ev, 10)
  assert ev.num_batches == 3 and m['num_examples'] == 7
  assert eval_step._cache_size() == 1  # pylint: disable=protected-access


# Slow to compile at the default level: resnets 7-18 s each, densenets
# 106-220 s.
_DEEP = set(resnets.MODELS) | set(densenet.MODELS)


@pytest.mark.parametrize('model', [
    pytest.param(m, marks=pytest.mark.slow) if m in _DEEP else m
    for m in sorted(models.MODELS)])
def test_init_state_equals_the_default_optimisation_level(model):
  """train_state.jit_init_state compiles at XLA backend optimisation level 1
  (faster to compile); the state must be bitwise the one XLA's default level
  computes."""
  config = tiny_config('unused', model=model)
  tx = optim.create_optimizer(config, 1)
  repl = NamedSharding(distributed.make_mesh(), P())
  fast = train_state.jit_init_state(config, 10, tx, repl)()
  default = jax.jit(lambda: train_state.init_state(config, 10, tx)[1],
                    out_shardings=repl)()
  assert compiler.INIT_COMPILER_OPTIONS == {'xla_backend_optimization_level': 1}
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(default),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('field,value,match', [
    ('model', 'resnet9000', 'valid: .*keras_cnn.*seed_cnn'),
    ('optimizer', 'adamax', "config.optimizer='adamax': expected one of "
     'adadelta, adam, adamw, sgd'),
    ('lr_schedule', 'linear', "config.lr_schedule='linear': expected one of "
     'constant, cosine, multistep, onecycle'),
    ('dataset', 'mnsit', "unknown dataset 'mnsit'.*kmnist, k49"),
    ('batch_size', 0, 'config.batch_size=0: expected a positive integer'),
    ('batch_size', 1000, 'larger than split'),
    ('num_epochs', -1, 'config.num_epochs=-1'),
    ('input_std', 0.0, 'config.input_std=0.0: expected a positive number'),
    ('eval_from_epoch', 0, 'config.eval_from_epoch=0: expected a positive'),
])
def test_config_errors(data_dir, tmp_path, field, value, match):
  with pytest.raises(UserError, match=match):
    harness.fit(tiny_config(data_dir, **{field: value}),
                             str(tmp_path / 'w'))
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_different_config_in_workdir_is_refused(data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  harness.fit(tiny_config(data_dir, num_epochs=1,
                                       train_split='train[:64]'), workdir)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with pytest.raises(UserError, match="model: 'seed_cnn' .saved. vs "
                     "'keras_cnn' .now."):
    harness.fit(
        tiny_config(data_dir, model='keras_cnn', train_split='train[:64]'),
        workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before


def test_eval_without_checkpoint_and_missing_data(data_dir, tmp_path,
                                                  monkeypatch):
  with pytest.raises(UserError, match='config.json: missing'):
    harness.evaluate(None, str(tmp_path))
  empty = tmp_path / 'empty'
  empty.mkdir()
  monkeypatch.setenv('KMNIST_JAX_MIRROR', 'http://127.0.0.1:9/')
  monkeypatch.setenv('KMNIST_JAX_MIRROR_ONLY', '1')
  with pytest.raises(UserError, match='kmnist-train-imgs.npz'):
    harness.fit(tiny_config(empty), str(tmp_path / 'w'))


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(data_dir,
                                                             tmp_path):
  workdir = tmp_path / 'w'
  # Step 0 is finite (checkpoint 1 is saved); the 1e30 update then overflows.
  config = tiny_config(data_dir, num_epochs=1, learning_rate=1e30,
                       optimizer='sgd', checkpoint_every_steps=1)
  with pytest.raises(UserError, match='non-finite loss at step 1 .epoch 1.; '
                     'stopped, last good checkpoint: step 1 in'):
    harness.fit(config, str(workdir))
  assert os.listdir(workdir / 'checkpoints') == ['1']
  assert not (workdir / 'metrics.jsonl').exists()


def _main(*args, env=None):
  return [sys.executable, '-m', 'kmnist_jax.main', *args]


def test_sigkill_then_rerun_equals_uninterrupted(data_dir, tmp_path):
  """SIGKILL mid-run (after the first mid-epoch checkpoint), then rerun."""
  args = ['--config', str(REPO / 'configs' / 'seed_cnn.py'),
          f'--config.data_dir={data_dir}', '--config.train_split=train',
          '--config.eval_split=test', '--config.num_epochs=3',
          '--config.batch_size=32', '--config.checkpoint_every_steps=3',
          '--config.write_plots=False']
  env = dict(os.environ, KMNIST_JAX_COMPILATION_CACHE='0')
  ref, killed = tmp_path / 'ref', tmp_path / 'killed'
  proc = subprocess.Popen(_main(*args, f'--workdir={killed}'), env=env,
                          cwd=REPO, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  ckpts = killed / 'checkpoints'
  while time.time() < deadline and proc.poll() is None:
    if ckpts.exists() and any(p.name.isdigit() and int(p.name) >= 6
                              for p in ckpts.iterdir()):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  subprocess.run(_main(*args, f'--workdir={killed}'), env=env, cwd=REPO,
                 check=True, capture_output=True)
  subprocess.run(_main(*args, f'--workdir={ref}'), env=env, cwd=REPO,
                 check=True, capture_output=True)
  assert strip_time(read_jsonl(ref / 'metrics.jsonl')) == strip_time(
      read_jsonl(killed / 'metrics.jsonl'))
  _, _, a, _ = evaluate.restore_for_inference(str(ref))
  _, _, b, _ = evaluate.restore_for_inference(str(killed))
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_proxy_config_end_to_end_on_real_files(real_data_dir, tmp_path):
  sys.path.insert(0, str(REPO / 'configs'))
  import seed_cnn  # pylint: disable=g-import-not-at-top
  config = seed_cnn.get_config('proxy')
  assert (config.train_split, config.eval_split, config.test_split) == (
      'test[:8000]', 'test[8000:]', '')
  config.num_epochs = 1
  config.write_plots = False
  config.data_dir = str(real_data_dir)
  _, m = harness.fit(config, str(tmp_path / 'w'))
  assert m['steps_per_epoch'] == 20 and m['eval']['num_examples'] == 2000
  assert m['eval']['accuracy'] > 0.4  # One epoch (20 steps); chance is 0.1.


# ---------------------------------------------------------------------------
# A torn metrics line and an unreadable checkpoint do not block the rerun.


def test_read_metrics_drops_only_a_torn_last_line(tmp_path, caplog):
  path = tmp_path / 'metrics.jsonl'
  good = '{"step": 2, "split": "train"}\n{"step": 2, "split": "eval"}\n'
  for torn in ('{"step": 4, "spl', '{"step": 4}\n\0\0\0\0', '\0\0\0'):
    path.write_text(good + torn)
    with caplog.at_level('WARNING'):
      assert metrics_lib.read_metrics(str(path)) == [
          {'step': 2, 'split': 'train'}, {'step': 2, 'split': 'eval'}] + (
              [{'step': 4}] if torn.startswith('{"step": 4}') else [])
    if torn != '{"step": 4}\n\0\0\0\0':
      assert f'{path}, line 3: dropped a torn last record' in caplog.text
  path.write_text('{"step": 2}\n{"step": 2, "spl\n{"step": 4}\n')
  with pytest.raises(UserError) as e:
    metrics_lib.read_metrics(str(path))
  assert str(e.value).startswith(f'{path}, line 2: not a metrics record (')
  assert str(e.value).endswith('expected one JSON object per line')


def _two_epoch_config(data_dir, **overrides):
  return tiny_config(data_dir, **{
      'train_split': 'train[:64]', 'num_epochs': 2,
      'checkpoint_every_steps': 1, 'keep_checkpoints': 10, **overrides})


@pytest.fixture(scope='module')
def uninterrupted(data_dir, tmp_path_factory):
  """(state, metrics records) of the 4-step run of `_two_epoch_config`."""
  workdir = tmp_path_factory.mktemp('uninterrupted') / 'w'
  state, _ = harness.fit(_two_epoch_config(data_dir),
                                      str(workdir))
  return state, strip_time(read_jsonl(workdir / 'metrics.jsonl'))


def test_torn_metrics_line_is_dropped_and_the_run_resumes(
    data_dir, tmp_path, uninterrupted, caplog):
  workdir = tmp_path / 'w'
  harness.fit(_two_epoch_config(data_dir, num_epochs=1),
                           str(workdir))
  with open(workdir / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 4, "epoch": 2, "split": "tr')  # Power loss mid-write.
  with caplog.at_level('WARNING'):
    state, _ = harness.fit(_two_epoch_config(data_dir),
                                        str(workdir))
  assert 'line 3: dropped a torn last record' in caplog.text
  assert strip_time(read_jsonl(workdir / 'metrics.jsonl')) == uninterrupted[1]
  for a, b in zip(leaves(uninterrupted[0]), leaves(state)):
    np.testing.assert_array_equal(a, b)


def damage(step_dir: pathlib.Path) -> None:
  """Flips every byte of the checkpoint's array data (a disk fault)."""
  files = [p for p in step_dir.rglob('*') if p.is_file()
           and p.parent.name == 'd' and 'ocdbt' in str(p)]
  assert files, list(step_dir.rglob('*'))
  for p in files:
    p.write_bytes(bytes(b ^ 0x5A for b in p.read_bytes()))


def test_unreadable_latest_checkpoint_falls_back_to_the_one_before(
    data_dir, tmp_path, uninterrupted, caplog):
  workdir = tmp_path / 'w'
  config = _two_epoch_config(data_dir)
  harness.fit(config, str(workdir))
  ckpts = workdir / 'checkpoints'
  assert sorted(os.listdir(ckpts)) == ['1', '2', '3', '4']
  damage(ckpts / '4')
  damage(ckpts / '3')
  with caplog.at_level('WARNING'):
    state, m = harness.fit(config, str(workdir))
  assert 'checkpoints/4: checkpoint does not match this model or is ' \
         'unreadable' in caplog.text
  assert 'Resuming from step 2: the newer checkpoint(s) 4, 3 were ' \
         'unreadable' in caplog.text
  assert [r['step'] for r in m['history']] == [4, 4]  # Steps 3, 4 replayed.
  assert strip_time(read_jsonl(workdir / 'metrics.jsonl')) == uninterrupted[1]
  for a, b in zip(leaves(uninterrupted[0]), leaves(state)):
    np.testing.assert_array_equal(a, b)
  assert sorted(os.listdir(ckpts)) == ['1', '2', '3', '4']
  assert sorted(os.listdir(workdir / 'unreadable_checkpoints')) == ['3', '4']
  # No readable checkpoint left: one line, nothing set aside.
  for step in ('1', '2', '3', '4'):
    damage(ckpts / step)
  with pytest.raises(UserError) as e:
    harness.fit(config, str(workdir))
  assert str(e.value).startswith(
      f'{ckpts}: no readable checkpoint (steps 4, 3, 2, 1 failed; latest: '
      f'{ckpts}/4: checkpoint does not match this model or is unreadable (')
  assert '\n' not in str(e.value)
  assert sorted(os.listdir(ckpts)) == ['1', '2', '3', '4']


def test_input_scaling_feeds_the_model_normalised_pixels():
  """input_mean/input_std wrap the model: its output is the plain model's
  of (x - mean) / std, with the same parameters; the defaults add nothing."""
  plain = train_state.build_model(tiny_config('unused'), 10, seed=3)
  assert not isinstance(plain, models.Normalized)
  scaled = train_state.build_model(
      tiny_config('unused', input_mean=0.2, input_std=0.35), 10, seed=3)
  assert isinstance(scaled, models.Normalized)
  x = input_pipeline.to_float(np.random.default_rng(0).integers(
      0, 256, (4, 28, 28), np.uint8))
  np.testing.assert_allclose(
      np.asarray(scaled(x, train=False)),
      np.asarray(plain((x - 0.2) / 0.35, train=False)), rtol=1e-6, atol=1e-6)


def test_log_loss_steps_records_each_step_loss(data_dir, tmp_path):
  """The first log_loss_steps steps each write their loss ('step' records,
  before their epoch's records); an epoch's mean of them is its train loss;
  a resumed run writes the same records."""
  config = tiny_config(data_dir, num_epochs=2, log_loss_steps=13)
  harness.fit(config, str(tmp_path / 'a'))
  recs = strip_time(read_jsonl(tmp_path / 'a' / 'metrics.jsonl'))
  assert [(r['split'], r['step'], r['epoch']) for r in recs] == (
      [('step', s, 1) for s in range(1, 11)] + [('train', 10, 1),
                                                ('eval', 10, 1)]
      + [('step', s, 2) for s in (11, 12, 13)] + [('train', 20, 2),
                                                  ('eval', 20, 2)])
  losses = [r['loss'] for r in recs if r['split'] == 'step']
  assert np.mean(losses[:10]) == pytest.approx(recs[10]['loss'], rel=1e-5)
  assert len(set(losses)) == 13 and np.all(np.isfinite(losses))
  harness.fit(tiny_config(data_dir, num_epochs=1,
                                       log_loss_steps=13), str(tmp_path / 'b'))
  harness.fit(config, str(tmp_path / 'b'))
  assert strip_time(read_jsonl(tmp_path / 'b' / 'metrics.jsonl')) == recs
  with pytest.raises(UserError, match=r'^config.log_loss_steps=-1: expected '
                     r'an integer >= 0 \(0 = none\)$'):
    harness.fit(tiny_config(data_dir, log_loss_steps=-1),
                             str(tmp_path / 'c'))


def test_step_loss_from_running_sums_across_a_resume_and_an_epoch_end():
  class Sums:  # The two fields of a TrainState that step_loss reads.
    def __init__(self, loss_sum, count):
      self.loss_sum, self.count = np.float32(loss_sum), np.float32(count)

  run = train.Run(tiny_config('unused'), None, None, 3, 0.0)
  run.step_loss(Sums(4.0, 2.0), 0)  # Resumed after step 2 of epoch 1.
  run.step_loss(Sums(7.0, 3.0), 3)  # Last step of epoch 1: loss 3.
  run.step_loss(Sums(5.0, 1.0), 4)  # The sums were reset: loss 5.
  run.step_loss(Sums(5.5, 2.0), 5)
  assert [(r['step'], r['epoch'], r['loss']) for r in run.pending] == [
      (3, 1, 3.0), (4, 2, 5.0), (5, 2, 0.5)]


def test_bf16_matmul_precision_learns_deterministically(tmp_path):
  """config.matmul_precision='bfloat16': the steps are traced under
  jax.default_matmul_precision('bfloat16') (conv2 of seed_cnn on bfloat16
  operands), the model still learns, a second run gives the same bits, and
  eval from the workdir applies the same precision."""
  data_dir = make_learnable_dir(tmp_path / 'data')
  runs = {}
  for name, precision in (('a', 'bfloat16'), ('b', 'bfloat16'),
                          ('f32', 'default')):
    runs[name] = harness.fit(
        tiny_config(data_dir, matmul_precision=precision),
        str(tmp_path / name))
  (state, m), (state_b, _), (state_f32, _) = runs['a'], runs['b'], runs['f32']
  assert m['eval']['accuracy'] > 0.8, m['eval']  # Chance is 0.1.
  for x, y in zip(leaves(state), leaves(state_b)):
    np.testing.assert_array_equal(x, y)
  # The precision took effect: float32 training ends elsewhere.
  assert any(not np.array_equal(x, y)
             for x, y in zip(leaves(state), leaves(state_f32)))
  assert {str(x.dtype) for x in jax.tree.leaves(state.params)} == {'float32'}
  result = harness.evaluate(None, str(tmp_path / 'a'))
  assert result['accuracy'] == m['eval']['accuracy']
  with pytest.raises(UserError, match="matmul_precision='float16': expected "
                     'one of default, bfloat16'):
    harness.fit(
        tiny_config(data_dir, matmul_precision='float16'),
        str(tmp_path / 'bad'))
