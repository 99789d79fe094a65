"""experiments.memory: peak RSS with and without the CLI's malloc setting."""

import json

import pytest

from experiments import memory


def test_unknown_model_is_refused_with_the_valid_names(capsys):
  with pytest.raises(SystemExit) as e:
    memory.main(['--models', 'keras_cnn,bogus'])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "unknown ['bogus']" in err and 'densenet_bc100_k12' in err


def test_one_row_measures_both_settings(tmp_path, real_data_dir):
  del real_data_dir  # The real test images, via KMNIST_JAX_DATA_DIR.
  assert memory.main(['--models', 'keras_cnn', '--train_split', 'test[:256]',
                      '--eval_split', 'test[8000:8128]',
                      '--out_dir', str(tmp_path)]) == 0
  row, = json.loads((tmp_path / 'memory.json').read_text())['rows']
  assert row['model'] == 'keras_cnn' and row['batch'] == 128
  assert 100 < row['stock'] < 20000 and 100 < row['defaults'] < 20000
  assert row['ratio'] == pytest.approx(row['defaults'] / row['stock'])
  assert row['malloc'].startswith('glibc malloc keeps freed memory')
  assert '| keras_cnn | 128 |' in (tmp_path / 'memory.md').read_text()


def test_a_densenet_keeps_the_stock_allocator():
  from kmnist_jax.cpu import malloc  # pylint: disable=g-import-not-at-top
  densenets = {m for _, m, _ in memory.ROWS if m.startswith('densenet')}
  assert densenets == {'densenet_bc100_k12'} <= set(malloc.STOCK_FOR)


def test_scripts_pick_the_malloc_setting_for_their_models(monkeypatch,
                                                          real_data_dir):
  """A parity run of the DenseNet applies the process settings for it: the
  stock allocator (the CLI's choice), before anything is trained."""
  from experiments import parity  # pylint: disable=g-import-not-at-top

  class Planned(Exception):
    pass

  seen = []
  monkeypatch.setattr(parity.runtime, 'setup',
                      lambda models=(): seen.append(list(models)))

  def stop(*args, **kwargs):
    raise Planned

  monkeypatch.setattr(parity, '_train', stop)
  argv = ['--configs', 'k49_densenet100', '--k49_on_kmnist', '--sides', 'jax',
          '--data_dir', str(real_data_dir), '--epochs', '1']
  with pytest.raises(Planned):
    parity.main(argv, setup_process=True)
  assert seen == [['densenet_bc100_k12']]
  seen.clear()
  with pytest.raises(Planned):
    parity.main(argv)  # In-process callers keep their own settings.
  assert not seen
