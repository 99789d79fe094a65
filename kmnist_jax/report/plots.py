"""Pictures of the data, the training and the predictions (matplotlib).

Every function builds a `matplotlib.figure.Figure` without pyplot (no global
figure state, any backend; PNGs are drawn by Agg) and saves it when given a
`path`. Japanese characters use IPAexGothic, the font that the
matplotlib-fontja package ships; `font_path()` finds it without importing
that package (whose import changes the global rcParams).

  fig = plots.sample_grid(images, labels, classes)          # 1
  fig = plots.class_distribution({'train': y}, classes)     # 2
  fig = plots.training_curves('W/metrics.jsonl')            # 3
  fig = plots.confusion_matrix(confusion, classes)          # 4
  fig = plots.confident_mistakes(images, labels, probs, classes)  # 5
  fig = plots.prediction_gallery(items, probs, classes)     # 6

`classes` is `data.class_map(...)`: (index, codepoint, char) per class.
Training writes 1-4 to `W/plots/` (`write_training_plots`), eval writes 4-5
(`write_eval_plots`), predict writes 6.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import matplotlib
import matplotlib.patches
from matplotlib import font_manager
from matplotlib.figure import Figure
import numpy as np

from kmnist_jax.core import fileio
from kmnist_jax.core.errors import UserError

FONT_FAMILY = 'IPAexGothic'
_FONT_FILE = 'ipaexg.ttf'
_DPI = 100
_GAP = 2  # Pixels between tiles of a mosaic.

Classes = Sequence[tuple[int, int, str]]


# ------------------------------------------------------------------- fonts


@functools.cache
def font_path() -> str:
  """Path of IPAexGothic (ipaexg.ttf) from the matplotlib-fontja package."""
  spec = importlib.util.find_spec('matplotlib_fontja')
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(folder, 'fonts', _FONT_FILE)
    if os.path.isfile(path):
      return path
  raise UserError('the Japanese font IPAexGothic is missing; expected the '
                  'matplotlib-fontja package (pip install matplotlib-fontja)')


@functools.cache
def japanese_font() -> font_manager.FontProperties:
  """FontProperties of IPAexGothic, registered with matplotlib once."""
  path = font_path()
  font_manager.fontManager.addfont(path)
  return font_manager.FontProperties(fname=path)


@contextlib.contextmanager
def _style():
  japanese_font()
  with matplotlib.rc_context({
      'font.family': [FONT_FAMILY], 'axes.unicode_minus': False,
      'font.size': 9, 'savefig.dpi': _DPI, 'figure.dpi': _DPI}):
    yield


def save_figure(fig: Figure, path: str | None) -> Figure:
  """Writes `fig` to `path` (format from its suffix) atomically; no-op if
  `path` is empty. Returns `fig`."""
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fmt = os.path.splitext(path)[1].lstrip('.').lower() or 'png'
    with fileio.atomic_path(path) as tmp, _style():
      fig.savefig(tmp, format=fmt, bbox_inches='tight')
  return fig


def _label(classes: Classes, k: int) -> str:
  return classes[k][2] if 0 <= k < len(classes) else str(k)


def _label_len(classes: Classes) -> int:
  """The longest class label: 1 for characters, more for names (Fashion)."""
  return max((len(c[2]) for c in classes), default=1)


def _codepoint(classes: Classes, k: int) -> str:
  from kmnist_jax.data import datasets as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.codepoint_text(classes[k][1])


def _mosaic(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """uint8 (rows*cols, h, w) -> one image with gray gaps between tiles."""
  n, h, w = tiles.shape
  out = np.full((rows * (h + _GAP) - _GAP, cols * (w + _GAP) - _GAP), 96,
                np.uint8)
  for i in range(min(n, rows * cols)):
    r, c = divmod(i, cols)
    out[r * (h + _GAP):r * (h + _GAP) + h,
        c * (w + _GAP):c * (w + _GAP) + w] = tiles[i]
  return out


# ------------------------------------------------------------------- plots


def sample_grid(images: np.ndarray, labels: np.ndarray, classes: Classes,
                per_class: int = 10, seed: int = 0, title: str = '',
                path: str | None = None) -> Figure:
  """One row per class, headed by its character, of random examples."""
  num = len(classes)
  rng = np.random.default_rng(seed)
  tiles = np.zeros((num * per_class, 28, 28), np.uint8)
  for k in range(num):
    idx = np.flatnonzero(labels == k)
    pick = rng.choice(idx, min(per_class, len(idx)), replace=False)
    tiles[k * per_class:k * per_class + len(pick)] = images[pick]
  mosaic = _mosaic(tiles, num, per_class)
  with _style():
    height = 0.35 * num + 0.6
    fig = Figure(figsize=(0.35 * per_class + 1.0, height))
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap='gray', vmin=0, vmax=255, interpolation='nearest')
    ax.set_yticks([k * 30 + 13.5 for k in range(num)],
                  [_label(classes, k) for k in range(num)],
                  fontsize=14 if num <= 10 else 9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
      side.set_visible(False)
    ax.set_title(f'{title}: {per_class} random examples per class' if title
                 else f'{per_class} random examples per class')
  return save_figure(fig, path)


def class_distribution(splits: Mapping[str, np.ndarray], classes: Classes,
                       path: str | None = None) -> Figure:
  """Examples per class, one bar group per split."""
  num = len(classes)
  x = np.arange(num)
  width = 0.8 / max(len(splits), 1)
  with _style():
    fig = Figure(figsize=(max(6.0, 0.3 * num * max(len(splits), 1)), 3.2))
    ax = fig.add_subplot()
    top = 1
    for i, (name, labels) in enumerate(splits.items()):
      counts = np.bincount(np.asarray(labels), minlength=num)[:num]
      ax.bar(x + (i - (len(splits) - 1) / 2) * width, counts, width,
             label=f'{name} ({len(labels):,})')
      top = max(top, int(counts.max(initial=0)))
    ax.set_ylim(0, top * 1.25)
    names = _label_len(classes) > 2
    ax.set_xticks(x, [_label(classes, k) for k in range(num)],
                  fontsize=8 if names or num > 10 else 12,
                  rotation=30 if names else 0, ha='right' if names else 'center')
    ax.set_ylabel('examples')
    ax.set_title('Class distribution')
    ax.legend(fontsize=8, loc='upper center', ncols=max(len(splits), 1))
  return save_figure(fig, path)


def training_curves(metrics: str | Sequence[dict], title: str = '',
                    path: str | None = None) -> Figure:
  """Loss and accuracy per epoch, train and eval (and test points).

  `metrics` is a metrics.jsonl path or its records.
  """
  if isinstance(metrics, (str, os.PathLike)):
    from kmnist_jax.core import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    metrics = metrics_lib.read_metrics(str(metrics))
  with _style():
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ('loss', 'accuracy')):
      for split, style in (('train', 'o-'), ('eval', 's-'), ('test', '*')):
        recs = [r for r in metrics if r.get('split') == split and key in r]
        if recs:
          ax.plot([r['epoch'] for r in recs], [r[key] for r in recs], style,
                  label=split, markersize=4 if split != 'test' else 10)
      ax.set_xlabel('epoch')
      ax.set_ylabel(key)
      ax.grid(alpha=0.3)
      ax.legend()
    if title:
      fig.suptitle(title)
  return save_figure(fig, path)


def confusion_matrix(confusion: Any, classes: Classes, title: str = '',
                     path: str | None = None) -> Figure:
  """Rows: true class, columns: predicted; colour = share of the row."""
  conf = np.asarray(confusion, np.int64)
  num = len(conf)
  share = conf / np.maximum(conf.sum(1, keepdims=True), 1)
  chars = [_label(classes, k) for k in range(num)]
  with _style():
    side = max(4.5, 0.28 * num)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    fs = 12 if num <= 10 else 6
    if _label_len(classes) > 2:  # names: smaller, slanted
      fs = 8
      ax.set_xticks(range(num), chars, fontsize=fs, rotation=40, ha='right')
    else:
      ax.set_xticks(range(num), chars, fontsize=fs)
    ax.set_yticks(range(num), chars, fontsize=fs)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    if num <= 20:
      for (r, c), n in np.ndenumerate(conf):
        if n:
          ax.text(c, r, str(n), ha='center', va='center', fontsize=7,
                  color='white' if share[r, c] > 0.5 else 'black')
    acc = np.trace(conf) / max(conf.sum(), 1)
    ax.set_title(title or f'Confusion matrix (accuracy {acc:.2%})')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='share of row')
  return save_figure(fig, path)


def confident_mistakes(images: np.ndarray, labels: np.ndarray,
                       probs: np.ndarray, classes: Classes, num: int = 16,
                       cols: int = 8, title: str = '',
                       path: str | None = None) -> Figure:
  """The `num` wrong predictions with the highest probability."""
  pred = probs.argmax(1)
  conf = probs[np.arange(len(pred)), pred]
  wrong = np.flatnonzero(pred != labels)
  order = wrong[np.argsort(-conf[wrong], kind='stable')][:num]
  rows = max(1, -(-len(order) // cols))
  with _style():
    fig = Figure(figsize=(1.15 * cols, 1.45 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
      ax.set_axis_off()
    for ax, i in zip(axes, order):
      ax.imshow(images[i], cmap='gray', vmin=0, vmax=255)
      ax.set_title(f'{_label(classes, pred[i])} {conf[i]:.0%}\n'
                   f'true {_label(classes, labels[i])}', fontsize=10)
    fig.suptitle(title or (f'Most confident mistakes: predicted, probability,'
                           f' true ({len(wrong)} mistakes in {len(labels)})'))
    if not len(order):
      fig.text(0.5, 0.5, 'no mistakes', ha='center')
  return save_figure(fig, path)


def _fit(image: np.ndarray, side: int) -> np.ndarray:
  """uint8 RGB (side, side): `image` scaled to fit, centred on gray."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  im = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  scale = side / max(im.size)
  size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
  resample = (Image.Resampling.NEAREST if scale >= 2
              else Image.Resampling.LANCZOS)
  im = im.resize(size, resample)
  out = np.full((side, side, 3), 128, np.uint8)
  top, left = (side - size[1]) // 2, (side - size[0]) // 2
  out[top:top + size[1], left:left + size[0]] = np.asarray(im)
  return out


def gallery_name(name: str, limit: int = 16) -> str:
  """The label of an input in the gallery: its base name, shown as is.

  Drawn without mathtext or TeX (a `$` is a dollar sign), control
  characters escaped (`inputs.display_name`), and a name longer than
  `limit` cut to '…' and its last `limit - 1` characters.
  """
  from kmnist_jax.core import names  # pylint: disable=g-import-not-at-top
  name = names.display_name(os.path.basename(name) or name)
  return name if len(name) <= limit else '…' + name[-(limit - 1):]


def prediction_gallery(items: Sequence[Any], probs: np.ndarray,
                       classes: Classes, top_k: int = 3, max_rows: int = 16,
                       path: str | None = None) -> Figure:
  """Per input: as read, preprocessed 28x28, and the top-k probabilities.

  `items` are `inputs.Item`s (name, image, display), `probs` (N, C);
  each input is labelled by `gallery_name`. Only the first `max_rows`
  inputs are drawn. One axes holds everything
  (a mosaic plus text and bars), which keeps 16 rows well under a second.
  """
  n = min(len(items), max_rows)
  k = min(top_k, probs.shape[1]) if len(probs) else top_k
  side, gap, bar = 84, 6, 120  # Tile size, gap and full bar, in pixels.
  row_h = side + gap
  text_x = 2 * side + 3 * gap
  chars = _label_len(classes)
  label_w, label_fs = (32, 15) if chars <= 1 else (6 * chars + 12, 9)
  width = text_x + label_w + 8 + bar + 130
  canvas = np.full((max(n, 1) * row_h, 2 * side + 2 * gap, 3), 255, np.uint8)
  for r in range(n):
    y = r * row_h
    canvas[y:y + side, :side] = _fit(items[r].display, side)
    canvas[y:y + side, side + gap:2 * side + gap] = _fit(items[r].image, side)
  with _style():
    fig = Figure(figsize=(width / 80, (max(n, 1) * row_h + 40) / 80))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, extent=(0, canvas.shape[1], canvas.shape[0], 0),
              interpolation='nearest')
    ax.set_xlim(-4, width)
    ax.set_ylim(max(n, 1) * row_h, -34)
    ax.set_axis_off()
    ax.text(side / 2, -6, 'input', ha='center', fontsize=9)
    ax.text(side * 1.5 + gap, -6, '28x28', ha='center', fontsize=9)
    ax.text(text_x, -6, f'top {k}', fontsize=9)
    ax.text(4, -22, f'Predictions ({n} of {len(items)} inputs)', fontsize=11)
    for r in range(n):
      p = probs[r]
      y = r * row_h
      ax.text(2, y + side - 3, gallery_name(items[r].name), fontsize=6,
              color='yellow', va='bottom', parse_math=False, usetex=False,
              bbox=dict(facecolor='black', alpha=0.5, pad=1, linewidth=0))
      for j, t in enumerate(np.argsort(-p, kind='stable')[:k]):
        t = int(t)
        cy = y + (j + 0.5) * side / k
        ax.text(text_x, cy, _label(classes, t), va='center',
                fontsize=label_fs)
        ax.add_patch(matplotlib.patches.Rectangle(
            (text_x + label_w, cy - 8), bar * float(p[t]), 16,
            color='tab:blue'))
        ax.add_patch(matplotlib.patches.Rectangle(
            (text_x + label_w, cy - 8), bar, 16, fill=False, edgecolor='0.7',
            linewidth=0.5))
        ax.text(text_x + label_w + 8 + bar, cy, f'{p[t]:6.1%}  {t} '
                f'{_codepoint(classes, t)}', va='center', fontsize=8)
    if not n:
      ax.text(width / 2, row_h / 2, 'no predictions', ha='center')
  return save_figure(fig, path)


# ----------------------------------------------------- workdir hooks (I/O)


def _try(name: str, make, *args, **kwargs) -> str | None:
  """Draws one plot; a failure is logged, never loses the run's results."""
  try:
    make(*args, **kwargs)
    return kwargs.get('path')
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('plot %s not written: %s', name, e)
    return None


def write_training_plots(config, workdir: str, train_images: np.ndarray,
                         train_labels: np.ndarray, inputs: Mapping[str, Any],
                         eval_metrics: Mapping[str, Any]) -> list[str]:
  """Writes 1-4 to `workdir/plots/`; returns the paths written.

  samples.png, class_distribution.png, training_curves.png and
  confusion_<eval split>.png. `inputs`: what the data layer knows, read by
  the trainer with its data (`data.labels.plot_inputs`): `classes`,
  `split_labels` ({'train <split>': labels, ...}), `tag` (' (offline
  proxy)' or '') and `eval_name` (the eval split as a file name).
  """
  out = os.path.join(workdir, 'plots')
  classes, tag = inputs['classes'], inputs['tag']
  written = [
      _try('samples', sample_grid, train_images, train_labels, classes,
           seed=config.seed, title=f'{config.dataset} {config.train_split}',
           path=os.path.join(out, 'samples.png')),
      _try('class_distribution', class_distribution, inputs['split_labels'],
           classes, path=os.path.join(out, 'class_distribution.png')),
      _try('training_curves', training_curves,
           os.path.join(workdir, 'metrics.jsonl'),
           title=f'{config.model} on {config.dataset}{tag}',
           path=os.path.join(out, 'training_curves.png')),
  ]
  if eval_metrics.get('confusion_matrix') is not None:
    written.append(_try(
        'confusion', confusion_matrix, eval_metrics['confusion_matrix'],
        classes, title=_confusion_title(eval_metrics, config.eval_split, tag),
        path=os.path.join(out, f'confusion_{inputs["eval_name"]}.png')))
  return [p for p in written if p]


def _confusion_title(metrics: Mapping[str, Any], split: str, tag: str) -> str:
  return (f'Confusion on {split}{tag}: accuracy {metrics["accuracy"]:.2%}, '
          f'balanced {metrics["balanced_accuracy"]:.2%}')


def write_eval_plots(workdir: str, split: str, images: np.ndarray,
                     labels: np.ndarray, probs: np.ndarray, classes: Classes,
                     metrics: Mapping[str, Any], tag: str = '') -> list[str]:
  """Writes 4-5 for `split`: confusion_<split>.png, mistakes_<split>.png."""
  # pylint: disable-next=g-import-not-at-top
  from kmnist_jax.data import splits as splits_lib
  out = os.path.join(workdir, 'plots')
  name = splits_lib.split_name(split)
  written = [
      _try('confusion', confusion_matrix, metrics['confusion_matrix'],
           classes, title=_confusion_title(metrics, split, tag),
           path=os.path.join(out, f'confusion_{name}.png')),
      _try('mistakes', confident_mistakes, images, labels, probs, classes,
           path=os.path.join(out, f'mistakes_{name}.png')),
  ]
  return [p for p in written if p]
