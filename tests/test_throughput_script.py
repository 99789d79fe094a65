"""Sanity checks of experiments.throughput's pure helpers (nothing timed)."""

import argparse
import json
import os
import re

import numpy as np
import pytest

from experiments import bench
from experiments import report
from experiments import speed_pairs
from experiments import throughput
from experiments import throughput_report
from experiments import torch_client
from experiments import xla_profile


def test_rates_and_ratios():
  assert bench.rate(100, [2.0, 1.0, 4.0]) == 50.0  # Median of the seconds.
  assert bench.rate(100, []) is None
  assert bench.ratio(3.0, 2.0) == 1.5
  assert bench.ratio(None, 2.0) is None
  assert report.fmt(None) == 'n/a'
  assert report.fmt(1234.4) == '1234'


def test_parse_args():
  args = throughput.parse_args(['--sections', 'train,tta', '--models',
                                'keras_cnn', '--batches', '128',
                                '--torch_python', ''])
  assert args.sections == ['train', 'tta']
  assert args.models == ['keras_cnn'] and args.batches == [128]
  with pytest.raises(SystemExit):
    throughput.parse_args(['--sections', 'nope'])


def test_missing_torch_is_a_note():
  notes = []
  assert torch_client.start_torch('/nonexistent/python', '/tmp', notes) is None
  assert 'skipped' in notes[0]


def test_write_report(tmp_path):
  results = dict(
      command='throughput.py', date='today', repeats=3, notes=['a note'],
      peak_gflops=200.0,
      machine=dict(cpu='cpu', cores=2, python='3.12', jax='0', flax='0'),
      throughput=[dict(model='keras_cnn', kind='train', batch=128,
                       jax_img_s=3000.0, torch_img_s=2000.0, ratio=1.5,
                       jax_peak_frac=0.5, torch_peak_frac=None)],
      overhead=dict(model='keras_cnn', batch=128, steps_per_epoch=62,
                    overhead=0.02),
      tta=[dict(jax=dict(seconds=10.0, epochs=4), torch=dict(seconds=None)),
           dict(jax=dict(seconds=12.0, epochs=4),
                torch=dict(seconds=24.0, epochs=5))])
  out = str(tmp_path / 'r')
  throughput_report.write_report(out, results)
  md = open(out + '.md').read()
  assert '| keras_cnn | train | 128 | 3000 | 2000 | 1.50 | 50 | n/a |' in md
  assert '+2.0%' in md and 'a note' in md
  assert 'repeat 2 of 2: JAX 12.0 s (epoch 4), PyTorch 24.0 s (epoch 5)' in md
  # A repeat where PyTorch missed the target: no median for it.
  assert 'median of the 2 interleaved repeats: JAX 11.0 s, PyTorch n/a' in md
  assert json.load(open(out + '.json'))['peak_gflops'] == 200.0


def test_malloc_rows_and_report(tmp_path):
  # Medians per block, divided by the steps of a block.
  v = throughput._per_step(  # pylint: disable=protected-access
      [1.2, 1.0, 3.0], [2400, 0, 1200], steps=12)
  assert v == dict(ms_per_step=pytest.approx(100.0), faults_per_step=100.0)
  results = dict(
      command='throughput.py', date='today', repeats=3, notes=[],
      machine=dict(cpu='cpu', cores=2, python='3.12', jax='0', flax='0',
                   malloc='kept here', torch=dict(malloc='stock there')),
      malloc=[dict(model='keras_cnn', batch=128, steps=12,
                   jax_stock=dict(ms_per_step=107.5, faults_per_step=20529.0),
                   jax_kept=dict(ms_per_step=75.9, faults_per_step=0.0))])
  out = str(tmp_path / 'r')
  throughput_report.write_report(out, results)
  md = open(out + '.md').read()
  assert '| keras_cnn | 128 | 107.5 ms, 20529 | 75.9 ms, 0 | n/a | n/a |' in md
  assert 'malloc: JAX kept here; PyTorch stock there.' in md


def test_torch_env_switches_only_the_worker(monkeypatch):
  monkeypatch.delenv('KMNIST_JAX_MALLOC', raising=False)
  assert torch_client.torch_env('stock')['KMNIST_JAX_MALLOC'] == '0'
  assert 'KMNIST_JAX_MALLOC' not in torch_client.torch_env('same')
  # The JAX side's rule for the models to run: a DenseNet keeps the stock
  # allocator on both sides.
  assert 'KMNIST_JAX_MALLOC' not in torch_client.torch_env(
      'same', ['keras_cnn', 'resnet_preact20'])
  assert torch_client.torch_env(
      'same', ['keras_cnn', 'densenet_bc100_k12'])['KMNIST_JAX_MALLOC'] == '0'
  assert 'KMNIST_JAX_MALLOC' not in os.environ
  assert throughput.parse_args([]).torch_malloc == 'same'
  with pytest.raises(SystemExit):
    throughput.parse_args(['--torch_malloc', 'tuned'])


def test_tta_summary_takes_medians_and_a_miss_is_a_miss():
  row = lambda j, t: dict(jax=dict(seconds=j), torch=dict(seconds=t))
  summary = throughput_report.tta_summary
  s = summary([row(30.0, 40.0), row(50.0, 20.0), row(31.0, 35.0)])
  assert (s['jax'], s['torch']) == (31.0, 35.0)
  assert s['ratio'] == pytest.approx(31.0 / 35.0)
  s = summary([row(30.0, 40.0), row(None, 20.0), row(31.0, 35.0)])
  assert s['jax'] is None and s['ratio'] is None
  assert summary([dict(jax=dict(seconds=3.0))])['torch'] is None


def test_peak_fractions():
  results = dict(peak_gflops=100.0, throughput=[
      dict(flops_per_image=1e6, jax_img_s=50_000.0, torch_img_s=None)])
  throughput_report.add_peak_fractions(results)
  row = results['throughput'][0]
  assert row['jax_peak_frac'] == pytest.approx(0.5)
  assert row['torch_peak_frac'] is None


def test_hlo_ops_names_fusions_by_their_root():
  hlo = '''HloModule jit_step_fn

%fused_computation.1 (p0: f32[32,26,26,128], p1: f32[24,24,128,64]) -> f32[32,3,3,64] {
  %p0 = f32[32,26,26,128]{3,2,1,0} parameter(0)
  %p1 = f32[24,24,128,64]{3,2,1,0} parameter(1)
  ROOT %convolution.3 = f32[32,3,3,64]{3,2,1,0} convolution(%p0, %p1), window={size=24x24}, dim_labels=b01f_01io->b01f
}

ENTRY %main.9 (a: f32[32,26,26,128], b: f32[24,24,128,64]) -> f32[32,3,3,64] {
  %a = f32[32,26,26,128]{3,2,1,0} parameter(0)
  %b = f32[24,24,128,64]{3,2,1,0} parameter(1)
  ROOT %ynn_fusion.1 = f32[32,3,3,64]{3,2,1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(step_fn)/transpose(jvp())/conv"}
}
'''
  ops = xla_profile.hlo_ops(hlo)
  assert ops['ynn_fusion.1'] == (
      'f32[32,3,3,64]{3,2,1,0} fusion [jit(step_fn)/transpose(jvp())/conv] '
      '{fused: convolution window=size=24x24}')
  assert ops['convolution.3'].startswith('f32[32,3,3,64]{3,2,1,0} convolution')
  assert ops['a'] == 'f32[32,26,26,128]{3,2,1,0} parameter'
  assert 'fused_computation.1' not in ops and 'main.9' not in ops
  kinds = {op: xla_profile.op_kind(what) for op, what in ops.items()}
  assert kinds == {'ynn_fusion.1': 'convolution', 'convolution.3': 'convolution',
                   'a': 'other', 'b': 'other', 'p0': 'other', 'p1': 'other'}
  assert xla_profile.op_kind('f32[16]{0} fusion {fused: reduce}') == 'fusion'
  assert xla_profile.op_kind(
      'f32[8,7,7,64]{3,2,1,0} custom-call [jit(f)/ffi_call]') == 'custom call'
  assert xla_profile.op_kind(  # A tuple result: dx and dw in one call.
      '(f32[8,7,7,64]{3,2,1,0}, f32[3,3,64,64]{3,2,1,0}) custom-call '
      '[jit(f)/transpose(jvp())/ffi_call]') == 'custom call'
  assert xla_profile.op_kind(
      '(bf16[8,7,7,64]{3,2,1,0}, f32[64]{0}, f32[64]{0}) custom-call '
      '[jit(f)/ffi_call] target=kmnist_bn_relu_fwd') == 'BatchNorm+ReLU'
  assert xla_profile.by_kind({'ynn_fusion.1': 2.0, 'a': 0.5, 'convolution.3': 1.0},
                             ops) == {'convolution': 3.0, 'other': 0.5}
  fusions = {'f1': 'f32[16]{0} fusion {fused: reduce}',
             'f2': 'f32[16]{0} fusion {fused: reduce}',
             'f3': 'f32[8,4]{1,0} fusion {fused: add}', 'c': ops['ynn_fusion.1']}
  assert xla_profile.fusions_by_shape(
      {'f1': 1.0, 'f2': 2.5, 'f3': 3.0, 'c': 9.0}, fusions) == [
          dict(shape='f32[8,4]{1,0}', ms=3.0, fusions=1),
          dict(shape='f32[16]{0}', ms=3.5, fusions=2)][::-1]


def _fake_data(n=256):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
  labels = rng.integers(0, 10, n).astype(np.uint8)
  return (images, labels), (images[:100], labels[:100])


def test_pairs_time_every_mode_and_take_the_fastest(tmp_path):
  """JAX f32, bf16 and bf16_act against three PyTorch modes (a fake worker here); the
  ratios pair f32 with f32 and the fastest with the fastest."""
  torch_rates = {'f32': 100.0, 'bf16': 150.0, 'bf16_cl': 200.0}
  calls = []

  def fake_torch(cmd, model, batch, steps, mode):
    calls.append((cmd, model, batch, steps, mode))
    return {'seconds': batch * steps / torch_rates[mode]}

  args = argparse.Namespace(models=['seed_cnn'], batches=[32], repeats=2)
  results = {}
  speed_pairs.run_pairs(args, fake_torch, _fake_data(), lambda m, b: 3,
                        results)
  row, = results['pairs']
  assert sorted(row['img_s']) == ['jax_bf16', 'jax_bf16_act', 'jax_f32',
                                  'torch_bf16', 'torch_bf16_cl', 'torch_f32']
  assert row['img_s']['torch_bf16_cl'] == pytest.approx(200.0)
  assert row['torch_fastest'] == 'bf16_cl'
  assert row['jax_fastest'] in ('f32', 'bf16', 'bf16_act')
  jax_best = max(row['img_s'][f'jax_{m}'] for m in ('f32', 'bf16', 'bf16_act'))
  assert row['fastest_ratio'] == pytest.approx(jax_best / 200.0)
  assert row['f32_ratio'] == pytest.approx(row['img_s']['jax_f32'] / 100.0)
  # One warm-up and two timed blocks per PyTorch mode, interleaved.
  assert [c[4] for c in calls] == ['f32', 'bf16', 'bf16_cl'] * 3
  assert {c[3] for c in calls[3:]} == {3}
  lines = '\n'.join(speed_pairs.pairs_table(results['pairs'], 'Some CPU'))
  assert 'on Some CPU' in lines and '(JAX ' in lines and '/ PyTorch bf16_cl)' in lines


def test_pairs_alone_write_one_file_per_cpu_kind():
  args = throughput.parse_args(['--sections', 'pairs'])
  tag = speed_pairs.machine_tag()
  assert args.out.endswith(os.path.join('speed_pairs', tag))
  assert re.fullmatch(r'[a-z0-9_]+', tag)
  assert throughput.parse_args([]).out.endswith(
      os.path.join('throughput', 'throughput'))


TORCH_PYTHON = os.environ.get('KMNIST_JAX_TORCH_PYTHON',
                              '/work/torchvenv/bin/python')


@pytest.mark.skipif(not os.path.exists(TORCH_PYTHON),
                    reason=f'no torch venv at {TORCH_PYTHON}')
def test_the_torch_worker_trains_in_each_mode(real_data_dir):
  notes = []
  worker = torch_client.start_torch(TORCH_PYTHON, str(real_data_dir), notes)
  assert worker is not None, notes
  try:
    for mode in ('f32', 'bf16', 'bf16_cl'):
      out = worker('train', model='keras_cnn', batch=16, steps=2, mode=mode)
      assert out['seconds'] > 0, (mode, out)
      assert worker('eval', model='keras_cnn', batch=16, steps=1,
                    mode=mode)['seconds'] > 0
    bad = worker('train', model='keras_cnn', batch=16, steps=1, mode='fp8')
    assert bad == {'error': "mode 'fp8': expected one of f32, bf16, bf16_cl"}
  finally:
    worker.close()
