"""Predict the characters in new images with a trained workdir.

  python -m kmnist_jax.main --mode predict --workdir W \\
      --predict_input scan.png --predict_input folder/ --predict_input x.npz

From Python (a notebook)::

  predictor = Predictor.from_workdir('W')
  table = predictor.predict(['scan.png', 'folder/'], top_k=3)  # DataFrame

Only the workdir is needed: the model and the class map come from its saved
config; the checkpoint is `checkpoint_step`, else the latest: the one
`--mode eval` and ensembles score by default, so that top-1 on the eval
split equals eval's accuracy. Inputs are read by `kmnist_jax.inference.prediction_inputs` and framed in the
KMNIST convention by `kmnist_jax.inference.framing`. The forward pass runs in
batches of a fixed size (the last one padded), so it compiles once.

File names are data: the table keeps each path as given; the terminal table,
the `error:` lines and the gallery show it through
`inputs.display_name` (control characters escaped, one line), and the
CSV (`write_csv`) is RFC 4180 with text cells guarded against spreadsheet
formulas.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from typing import Any

import numpy as np
import pandas as pd

from kmnist_jax.data import datasets as data_lib
from kmnist_jax.inference import evaluate as evaluate_lib
from kmnist_jax.core import fileio
from kmnist_jax.inference import prediction_inputs as inputs_lib
from kmnist_jax.train import steps
from kmnist_jax.core.errors import UserError
from kmnist_jax.inference.framing import InputError

GALLERY_ROWS = 16


@dataclasses.dataclass
class Predictions:
  """The outcome of `Predictor.run`.

  Attributes:
    table: one row per good input: path, then for k = 1..top_k the columns
      topk_index, topk_char (the class label), topk_codepoint ('U+304A'; ''
      for a label of several characters), topk_prob.
    errors: (path, message) per bad input; the message says what was
      expected.
    items: the good inputs (`inputs.Item`: name, 28x28 image, display).
    probs: float32 (len(items), num_classes) class probabilities.
  """
  table: pd.DataFrame
  errors: list[tuple[str, str]]
  items: list[inputs_lib.Item]
  probs: np.ndarray


class Predictor:
  """A restored model and its class map, ready to predict."""

  def __init__(self, config, graphdef, state, step: int,
               classes: list[tuple[int, int, str]],
               batch_size: int | None = None, workdir: str = ''):
    self.config, self.state, self.step = config, state, step
    self.classes = classes
    # The batch size of `--mode eval`, which then predicts the same
    # probabilities.
    self.batch_size = batch_size or config.eval_batch_size
    self.workdir = workdir
    self._infer_fn = steps.make_infer_fn(graphdef, config.tta_shift,
                                         config.matmul_precision)

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint_step: int = -1,
                   batch_size: int | None = None) -> 'Predictor':
    """Restores checkpoint `checkpoint_step`, else the latest, of
    `workdir` (as `--mode eval` does)."""
    config, graphdef, state, step = evaluate_lib.restore_for_inference(
        workdir, checkpoint_step)
    classes = data_lib.class_map(config.dataset, config.data_dir or None)
    return cls(config, graphdef, state, step, classes, batch_size, workdir)

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """float32 (N, C) of uint8 images (N, 28, 28) in the KMNIST convention."""
    images = np.asarray(images, np.uint8).reshape(-1, 28, 28)
    if not len(images):
      return np.zeros((0, self.num_classes), np.float32)
    return steps.probabilities(steps.infer(self._infer_fn, self.state, images,
                                           self.batch_size))

  def check_top_k(self, top_k: int) -> int:
    if not isinstance(top_k, (int, np.integer)) or not (
        1 <= top_k <= self.num_classes):
      raise UserError(f'--top_k={top_k}: expected an integer from 1 to '
                      f'{self.num_classes} (the number of classes)')
    return int(top_k)

  def run(self, inputs: Any, top_k: int = 3) -> Predictions:
    """Predicts every good input; bad ones are listed in `.errors`."""
    top_k = self.check_top_k(top_k)
    items, errors = inputs_lib.collect(inputs)
    images = np.stack([it.image for it in items]) if items else np.zeros(
        (0, 28, 28), np.uint8)
    probs = self.probabilities(images)
    return Predictions(self.table([it.name for it in items], probs, top_k),
                       errors, items, probs)

  def predict(self, inputs: Any, top_k: int = 3,
              errors: str = 'raise') -> pd.DataFrame:
    """The table of `run` (see `Predictions.table`).

    Args:
      inputs: paths (images, folders, .npy/.npz), arrays or PIL images; see
        `inputs.collect`.
      top_k: characters per input.
      errors: 'raise' (a `UserError` naming every bad input) or 'skip' (bad
        inputs are left out of the table).
    """
    if errors not in ('raise', 'skip'):
      raise ValueError(f"errors={errors!r}: expected 'raise' or 'skip'")
    result = self.run(inputs, top_k)
    if result.errors and errors == 'raise':
      raise UserError(f'{len(result.errors)} bad input(s): ' + '; '.join(
          inputs_lib.display_name(f'{path}: {message}')
          for path, message in result.errors))
    return result.table

  def table(self, names: list[str], probs: np.ndarray,
            top_k: int) -> pd.DataFrame:
    columns: dict[str, Any] = {'path': list(names)}
    order = np.argsort(-probs, axis=1, kind='stable')[:, :top_k]
    for k in range(top_k):
      idx = order[:, k] if len(order) else np.zeros(0, np.int64)
      columns[f'top{k + 1}_index'] = idx.astype(np.int64)
      columns[f'top{k + 1}_char'] = [self.classes[i][2] for i in idx]
      columns[f'top{k + 1}_codepoint'] = [
          data_lib.codepoint_text(self.classes[i][1]) for i in idx]
      columns[f'top{k + 1}_prob'] = probs[np.arange(len(idx)), idx].astype(
          np.float64)
    return pd.DataFrame(columns)


def format_table(table: pd.DataFrame, top_k: int) -> str:
  """The stdout table: path, then per k 'index U+304A お probability'.

  Paths go through `inputs.display_name`: a control character in a file
  name is shown escaped (`\\x1b`), never sent to the terminal.
  """
  paths = [inputs_lib.display_name(p) for p in table['path']]
  width = max([len('path')] + [len(p) for p in paths])
  head = [f'{"path":<{width}}'] + [f'{"top" + str(k + 1):<20}'
                                   for k in range(top_k)]
  lines = ['  '.join(head).rstrip()]
  for path, row in zip(paths, table.itertuples(index=False)):
    row = row._asdict()
    cells = [f'{path:<{width}}']
    for k in range(1, top_k + 1):
      parts = (f'{row[f"top{k}_index"]:>2}', row[f'top{k}_codepoint'],
               row[f'top{k}_char'], f'{row[f"top{k}_prob"]:.4f}')
      cells.append(' '.join(p for p in parts if p))
    lines.append('  '.join(cells))
  return '\n'.join(lines)


# OWASP "CSV injection": a spreadsheet runs a cell that starts with these.
_FORMULA_START = ('=', '+', '-', '@', '\t', '\r')


def csv_cell(text: str) -> str:
  """A text cell safe for spreadsheets, as valid UTF-8.

  A cell starting with = + - @, tab or CR gets a leading single quote (the
  OWASP advice; spreadsheets then show it as text); bytes of a file name
  that are not UTF-8 are written as `\\xff`. Anything else is kept as is,
  control characters too: the CSV quoting keeps them inside the cell.
  """
  text = inputs_lib.as_utf8(text)
  return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(table: pd.DataFrame, path: str) -> None:
  """Writes the table as UTF-8 CSV atomically.

  RFC 4180 (CRLF line ends, so a CR or LF in a cell is always quoted): any
  CSV reader gives back one row per prediction. Text cells go through
  `csv_cell`, which leaves absolute UTF-8 paths unchanged.
  """
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UserError(f'--predict_output {inputs_lib.display_name(path)}: '
                    f'folder {inputs_lib.display_name(folder)} does not exist')
  table = table.copy()
  for column in table.columns:
    if not pd.api.types.is_numeric_dtype(table[column]):
      table[column] = [csv_cell(str(v)) for v in table[column]]
  try:
    with fileio.atomic_path(path) as tmp:
      table.to_csv(tmp, index=False, encoding='utf-8', float_format='%.6f',
                   quoting=csv.QUOTE_MINIMAL, lineterminator='\r\n')
  except OSError as e:
    raise UserError(f'--predict_output {inputs_lib.display_name(path)}: '
                    f'cannot write it ({e.strerror or e})') from None


# The workdir files predict writes; any other file there is not its to write.
_OWN_OUTPUTS = ('predictions.csv', os.path.join('plots', 'predictions.png'))
_CSV_HEAD = 'path,top1_index,'


def _file_id(path: str) -> tuple[int, int] | None:
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_dev, st.st_ino


def _is_own_csv(path: str) -> bool:
  """Whether `path` is a CSV an earlier predict wrote (its header)."""
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      return f.read(len(_CSV_HEAD)) == _CSV_HEAD
  except OSError:
    return False


def input_files(inputs: Any) -> set[tuple[int, int]]:
  """(device, inode) of every file the path inputs name or hold."""
  ids = set()
  for x in inputs_lib.as_list(inputs):
    if isinstance(x, (str, os.PathLike)):
      try:
        ids.update(_file_id(f) for f in inputs_lib.expand(x))
      except InputError:
        pass  # Reported with the predictions.
  return ids - {None}


def check_output(output_csv: str, inputs: Any, workdir: str) -> None:
  """Refuses an output that would replace one of the inputs, or a file of
  the workdir other than predict's own outputs (config.json, checkpoints,
  results): one line naming it.

  In the workdir, predict writes `predictions.csv`, a new .csv file
  directly in it, or over a CSV an earlier predict wrote.
  """
  show = inputs_lib.display_name
  flag = f'--predict_output {show(output_csv)}'
  path = os.path.realpath(output_csv)
  if os.path.isdir(path):
    raise UserError(f'{flag}: is a folder; expected a CSV file name')
  target = _file_id(path)
  if target is not None and target in input_files(inputs):
    raise UserError(f'{flag}: is one of the --predict_input files; expected '
                    'a new file name, so that no input is overwritten')
  root = os.path.realpath(workdir)
  if os.path.commonpath([root, path]) != root:
    return
  rel = os.path.relpath(path, root)
  new_csv = (rel.endswith('.csv') and os.sep not in rel
             and not rel.startswith('.'))
  if rel == _OWN_OUTPUTS[0] or (new_csv and (
      not os.path.lexists(path) or _is_own_csv(path))):
    return
  default = show(os.path.join(workdir, _OWN_OUTPUTS[0]))
  raise UserError(f'{flag}: a file of the workdir that predict does not '
                  'write; expected a path outside it, or a new .csv file in '
                  f'it (default {default})')


def main(workdir: str, inputs: list[str], output_csv: str = '',
         top_k: int = 3, checkpoint_step: int = -1) -> int:
  """The `--mode predict` command; returns the exit code.

  Prints the table on stdout and one `error: <path>: <expected>` line per
  bad input on stderr; writes the CSV and `workdir/plots/predictions.png`.
  Exit code 0 if every input was predicted, 1 if any failed.
  """
  if not inputs:
    raise UserError('--predict_input is required for --mode predict: an '
                    'image, a folder or a .npy/.npz array (repeat the flag '
                    'for several)')
  if any(isinstance(x, (str, os.PathLike)) and not os.fspath(x)
         for x in inputs):
    raise UserError("--predict_input '': empty path; expected an image, a "
                    'folder or a .npy/.npz array')
  if not isinstance(top_k, int) or top_k < 1:
    raise UserError(f'--top_k={top_k}: expected a positive integer')
  output_csv = output_csv or os.path.join(workdir, 'predictions.csv')
  check_output(output_csv, inputs, workdir)
  predictor = Predictor.from_workdir(workdir, checkpoint_step)
  result = predictor.run(inputs, top_k)
  show = inputs_lib.display_name
  for path, message in result.errors:
    print(f'error: {show(path)}: {show(message)}', file=sys.stderr)
  if result.items:
    print(format_table(result.table, top_k))
    write_csv(result.table, output_csv)
    which = ', the latest' if checkpoint_step < 0 else ''
    print(f'wrote {show(output_csv)} ({len(result.items)} predictions, '
          f'checkpoint step {predictor.step}{which})')
    gallery = os.path.join(workdir, _OWN_OUTPUTS[1])
    try:
      if _file_id(gallery) in input_files(inputs):
        raise UserError(f'{gallery} is one of the --predict_input files')
      from kmnist_jax.report import plots  # pylint: disable=g-import-not-at-top
      plots.prediction_gallery(result.items, result.probs, predictor.classes,
                               top_k=min(top_k, 3), max_rows=GALLERY_ROWS,
                               path=gallery)
      print(f'wrote {show(gallery)}')
    except Exception as e:  # pylint: disable=broad-except
      # The table and the CSV are out: a picture never costs them.
      print(f'warning: gallery not written: {show(str(e))}', file=sys.stderr)
  elif not result.errors:  # Else each bad input already has its line.
    print('error: no input could be predicted', file=sys.stderr)
  return 1 if result.errors or not result.items else 0
