"""experiments.parity, schedules and torch_fit (issue 16).

The PyTorch parts run in the torch venv (KMNIST_JAX_TORCH_PYTHON, else
/work/torchvenv/bin/python); those tests skip without it.
"""

import csv
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from kmnist_jax.train import augment
from kmnist_jax.config import base as configlib
from kmnist_jax.train import optim
from experiments import parity
from experiments import parity_report
from experiments import recipe
from experiments import schedules
from kmnist_jax.core.errors import UserError

from conftest import make_learnable_dir  # pylint: disable=g-bad-import-order

REPO = pathlib.Path(__file__).resolve().parents[1]

TORCH_PYTHON = os.environ.get('KMNIST_JAX_TORCH_PYTHON',
                              '/work/torchvenv/bin/python')
needs_torch = pytest.mark.skipif(not os.path.exists(TORCH_PYTHON),
                                 reason=f'no torch venv at {TORCH_PYTHON}')
# The torch venv imports `experiments` from this checkout.
_TORCH_ENV = dict(os.environ, PYTHONPATH=str(REPO))


@pytest.mark.parametrize('epochs, expected', [
    (200, '100,150'), (10, '5,8'), (4, '2,3'), (3, '2,3'), (2, '1,2'),
    (1, '1,2')])
def test_milestones_keep_their_fractions(epochs, expected):
  assert recipe.scale_milestones('100,150', 200, epochs) == expected


def test_recipe_of_the_multistep_and_mixup_configs():
  c = recipe.compressed_config('preact_resnet18_manifold_mixup', 10, 2,
                               '/data', 300)
  assert (c.num_epochs, c.lr_milestones, c.seed, c.data_dir) == (
      10, '5,8', 2, '/data')
  assert (c.train_split, c.eval_split) == ('test[:8000]', 'test[8000:]')
  assert (c.log_loss_steps, c.write_plots, c.eval_from_epoch) == (300, False,
                                                                  10)
  r = recipe.torch_recipe(c)
  assert {k: r[k] for k in (
      'model', 'num_epochs', 'batch_size', 'optimizer', 'learning_rate',
      'momentum', 'nesterov', 'weight_decay', 'lr_schedule', 'lr_milestones',
      'lr_decay', 'manifold_mixup_alpha', 'mixup_alpha', 'mixup_points',
      'num_classes', 'train_examples', 'eval_examples')} == dict(
          model='preact_resnet18', num_epochs=10, batch_size=100,
          optimizer='sgd', learning_rate=0.1, momentum=0.9, nesterov=True,
          weight_decay=1e-4, lr_schedule='multistep', lr_milestones=[5, 8],
          lr_decay=0.1, manifold_mixup_alpha=2.0, mixup_alpha=0.0,
          mixup_points=3, num_classes=10, train_examples=8000,
          eval_examples=2000)
  assert json.loads(json.dumps(r)) == r  # Plain JSON for the worker.


def test_recipe_of_the_cosine_cutout_and_onecycle_configs():
  c = recipe.compressed_config('resnet_preact20_cutout', 3, 0, '', 50,
                               (512, 256))
  assert (c.train_split, c.eval_split) == ('test[:512]', 'test[8000:8256]')
  assert c.matmul_precision == 'default'
  assert recipe.compressed_config(
      'resnet_preact20_cutout', 3, 0,
      matmul_precision='bfloat16').matmul_precision == 'bfloat16'
  r = recipe.torch_recipe(c, (512, 256))
  assert {k: r[k] for k in (
      'lr_schedule', 'learning_rate', 'augment_translate', 'cutout_size',
      'cutout_fill', 'input_mean', 'input_std', 'lr_milestones',
      'train_examples', 'eval_examples')} == dict(
          lr_schedule='cosine', learning_rate=0.2, augment_translate=4,
          cutout_size=14, cutout_fill=0.1904, input_mean=0.1904,
          input_std=0.3475, lr_milestones=[], train_examples=512,
          eval_examples=256)
  r = recipe.torch_recipe(recipe.compressed_config('best', 3, 0))
  assert (r['lr_schedule'], r['tta_shift'], r['label_smoothing'],
          r['weight_decay']) == ('onecycle', 1, 0.1, 5e-4)
  assert r['onecycle'] == dict(pct_start=0.3, div_factor=25.0,
                               final_div_factor=1e4)


@pytest.mark.parametrize('name, match', [
    ('k49_densenet100', r"^--configs k49_densenet100: dataset 'k49': the "
     r'proxy is a 10-class test set \(kmnist, mnist, fashion_mnist; '
     r"--k49_on_kmnist runs a K49 recipe on KMNIST's\)$"),
    ('knn', "^--configs knn: model 'knn' has no PyTorch port"),
    ('no_such_config', "^config 'no_such_config': .* does not exist$")])
def test_configs_without_a_pytorch_side_are_refused(name, match):
  with pytest.raises(UserError, match=match):
    recipe.compressed_config(name, 2, 0)


def test_k49_recipe_on_the_kmnist_proxy():
  c = recipe.compressed_config('k49_densenet100', 2, 0, k49_on_kmnist=True)
  r = recipe.torch_recipe(c)
  assert (c.dataset, r['num_classes'], r['model'], r['batch_size'],
          r['lr_schedule'], r['augment_translate']) == (
              'kmnist', 10, 'densenet_bc100_k12', 1536, 'cosine', 4)
  assert recipe.compressed_config('keras_cnn', 2, 0,
                                  k49_on_kmnist=True).dataset == 'kmnist'


def test_batch_size_override_reaches_both_sides():
  """--batch_size replaces the recipe's batch on both sides, nothing else."""
  plain = recipe.compressed_config('k49_densenet100', 3, 0, k49_on_kmnist=True)
  small = recipe.compressed_config('k49_densenet100', 3, 0, k49_on_kmnist=True,
                                   batch_size=64)
  assert (plain.batch_size, small.batch_size) == (1536, 64)
  r, r64 = recipe.torch_recipe(plain), recipe.torch_recipe(small)
  assert r64['batch_size'] == 64
  assert {k: v for k, v in r64.items() if k != 'batch_size'} == {
      k: v for k, v in r.items() if k != 'batch_size'}
  assert parity.parse_args(['--batch_size', '64']).batch_size == 64
  with pytest.raises(SystemExit):
    parity.parse_args(['--batch_size', '-1'])


@pytest.mark.parametrize('name', ['preact_resnet18', 'resnet_preact20_cutout',
                                  'best', 'keras_cnn'])
def test_plain_python_schedule_equals_optax(name):
  c = recipe.compressed_config(name, 3, 0)
  spe = 7
  r = dict(recipe.torch_recipe(c), steps_per_epoch=spe)
  jax_lr = optim.create_schedule(c, spe)
  ts = range(3 * spe + 3)
  np.testing.assert_allclose([schedules.lr_at(r, t) for t in ts],
                             [float(jax_lr(t)) for t in ts], rtol=2e-5,
                             atol=1e-9)
  if name == 'preact_resnet18':  # Milestones 2, 3 of 3 epochs: one decay.
    assert schedules.lr_at(r, 2 * spe - 1) == 0.1
    assert schedules.lr_at(r, 2 * spe) == pytest.approx(0.01)


def test_separation_step():
  zeros, ones = np.zeros(60), np.ones(60)
  mean_b = np.r_[np.zeros(30), np.full(30, 3.0)]
  assert parity_report.separation_step(zeros, ones, mean_b, ones) == 31
  assert parity_report.separation_step(zeros, ones, zeros, ones) is None
  # Apart for 19 steps, together once, then apart for 20: the second run.
  gaps = np.r_[np.zeros(5), np.full(19, 3.0), [0.0], np.full(20, 3.0)]
  assert parity_report.separation_step(np.zeros(45), np.ones(45), gaps,
                                np.ones(45)) == 26
  # Exactly the sum of the stds is not apart.
  assert parity_report.separation_step(zeros, ones, np.full(60, 2.0),
                                       ones) is None


def _runs(side, accs, curves, seconds):
  return [dict(config='keras_cnn', side=side, seed=s, epochs=2, accuracy=a,
               losses=c, epoch_seconds=seconds)
          for s, (a, c) in enumerate(zip(accs, curves))]


def test_summary_and_writer(tmp_path):
  flat = [[2.0] * 25, [2.2] * 25]
  low = [[2.0] * 2 + [0.5] * 23, [2.2] * 2 + [0.7] * 23]
  runs = (_runs('jax', [0.90, 0.92], flat, [9.0, 1.0, 3.0])
          + _runs('torch', [0.89, 0.89], low, [5.0, 2.0, 2.0]))
  row = parity_report.summarize('keras_cnn', runs, 12)
  assert row['jax_mean'] == pytest.approx(0.91)
  assert row['jax_std'] == pytest.approx(np.std([0.90, 0.92], ddof=1))
  assert row['diff_points'] == pytest.approx(2.0)
  assert row['jax_s_per_epoch'] == 2.0  # Median of epochs 2.., not 9.
  assert (row['curve_steps'], row['separation_step']) == (25, 3)
  meta = dict(command='python -m experiments.parity --configs keras_cnn',
              date='2026-01-01 00:00', seeds=2, epochs=2, steps_curve=25,
              sizes=(8000, 2000), notes=['a note'],
              machine=dict(cpu='CPU', cores=2, python='3.12', jax='0', flax='0',
                           load_average_start=(1.0, 1.0, 1.0),
                           load_average_end=(2.0, 2.0, 2.0)))
  out = str(tmp_path / 'r' / 'parity')
  written = parity_report.write_outputs(out, [row], runs, meta)
  assert sorted(os.path.basename(p) for p in written) == [
      'parity.csv', 'parity.md', 'parity_keras_cnn.png', 'parity_runs.json']
  md = open(out + '.md').read()
  assert ('| keras_cnn | 2 (12) | 2 | 91.00 ± 1.41% | 89.00 ± 0.00% | '
          '+2.00 ± 1.00 | 2.0 | 2.0 | step 3 |') in md
  assert 'at start 1.0/1.0/1.0, at end 2.0/2.0/2.0' in md
  assert '`python -m experiments.parity --configs keras_cnn`' in md
  assert '![keras_cnn loss curves](parity_keras_cnn.png)' in md
  assert '- a note' in md
  rows = list(csv.DictReader(open(out + '.csv')))
  assert len(rows) == 1 and rows[0]['separation_step'] == '3'
  assert float(rows[0]['torch_mean']) == pytest.approx(0.89)
  assert os.path.getsize(out + '_keras_cnn.png') > 1000
  assert len(json.load(open(out + '_runs.json'))['runs']) == 4
  one = parity_report.summarize('keras_cnn', runs[:1], 12)
  assert one['torch_n'] == 0
  assert parity_report.separation_text(one).startswith('n/a')


def test_chance_epoch_and_epoch_lines(tmp_path):
  hist = lambda *accs: [{'epoch': i + 1, 'accuracy': a}
                        for i, a in enumerate(accs)]
  assert parity_report.chance_epoch(hist(0.097, 0.1999, 0.2, 0.9), 10) == 3
  assert parity_report.chance_epoch(hist(0.097, 0.15), 10) is None
  # 2/49 = 4.08%.
  assert parity_report.chance_epoch(hist(0.03, 0.0409), 49) == 2
  assert parity_report.chance_epoch([], 10) is None
  flat = [[2.0] * 5]
  runs = (_runs('jax', [0.5], flat, [1.0, 1.0])
          + _runs('torch', [0.15], flat, [1.0, 1.0]))
  runs[0]['history'] = hist(0.097, 0.5)
  runs[1]['history'] = hist(0.097, 0.15)
  row = parity_report.summarize('keras_cnn', runs, 12)
  assert (row['jax_chance_epochs'], row['torch_chance_epochs']) == ('2', '>2')
  lines = parity_report.epoch_lines([row], runs)
  assert '- JAX seed 0: 9.70, 50.00% -> leaves chance at epoch 2' in lines
  assert ('- PyTorch seed 0: 9.70, 15.00% -> leaves chance not within 2 '
          'epochs') in lines
  assert parity_report.epoch_lines(
      [row], _runs('jax', [0.5], flat, [1.0])) == []


_TORCH_AUGMENT = r'''
import json, sys
import numpy as np, torch
from experiments import torch_fit
x = torch.from_numpy(np.load(sys.argv[1]))
gen = torch.Generator().manual_seed(0)
out = dict(
    shifts={f'{dy},{dx}': torch_fit.shift(x, dy, dx).tolist()
            for dy in (-2, 0, 2) for dx in (-2, 0, 2)},
    translate=torch_fit.translate(x, 3, gen).tolist(),
    cutout=torch_fit.cutout(x, 6, 0.25, gen).tolist())
print(json.dumps(out))
'''


@needs_torch
def test_torch_augmentations_do_what_ours_do(tmp_path):
  x = np.random.default_rng(0).uniform(0.5, 1.0, (16, 1, 12, 12))
  np.save(tmp_path / 'x.npy', x.astype(np.float32))
  out = json.loads(subprocess.run(
      [TORCH_PYTHON, '-c', _TORCH_AUGMENT, str(tmp_path / 'x.npy')],
      check=True, capture_output=True, text=True, env=_TORCH_ENV).stdout)
  nhwc = x.transpose(0, 2, 3, 1).astype(np.float32)
  ours = {(dy, dx): np.asarray(augment.shift(nhwc, dy, dx)).transpose(
      0, 3, 1, 2) for dy in range(-3, 4) for dx in range(-3, 4)}
  for key, value in out['shifts'].items():
    dy, dx = map(int, key.split(','))
    np.testing.assert_array_equal(np.asarray(value, np.float32),
                                  ours[(dy, dx)])
  translated = np.asarray(out['translate'], np.float32)
  offsets = set()
  for i, image in enumerate(translated):  # Each one of our shifts by <= 3.
    hits = [k for k, v in ours.items() if np.array_equal(v[i], image)]
    assert hits, i
    offsets.add(hits[0])
  assert len(offsets) > 5  # Per-image offsets.
  cut = np.asarray(out['cutout'], np.float32)[:, 0]
  for image, src in zip(cut, x[:, 0]):
    hole = image == np.float32(0.25)
    rows, cols = np.nonzero(hole)
    assert 3 <= len(set(rows)) <= 6 and 3 <= len(set(cols)) <= 6
    assert hole.sum() == len(set(rows)) * len(set(cols))  # A square, clipped.
    np.testing.assert_array_equal(image[~hole], src[~hole].astype(np.float32))


def _tiny_run(tmp_path, *args, name='parity', torch_python=None, rc=0):
  """parity.main on keras_cnn over learnable synthetic files (made once per
  tmp_path), the PyTorch side too when its venv exists; asserts exit `rc`:
  (out prefix, torch python or '', runs, None unless rc is 0)."""
  data = tmp_path / 'data'
  if not data.exists():
    make_learnable_dir(data, n_train=10, n_test=8128)
  out = tmp_path / 'res' / name
  if torch_python is None:
    torch_python = TORCH_PYTHON if os.path.exists(TORCH_PYTHON) else ''
  assert parity.main(['--configs', 'keras_cnn', *args, '--eval_examples',
                      '128', '--data_dir', str(data), '--out', str(out),
                      '--torch_python', torch_python]) == rc
  return out, torch_python, (json.load(open(f'{out}_runs.json'))['runs']
                             if rc == 0 else None)


def test_end_to_end_tiny(tmp_path):
  """keras_cnn for 1 epoch of 3 steps, 2 seeds."""
  out, torch_python, runs = _tiny_run(
      tmp_path, '--epochs', '1', '--seeds', '2', '--steps_curve', '3',
      '--train_examples', '384')
  sides = ['jax', 'torch'] if torch_python else ['jax']
  assert [(r['side'], r['seed']) for r in runs] == [
      (side, seed) for seed in (0, 1) for side in sides]
  for r in runs:
    assert len(r['losses']) == 3 and len(r['epoch_seconds']) == 1
    assert r['losses'][0] == pytest.approx(np.log(10), abs=0.5), r
    assert 0.0 <= r['accuracy'] <= 1.0
  jax_runs = [r for r in runs if r['side'] == 'jax']
  assert jax_runs[0]['losses'] != jax_runs[1]['losses']  # Seeds differ.
  md = open(f'{out}.md').read()
  assert '| keras_cnn | 1 (12) | 2 |' in md
  assert 'test[:384]' in md and 'test[8000:8128]' in md
  assert ('not run' in md) != bool(torch_python)
  assert os.path.exists(f'{out}_keras_cnn.png')


def test_first_seed_and_eval_every_epoch(tmp_path):
  """Seeds start at --first_seed; every epoch's accuracy is kept and the last
  one is the run's accuracy, on both sides; --batch_size reaches both."""
  out, torch_python, runs = _tiny_run(
      tmp_path, '--epochs', '2', '--seeds', '1', '--first_seed', '5',
      '--eval_every_epoch', '--steps_curve', '0', '--train_examples', '256',
      '--batch_size', '64')
  assert [r['seed'] for r in runs] == [5] * (2 if torch_python else 1)
  for r in runs:
    assert [h['epoch'] for h in r['history']] == [1, 2], r['side']
    assert r['history'][-1]['accuracy'] == r['accuracy']
    assert r['steps_per_epoch'] == 4, r['side']  # 256 / 64, not / 128.
  md = open(f'{out}.md').read()
  assert ("every run trained at batch 64 (--batch_size), not the recipe's "
          '128') in md
  assert 'Seeds 5..5,' in md
  assert f'- JAX seed 5: {100 * runs[0]["history"][0]["accuracy"]:.2f}, ' in md
  assert 'twice chance' in md
  with pytest.raises(SystemExit):
    parity.parse_args(['--first_seed', '-1'])



def test_sides_run_apart_and_merge(tmp_path, capsys):
  """--sides jax and --sides torch run one side each; --merge joins them
  into the row one run of both sides writes."""
  common = ['--epochs', '1', '--seeds', '1', '--steps_curve', '2',
            '--train_examples', '256']
  j, _, runs = _tiny_run(tmp_path, *common, '--sides', 'jax', name='j',
                         torch_python=TORCH_PYTHON)
  assert [r['side'] for r in runs] == ['jax']
  assert '- Only the JAX side ran.' in open(f'{j}.md').read()
  if not os.path.exists(TORCH_PYTHON):
    capsys.readouterr()
    _tiny_run(tmp_path, *common, '--sides', 'torch', name='t',
              torch_python='', rc=2)
    assert capsys.readouterr().err.startswith(
        'error: --sides torch needs --torch_python')
    return
  t, _, torch_runs = _tiny_run(tmp_path, *common, '--sides', 'torch',
                               name='t')
  assert [r['side'] for r in torch_runs] == ['torch']
  md = open(f'{t}.md').read()
  assert '- Only the PyTorch side ran.' in md and 'reads the loss' not in md
  assert '| keras_cnn | 1 (12) | 1 | not run |' in md
  m = str(tmp_path / 'm')
  assert parity.main(['--merge', f'{j}_runs.json,{t}_runs.json', '--out',
                      m]) == 0
  md = open(m + '.md').read()
  diff = 100 * (runs[0]['accuracy'] - torch_runs[0]['accuracy'])
  assert (f'| keras_cnn | 1 (12) | 1 | {100 * runs[0]["accuracy"]:.2f}% '
          f'(n=1) | {100 * torch_runs[0]["accuracy"]:.2f}% (n=1) | '
          f'{diff:+.2f} |') in md
  assert 'Only the' not in md


_TORCH_HEADS = r'''
import json
from experiments import torch_models as tm
heads = {'resnet_preact20': tm.ResNetPreAct(10).head,
         'shake': tm.ShakeShake(10, depth=8, base=8).head,
         'preact_resnet18': tm.PreActResNet18(10).head,
         'densenet': tm.DenseNet(10, depth=10).head}
print(json.dumps({k: [h.weight.detach().abs().max().item(),
                      h.bias.detach().abs().max().item(), h.in_features]
                  for k, h in heads.items()}))
'''


@needs_torch
def test_torch_heads_initialised_as_ours():
  """The PyTorch ports' heads as kmnist_jax.models.resnets.head: the bias zero in
  hysts' models, PyTorch's default in PreActResNet-18."""
  out = json.loads(subprocess.run(
      [TORCH_PYTHON, '-c', _TORCH_HEADS], check=True, capture_output=True,
      text=True, env=_TORCH_ENV).stdout)
  assert out['resnet_preact20'][1] == 0.0 and out['shake'][1] == 0.0
  assert out['densenet'][1] == 0.0
  w, b, cin = out['preact_resnet18']
  assert cin == 512 and 0 < b <= 1 / np.sqrt(512) and w <= 1 / np.sqrt(512)


def _meta(command, **kw):
  return dict(command=command, date='2026-01-01 00:00', seeds=1, epochs=2,
              steps_curve=5, sizes=(8000, 2000), notes=['a note'],
              machine=dict(cpu='CPU', cores=2, python='3.12', jax='0',
                           flax='0', load_average_start=(1.0, 1.0, 1.0),
                           load_average_end=(2.0, 2.0, 2.0)),
              recipes={'keras_cnn': {'num_classes': 10}}, **kw)


def test_merge_adds_seeds_to_a_row(tmp_path, capsys):
  flat = [[2.0] * 5]
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  runs_a = (_runs('jax', [0.90], flat, [1.0, 1.0])
            + _runs('torch', [0.80], flat, [1.0, 1.0]))
  runs_b = [dict(r, seed=1, accuracy=r['accuracy'] + 0.02) for r in runs_a]
  parity_report.write_outputs(
      a, [parity_report.summarize('keras_cnn', runs_a, 12)], runs_a,
      _meta('python -m experiments.parity A'))
  parity_report.write_outputs(
      b, [parity_report.summarize('keras_cnn', runs_b, 12)], runs_b,
      _meta('python -m experiments.parity B', first_seed=1))
  out = str(tmp_path / 'm')
  assert parity.main(['--merge', f'{a}_runs.json,{b}_runs.json', '--out',
                      out]) == 0
  md = open(out + '.md').read()
  assert ('| keras_cnn | 2 (12) | 2 | 91.00 ± 1.41% | 81.00 ± 1.41% | '
          '+10.00 ± 1.41 |') in md
  assert 'Seeds 0..1,' in md
  assert ('`python -m experiments.parity A ; python -m experiments.parity B`'
          in md)
  assert md.count('- a note') == 1 and 'Merged from `a_runs.json`' in md
  merged = json.load(open(out + '_runs.json'))['runs']
  assert [(r['seed'], r['side']) for r in merged] == [
      (0, 'jax'), (0, 'torch'), (1, 'jax'), (1, 'torch')]
  # The same seed twice, or a file that is not a parity run: one line, 2.
  capsys.readouterr()
  assert parity.main(['--merge', f'{a}_runs.json,{a}_runs.json', '--out',
                      out]) == 2
  assert 'keras_cnn seed 0 (jax) is in more than one file' in (
      capsys.readouterr().err)
  (tmp_path / 'bad.json').write_text('{"runs": []}')
  assert parity.main(['--merge', str(tmp_path / 'bad.json'), '--out',
                      out]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: --merge ') and 'bad.json' in err
  assert err.count('\n') == 1
  # Runs at another --batch_size than the recipe's are not merged with its.
  runs_c = [dict(r, seed=2) for r in runs_a]
  c = str(tmp_path / 'c')
  parity_report.write_outputs(
      c, [parity_report.summarize('keras_cnn', runs_c, 12)], runs_c,
      _meta('python -m experiments.parity C', batch_size=64))
  assert parity.main(['--merge', f'{a}_runs.json,{c}_runs.json', '--out',
                      out]) == 2
  assert capsys.readouterr().err == (
      'error: --merge: the files differ in batch_size\n')


_TORCH_SHAPES = r'''
import json, sys
import torch
from experiments import torch_models as tm
out = {}
for name in sys.argv[1:]:
  model = tm.MODELS[name](num_classes=49)
  model.eval()
  with torch.no_grad():
    y = model(torch.zeros(2, 1, 28, 28))
  # Our layouts: conv (O, I, H, W) -> (H, W, I, O), linear (out, in) -> (in, out).
  shapes = sorted([p.shape[2], p.shape[3], p.shape[1], p.shape[0]]
                  if p.dim() == 4 else list(p.shape)[::-1]
                  for p in model.parameters())
  out[name] = [shapes, list(y.shape)]
print(json.dumps(out))
'''


@needs_torch
def test_torch_ports_have_our_layers():
  """The PyTorch ports of the deep rows have our parameters: the same
  shapes, as many (shake-shake: hysts' 96-channel stem in both)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from kmnist_jax.models import factory as models  # pylint: disable=g-import-not-at-top
  names = ['densenet_bc100_k12', 'densenet100_k12', 'shake_shake26_2x96d',
           'resnet_preact20', 'preact_resnet18']
  out = json.loads(subprocess.run(
      [TORCH_PYTHON, '-c', _TORCH_SHAPES, *names], check=True,
      capture_output=True, text=True, env=_TORCH_ENV).stdout)
  assert sorted(out) == sorted(names)
  for name, (shapes, shape) in out.items():
    abstract = nnx.eval_shape(lambda n=name: models.create_model(n, 49))
    ours = sorted(list(x.shape) for x in jax.tree.leaves(
        nnx.state(abstract, nnx.Param)))
    assert len(shapes) == len(ours) > 40 and shapes == ours, name
    assert shape == [2, 49]
  assert [3, 3, 1, 96] in out['shake_shake26_2x96d'][0]


def test_mnist_proxy_jax_side(tmp_path):
  """`--dataset mnist` with a data root: the recipe on MNIST's test split,
  its constants moved with it; a K49-only dataset is refused in one line."""
  root = REPO.parent / 'shared' / 'data'
  if not (root / 'mnist' / 't10k-images-idx3-ubyte.gz').is_file():
    pytest.skip(f'MNIST files not available in {root / "mnist"}')
  c = recipe.compressed_config('resnet_preact20_cutout', 2, 0, str(root),
                               dataset='mnist')
  assert (c.dataset, c.input_mean, c.cutout_fill, c.num_epochs) == (
      'mnist', 0.1307, 0.1307, 2)
  out = tmp_path / 'res' / 'mnist'
  assert parity.main(['--configs', 'keras_cnn', '--dataset', 'mnist',
                      '--sides', 'jax', '--epochs', '1', '--seeds', '1',
                      '--steps_curve', '2',
                      '--train_examples', '256', '--eval_examples', '128',
                      '--data_dir', str(root), '--out', str(out)]) == 0
  run, = json.load(open(f'{out}_runs.json'))['runs']
  assert run['side'] == 'jax' and len(run['losses']) == 2
  assert run['accuracy'] > 0.3  # MNIST learns in 2 steps of 128
  with pytest.raises(UserError, match="dataset 'k49': the proxy is a 10-class"):
    recipe.check_portable('k49_keras_cnn', configlib.load_config_file(
        str(REPO / 'configs' / 'k49_keras_cnn.py'), 'proxy'))
