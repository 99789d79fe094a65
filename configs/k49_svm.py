"""K49 (Kuzushiji-49): tuned RBF SVM.

The recipe of configs/svm.py on K49 (49 classes, 1,176 one-vs-one pairs,
scored by balanced accuracy). Published: 85.61% K49 balanced accuracy, on
the pre-2019-02-05 data release (rois-codh/kmnist README table, issue #3).
The source's K49 C and gamma are not public either (see configs/svm.py);
the KMNIST values are kept.

  python -m kmnist_jax.main --config configs/k49_svm.py --workdir W

Expected wall time: CPU only (scikit-learn), a GPU does not help: several
hours for 232,365 images (estimate, about 15x KMNIST). There is no K49 data
offline: `:proxy` trains on K49's test[:8000].
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  return configlib.sibling_config(__file__, 'svm.py', 'k49', arg)
