"""Shake-Shake-26 2x96d (S-S-I) with Cutout 14 on KMNIST (hysts).

hysts/pytorch_image_classification at commit
c3e983300b2838d8a8634d08404b159a46c8c791 (2018-12-20, the last change to
its KMNIST results; "H" below):

* network: shake-shake, depth 26, 96 base channels, shake forward,
  backward and per image (H configs/shake_shake.json; "2x96d (S-S-I)" in
  the row name of H README.md "Results on Kuzushiji-MNIST"); its layers as
  H models/shake_shake.py: a 3x3 conv-BN-ReLU stem of 96 channels (not the
  16 of Gastaldi's Lua code), the last block's sum pooled without a ReLU,
  the head's bias zeroed, the convolutions He-normal (fan-out);
* SGD, momentum 0.9, Nesterov, weight decay 1e-4 (coupled), batch 128
  (H configs/shake_shake.json);
* learning rate 0.2 with cosine annealing to 0 per step (H README.md, KMNIST
  note; H configs/shake_shake.json `base_lr` 0.2, `lr_min` 0), 200 epochs
  (H README.md KMNIST table; the JSON's 1800 epochs are its CIFAR recipe);
* random crop of the image zero-padded by 4 pixels (H argparser.py,
  `use_random_crop` on for KMNIST since commit
  1c209bda131942ae0b8eb1f7a612e648b8e5c312; H train.py
  `--random_crop_padding` default 4): `augment_translate=4`;
* Cutout 14, probability 1, centre anywhere (H train.py defaults), after
  normalising by mean 0.1904 and std 0.3475 (H dataloader.py): the square
  is the pixel value 0.1904, `cutout_fill=0.1904`; the network sees
  (x - 0.1904) / 0.3475: `input_mean`, `input_std`.

Not settled, or differing from the source: as configs/resnet_preact20_cutout.py.

Published: 99.34% KMNIST test accuracy (0.66% error, median of 3 runs, last
epoch; H README.md "Results on Kuzushiji-MNIST", on the pre-2019-02-05 data
release), the best published single model. K49: configs/k49_shake_shake26.py
(janzd's recipe, 98.29%).

  python -m kmnist_jax.main --config configs/shake_shake26.py --workdir W
  python -m kmnist_jax.main --config configs/shake_shake26.py:proxy --workdir W

Expected wall time on one GPU: 6 h 46 min for the 200 epochs on a GTX 1080 Ti
(hysts), about 2 h on an A100-class GPU (estimate); on the offline proxy on a
2-core CPU 29 min/epoch (measured, idle).
"""

from kmnist_jax.config import base as configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model = 'shake_shake26_2x96d'
  c.num_epochs = 200
  c.batch_size = 128
  c.optimizer = 'sgd'
  c.learning_rate = 0.2
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 1e-4
  c.lr_schedule = 'cosine'
  c.augment_translate = 4
  c.cutout_size = 14
  # KMNIST's 0.1904, 0.3475 (MNIST's, Fashion-MNIST's with :mnist, ...).
  configlib.use_dataset_stats(c, ('input_mean', 'input_std', 'cutout_fill'))
  c.eval_batch_size = 500
  return configlib.apply_variant(c, arg, PER_DATASET)


# hysts' MNIST recipe (H README.md "Results on MNIST" at a70ac0c: 0.24% error
# at 100 epochs; no random crop on MNIST): as configs/resnet_preact20_cutout.py.
PER_DATASET = {'mnist': dict(num_epochs=100, augment_translate=0)}
