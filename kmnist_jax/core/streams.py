"""The PRNG streams: every `fold_in` tag of the project, in one place.

A run has one root key, `PRNGKey(config.seed)`. Each use of randomness folds
a fixed tag into it, then the epoch or step, so streams never overlap and a
resumed run draws exactly what an uninterrupted one draws:

* data order: `fold_in(fold_in(root, DATA), epoch)` (`train.batches`);
* dropout: `fold_in(fold_in(root, DROPOUT), step)` (`steps.make_train_step`);
* augmentation: `fold_in(fold_in(root, AUGMENT), step)`, then one of the
  sub-tags TRANSLATE, CUTOUT or MIXUP (`augment.train_transform`).

Model initialisation draws from `nnx.Rngs(params=seed)` (`models`).
"""

DATA = 1
DROPOUT = 2
AUGMENT = 3

# Sub-streams of AUGMENT.
TRANSLATE = 0
CUTOUT = 1
MIXUP = 2
