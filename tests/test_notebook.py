"""experiments/walkthrough.ipynb runs headless on the offline proxy."""

import json
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'experiments' / 'walkthrough.ipynb'
KERNEL = 'kmnist_jax_test'


def test_notebook_is_committed_without_outputs():
  nb = json.loads(NOTEBOOK.read_text(encoding='utf-8'))
  code = [c for c in nb['cells'] if c['cell_type'] == 'code']
  assert code and all(c['outputs'] == [] and c['execution_count'] is None
                      for c in code)


def test_notebook_runs(real_data_dir, tmp_path, monkeypatch):
  nbclient = pytest.importorskip('nbclient')
  nbformat = pytest.importorskip('nbformat')
  # A kernel spec for this interpreter, found first on JUPYTER_PATH.
  spec_dir = tmp_path / 'jupyter' / 'kernels' / KERNEL
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f',
               '{connection_file}'],
      'display_name': 'kmnist_jax test', 'language': 'python'}))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  monkeypatch.setenv('KMNIST_JAX_DATA_DIR', str(real_data_dir))
  monkeypatch.setenv('WALKTHROUGH_EPOCHS', '2')
  monkeypatch.setenv('WALKTHROUGH_WORKDIR', str(tmp_path / 'w'))
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, kernel_name=KERNEL, timeout=240,
      resources={'metadata': {'path': str(NOTEBOOK.parent)}})
  client.execute()
  text = '\n'.join(
      o.get('text', '') + json.dumps(o.get('data', {}).get('text/plain', ''))
      for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
  assert 'eval accuracy after 2 epochs:' in text
  assert "'class_distribution.png', 'confusion_test_from8000.png', " in text
  assert 'top1_char' in text
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if 'image/png' in o.get('data', {})]
  assert len(images) == 5  # samples, distribution, curves, confusion, gallery
  assert sorted(os.listdir(tmp_path / 'w' / 'new'))[0].endswith('.png')
