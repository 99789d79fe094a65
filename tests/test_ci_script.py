"""`.ci/run` builds its own venv and leaves the user's `.venv` alone."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ci_uses_its_own_venv_and_the_readme_test_command():
  script = (REPO / '.ci' / 'run').read_text()
  code = '\n'.join(l for l in script.splitlines()
                   if not l.lstrip().startswith('#'))
  assert not re.search(r'(^|[\s/"])\.venv\b', code), 'touches the user .venv'
  assert 'VENV=.ci-venv' in code
  assert ('"$VENV"/bin/python -m pytest -q -n 2 -m \'not slow\'' in code)
  assert '.ci-venv/' in (REPO / '.gitignore').read_text().splitlines()
