"""Plots: every figure draws fast, with the Japanese glyphs really rendered."""

import io
import json
import os
import time
import warnings

from matplotlib import ft2font
from matplotlib.figure import Figure
import numpy as np
from PIL import Image
import pytest

from kmnist_jax.config import base as configlib
from kmnist_jax.data import datasets as data
from kmnist_jax.inference import evaluate
from kmnist_jax.inference import prediction_inputs as inputs
from kmnist_jax.train import optim
from kmnist_jax.report import plots
from kmnist_jax.train import steps
from kmnist_jax.train import state as train_state
from kmnist_jax.train import loop as train
from kmnist_jax.methods import harness

from conftest import make_learnable_dir  # pylint: disable=g-bad-import-order

KMNIST_CHARS = 'おきすつなはまやれを'
K49_CHARS = ('あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめも'
             'やゆよらりるれろわゐゑをんゝ')
CLASSES = data.class_map('kmnist', '/nonexistent')  # The built-in table.


def glyph_warnings(record):
  return [str(w.message) for w in record
          if 'missing from font' in str(w.message)
          or 'Glyph' in str(w.message)]


def render(fig: Figure) -> list[str]:
  """Draws `fig` to PNG bytes; returns the glyph warnings raised."""
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter('always')
    with plots._style():
      fig.savefig(io.BytesIO(), format='png')
  return glyph_warnings(record)


def test_font_has_every_kmnist_and_k49_glyph():
  font = ft2font.FT2Font(plots.font_path())
  assert font.family_name == 'IPAexGothic'
  assert len(K49_CHARS) == 49
  missing = [c for c in KMNIST_CHARS + K49_CHARS + 'U+0123456789%'
             if font.get_char_index(ord(c)) == 0]
  assert missing == []
  assert [c for _, _, c in CLASSES] == list(KMNIST_CHARS)


def test_each_character_renders_without_fallback_warning():
  with plots._style():
    fig = Figure(figsize=(8, 1))
    for i, c in enumerate(KMNIST_CHARS + K49_CHARS):
      fig.text(i / 60, 0.5, c, fontproperties=plots.japanese_font())
      fig.text(i / 60, 0.1, c)  # The rcParams family of every plot.
  assert render(fig) == []


def test_the_glyph_check_catches_a_missing_glyph():
  # Negative control: a character IPAexGothic lacks must be caught.
  smiley = '\U0001F600'
  assert ft2font.FT2Font(plots.font_path()).get_char_index(ord(smiley)) == 0
  with plots._style():
    fig = Figure(figsize=(2, 1))
    fig.text(0.5, 0.5, smiley)
  assert any('missing from font' in w for w in render(fig))


def synthetic(n=200, num=10, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  labels = np.arange(n) % num
  probs = rng.dirichlet(np.ones(num), n).astype(np.float32)
  return images, labels, probs


def tick_texts(ax, axis='x'):
  ticks = ax.get_xticklabels() if axis == 'x' else ax.get_yticklabels()
  return [t.get_text() for t in ticks]


def test_every_plot_draws_fast_and_renders_characters(tmp_path):
  images, labels, probs = synthetic()
  conf = np.zeros((10, 10), np.int64)
  np.add.at(conf, (labels, probs.argmax(1)), 1)
  records = [dict(step=10 * e, epoch=e, split=s, loss=1.0 / e,
                  accuracy=1 - 0.5 / e) for e in (1, 2, 3)
             for s in ('train', 'eval')]
  items, _ = inputs.collect([images[i] for i in range(20)])
  makers = {
      'samples': lambda p: plots.sample_grid(images, labels, CLASSES, path=p),
      'dist': lambda p: plots.class_distribution(
          {'train': labels, 'eval': labels[:50]}, CLASSES, path=p),
      'curves': lambda p: plots.training_curves(records, path=p),
      'confusion': lambda p: plots.confusion_matrix(conf, CLASSES, path=p),
      'mistakes': lambda p: plots.confident_mistakes(
          images, labels, probs, CLASSES, path=p),
      'gallery': lambda p: plots.prediction_gallery(items, probs[:20],
                                                    CLASSES, path=p),
  }
  figs = {}
  for name, make in makers.items():
    path = str(tmp_path / f'{name}.png')
    with warnings.catch_warnings(record=True) as record:
      warnings.simplefilter('always')
      start = time.perf_counter()
      figs[name] = make(path)
      seconds = time.perf_counter() - start
    assert glyph_warnings(record) == [], name
    assert seconds < 2.0, (name, seconds)
    with Image.open(path) as im:
      assert im.format == 'PNG' and min(im.size) > 150, (name, im.size)
    assert not [f for f in os.listdir(tmp_path) if '.tmp' in f]

  samples_ax = figs['samples'].axes[0]
  assert tick_texts(samples_ax, 'y') == list(KMNIST_CHARS)
  assert samples_ax.images[0].get_array().shape == (10 * 30 - 2, 10 * 30 - 2)
  assert tick_texts(figs['dist'].axes[0]) == list(KMNIST_CHARS)
  assert [t.get_text() for t in figs['dist'].axes[0].get_legend().texts] == [
      'train (200)', 'eval (50)']
  loss_ax, acc_ax = figs['curves'].axes
  assert [list(l.get_xdata()) for l in loss_ax.lines] == [[1, 2, 3]] * 2
  assert list(acc_ax.lines[1].get_ydata()) == [0.5, 0.75, 1 - 0.5 / 3]
  conf_ax = figs['confusion'].axes[0]
  assert tick_texts(conf_ax) == tick_texts(conf_ax, 'y') == list(KMNIST_CHARS)
  acc = np.trace(conf) / conf.sum()
  assert conf_ax.get_title() == f'Confusion matrix (accuracy {acc:.2%})'
  titled = [a.get_title() for a in figs['mistakes'].axes if a.get_title()]
  assert len(titled) == 16
  pred = probs.argmax(1)
  wrong = np.flatnonzero(pred != labels)
  best = wrong[np.argmax(probs[wrong, pred[wrong]])]
  assert titled[0] == (f'{KMNIST_CHARS[pred[best]]} '
                       f'{probs[best, pred[best]]:.0%}\n'
                       f'true {KMNIST_CHARS[labels[best]]}')
  texts = [t.get_text() for t in figs['gallery'].axes[0].texts]
  assert 'Predictions (16 of 20 inputs)' in texts  # Capped at 16 rows.
  top3 = np.argsort(-probs[0])[:3]
  p0 = probs[0, top3[0]]
  first = texts.index('<array 0>')
  assert texts[first + 1:first + 3] == [
      KMNIST_CHARS[top3[0]],
      f'{p0:6.1%}  {top3[0]} U+{ord(KMNIST_CHARS[top3[0]]):04X}']
  assert len(figs['gallery'].axes[0].patches) == 16 * 3 * 2


def test_sample_grid_of_49_classes_is_fast(tmp_path):
  images, labels, _ = synthetic(n=49 * 12, num=49)
  classes = [(i, ord(c), c) for i, c in enumerate(K49_CHARS)]
  start = time.perf_counter()
  fig = plots.sample_grid(images, labels, classes,
                          path=str(tmp_path / 's.png'))
  assert time.perf_counter() - start < 2.0
  assert tick_texts(fig.axes[0], 'y') == list(K49_CHARS)
  assert render(fig) == []


def test_training_and_eval_write_their_plots(tmp_path):
  config = configlib.base_config()
  config.update(dict(
      model='seed_cnn', data_dir=str(make_learnable_dir(tmp_path / 'data', 256, 100)),
      train_split='train', eval_split='test', num_epochs=2, batch_size=32,
      eval_batch_size=64, log_every_steps=100, learning_rate=3e-3))
  workdir = str(tmp_path / 'w')
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter('always')
    _, summary = harness.fit(config, workdir)
    result = harness.evaluate(None, workdir)
  assert glyph_warnings(record) == []
  plot_dir = os.path.join(workdir, 'plots')
  assert sorted(os.listdir(plot_dir)) == [
      'class_distribution.png', 'confusion_test.png', 'mistakes_test.png',
      'samples.png', 'training_curves.png']
  assert result['plots'] == [os.path.join(plot_dir, 'confusion_test.png'),
                             os.path.join(plot_dir, 'mistakes_test.png')]
  saved = json.load(open(os.path.join(workdir, 'eval_test.json')))
  assert 'plots' not in saved and saved['accuracy'] == result['accuracy']
  assert result['accuracy'] == summary['eval']['accuracy']


def test_infer_pads_and_compiles_once():
  config = configlib.base_config()
  config.model = 'seed_cnn'
  graphdef, state = train_state.init_state(
      config, 10, optim.create_optimizer(config, 1))
  infer_fn = steps.make_infer_fn(graphdef)
  images, _, _ = synthetic(n=70)
  full = np.asarray(infer_fn(state.params, state.batch_stats, images))
  out = steps.infer(infer_fn, state, images, 32)
  assert out.shape == (70, 10) and out.dtype == np.float32
  np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)
  assert steps.infer(infer_fn, state, images[:5], 32).shape == (5, 10)
  assert infer_fn._cache_size() == 2  # 70 in one call, 32 per batch.


def test_real_proxy_style_plots(real_data_dir, tmp_path):
  images, labels = data.load('kmnist', 'test[:2000]', real_data_dir)
  classes = data.class_map('kmnist', real_data_dir)
  fig = plots.sample_grid(images, labels, classes,
                          path=str(tmp_path / 'samples.png'))
  assert render(fig) == []
  tiles = fig.axes[0].images[0].get_array()
  assert tiles[:28, :28].max() == 255  # Real glyphs, white on black.


def test_gallery_draws_file_names_as_they_are(tmp_path):
  """`$` is no mathtext (an odd `$\\frac$` would make drawing raise), a
  leading = + - @ is plain text, control characters are shown escaped and
  bytes that are not UTF-8 as `\\xff`: the PNG is written."""
  images, _, probs = synthetic(7)
  names = ['$\\frac$.png', 'd/$x^2$.png', '=1+2.png', '@a-b+.png',
           'esc\x1b[31m.png', 'two\nlines.png', os.fsdecode(b'\xff.png')]
  shown = ['$\\frac$.png', '$x^2$.png', '=1+2.png', '@a-b+.png',
           'esc\\x1b[31m.png', 'two\\nlines.png', '\\xff.png']
  items = [inputs.Item(n, im, im) for n, im in zip(names, images)]
  path = str(tmp_path / 'gallery.png')
  fig = plots.prediction_gallery(items, probs, CLASSES, path=path)
  labels = [t for t in fig.axes[0].texts if t.get_color() == 'yellow']
  assert [t.get_text() for t in labels] == shown
  for t in labels:  # Drawn as plain text: no mathtext, no TeX.
    assert t._preprocess_math(t.get_text()) == (t.get_text(), False)
  assert render(fig) == []
  with Image.open(path) as im:
    assert im.format == 'PNG' and im.size[1] > 7 * 80
  assert plots.gallery_name('/x/' + 'a' * 20 + '$.png') == '…' + (
      'a' * 10 + '$.png')
