"""The registry of datasets and their official files, pinned.

`DATASETS` maps a name ('kmnist', 'k49', 'mnist', 'fashion_mnist') to its
`DatasetInfo`: classes, metric, files with their pinned sizes and checksums,
class labels, the recipes' normalisation constants and the `:proxy` splits.
`kmnist_jax.data.datasets` loads them; `kmnist_jax.data.download` fetches them.
"""

import dataclasses
from collections.abc import Mapping
from typing import Literal

from kmnist_jax.core.errors import UserError

# Pinned (size, md5, sha256) of every official file. Sizes and md5s: the
# git-annex keys and md5sums of datasets-mila/datasets--kmnist (a DataLad copy
# of all 14 files; its md5s equal those of rois-codh/kmnist's README, the
# torchvision KMNIST class and the local copies). sha256s, by source:
#  [local] computed from the official files in this project's offline data
#    folder (their md5s match);
#  [tv] pytorch/vision torchvision/prototype/datasets/_builtin/mnist.py
#    (KMNIST._CHECKSUMS) and ankane/torchvision-ruby
#    lib/torchvision/datasets/kmnist.rb, which agree;
#  [pin] the PINNED_SHA256 tables of two public download scripts found by
#    code search (repository not named by the search index; their sha256 of
#    the [local] files and of k49_classmap.csv equal ours);
#  [csv] k49_classmap.csv rebuilt from data.DATASETS['k49'].fallback_chars
#    in kmnist_classmap.csv's format: 697 bytes with the pinned md5.
# No sha256 of k49-test-imgs.npz or k49-test-labels.npz is published anywhere
# we could find: those two are checked by size and md5 only.
PINNED: dict[str, tuple[int, str, str | None]] = {
    'kmnist-train-imgs.npz': (  # [pin]
        18_384_171, 'a183fbc01ed9a345513b145673d3d0bb',
        '11d69e17c8fd294905864aef177fd10c2185e5a3655f4da03d72ea5a64c17a72'),
    'kmnist-train-labels.npz': (  # [local]
        29_700, 'b0e1d240e8afec72b50437fc3bc5908a',
        'a325c877035602cb9b9ba54f4194a2a1b5f718026a463db5b5e0cdc124c03720'),
    'kmnist-test-imgs.npz': (  # [local]
        3_079_479, 'dace6de62ca8b90843cc45366337d02e',
        '692d824896bec8f3c357ebf7a0fe904ed67ac632ce953d0b58f7fbef7bb27d87'),
    'kmnist-test-labels.npz': (  # [local]
        5_304, '3ae489a79983d0fe386152684e3b5412',
        '660f13a4705431ea2a6391c41ecbe384cd0d932c595a101ec4f3b8989e785046'),
    'kmnist_classmap.csv': (  # [local]
        151, '899202f6e8dc29a321ac210a03d0f2f1',
        '88ba4be4bd52d986ae100b425d5c28437c81829c87800c5832a2253edc758374'),
    'train-images-idx3-ubyte.gz': (  # [tv]
        18_165_135, 'bdb82020997e1d708af4cf47b453dcf7',
        '51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4'),
    'train-labels-idx1-ubyte.gz': (  # [tv]
        29_497, 'e144d726b3acfaa3e44228e80efcd344',
        'e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17'),
    't10k-images-idx3-ubyte.gz': (  # [tv]
        3_041_136, '5c965bf0a639b31b8f53240b1b52f4d7',
        'edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5'),
    't10k-labels-idx1-ubyte.gz': (  # [tv]
        5_120, '7320c461ea6c1c855c0b718fb2a4b134',
        '20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c'),
    'k49-train-imgs.npz': (  # [pin]
        66_117_696, '7ac088b20481cf51dcd01ceaab89d821',
        '1c42adc463ed8efe598cf002f6ecafbca6d8c38f0551f7a35e0b23755fca1c8d'),
    'k49-train-labels.npz': (  # [pin]
        164_485, '44a8e1b893f81e63ff38d73cad420f7a',
        'fbfef4750ce9aa70b6072f0bca7daa9e80e2d79b379d5ae923265a63396260e4'),
    'k49-test-imgs.npz': (10_971_201, 'd352e201d846ce6b94f42c990966f374', None),
    'k49-test-labels.npz': (27_450, '4da6f7a62e67a832d5eb1bd85c5ee448', None),
    'k49_classmap.csv': (  # [csv], [pin]
        697, 'f7d0d0391f68bdf0fe4cf160ceb85753',
        '95f5a2cfbfba1721f566059cf77c22808898b63044a5f9a08de9d8a2950eed84'),
}

# MNIST and Fashion-MNIST share their four file names (and with KMNIST's idx
# release), so they are pinned per dataset: (size, md5, sha256) of the
# official .gz, then (size, sha256) of its uncompressed bytes. .gz sizes and
# sha256s: TFDS url_checksums (mnist.txt, fashion_mnist.txt), equal to
# torchvision's prototype `_CHECKSUMS`; .gz md5s: torchvision's `resources`;
# uncompressed: computed from the official bytes (their md5s are the ones
# that circulate for the releases). A recompressed copy passes by the latter.
PINNED_IDX: dict[str, dict[str, tuple[int, str, str, int, str]]] = {
    'mnist': {
        'train-images-idx3-ubyte.gz': (
            9_912_422, 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
            '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
            47_040_016,
            'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db'),
        'train-labels-idx1-ubyte.gz': (
            28_881, 'd53e105ee54ea40749a09fcbcd1e9432',
            '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c',
            60_008,
            '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5'),
        't10k-images-idx3-ubyte.gz': (
            1_648_877, '9fb629c4189551a2d022fa330f9573f3',
            '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
            7_840_016,
            '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7'),
        't10k-labels-idx1-ubyte.gz': (
            4_542, 'ec29112dd5afa0611ce80d1b7f02629c',
            'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6',
            10_008,
            'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2'),
    },
    'fashion_mnist': {
        'train-images-idx3-ubyte.gz': (
            26_421_880, '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
            '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
            47_040_016,
            'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888'),
        'train-labels-idx1-ubyte.gz': (
            29_515, '25c81989df183df01b3e8a0aad5dffbe',
            'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
            60_008,
            'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9'),
        't10k-images-idx3-ubyte.gz': (
            4_422_102, 'bef4ecab320f06d8554ea6380940ec79',
            '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
            7_840_016,
            '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b'),
        't10k-labels-idx1-ubyte.gz': (
            5_148, 'bb300cfdad3c16e7a12a480ee83cd310',
            '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
            10_008,
            '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34'),
    },
}

@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """A downloadable file at its official `url`; `None` where not known."""
  name: str
  url: str
  size: int | None = None
  md5: str | None = None
  sha256: str | None = None
  # An idx .gz whose uncompressed bytes are pinned: a recompressed copy with
  # these bytes is the same release.
  raw_size: int | None = None
  raw_sha256: str | None = None


def pinned(base: str, name: str, dataset: str = '') -> RemoteFile:
  """The official file `base + name` with its pinned size and checksums
  (from `PINNED_IDX[dataset]` where the dataset has its own table)."""
  if dataset in PINNED_IDX:
    return RemoteFile(name, base + name, *PINNED_IDX[dataset][name])
  return RemoteFile(name, base + name, *PINNED[name])


@dataclasses.dataclass(frozen=True)
class SplitFiles:
  """The images and labels files of one split."""
  images: RemoteFile
  labels: RemoteFile


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Everything known about one dataset.

  Attributes:
    name: registry key, also the default cache sub-folder.
    num_classes: labels lie in [0, num_classes).
    metric: official metric, 'accuracy' or 'balanced_accuracy' (mean of the
      per-class recalls, so all classes weigh the same).
    files: per split ('train', 'test') the files that get downloaded: the
      numpy-format (.npz, key 'arr_0') images and labels, or idx .gz files.
    classmap: CSV with columns index,codepoint,char; None: `class_names`.
    num_examples: official example counts per split (informational).
    idx_files: per split the MNIST idx-format (.gz) alternatives, read when
      the .npz is absent; the un-gzipped name (without '.gz') works too.
    outdated_md5s: md5 -> description of known outdated releases.
    fallback_chars: class characters in index order, used by `class_map`
      when the CSV is not present; '' if none are built in.
    class_names: the class labels where there is no class-map CSV.
    title: the dataset's name in tables and plots.
    mean, std: the pixel mean and std (of pixel / 255) that the published
      recipes normalise by on this dataset (`configlib.use_dataset_stats`).
    proxy_splits: the `:proxy` variant's (train, eval) splits: the offline
      proxy, for machines without the training images.
  """
  name: str
  num_classes: int
  metric: Literal['accuracy', 'balanced_accuracy']
  files: Mapping[str, SplitFiles]
  classmap: RemoteFile | None
  num_examples: Mapping[str, int]
  idx_files: Mapping[str, SplitFiles] | None = None
  outdated_md5s: Mapping[str, str] = dataclasses.field(default_factory=dict)
  fallback_chars: str = ''
  class_names: tuple[str, ...] = ()
  title: str = ''
  mean: float = 0.0
  std: float = 1.0
  proxy_splits: tuple[str, str] = ('test[:8000]', 'test[8000:]')


_KMNIST = 'http://codh.rois.ac.jp/kmnist/dataset/kmnist/'
_K49 = 'http://codh.rois.ac.jp/kmnist/dataset/k49/'
_MNIST = 'https://ossci-datasets.s3.amazonaws.com/mnist/'
_FASHION = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'


def _npz_release(base: str, prefix: str) -> dict[str, SplitFiles]:
  """The four .npz files of a rois-codh release ('kmnist', 'k49')."""
  def f(split, kind):
    return pinned(base, f'{prefix}-{split}-{kind}.npz')
  return {split: SplitFiles(f(split, 'imgs'), f(split, 'labels'))
          for split in ('train', 'test')}


def _idx_release(base: str, dataset: str) -> dict[str, SplitFiles]:
  """The four idx .gz files of an MNIST-format release."""
  def f(name):
    return pinned(base, name, dataset)
  return {'train': SplitFiles(f('train-images-idx3-ubyte.gz'),
                              f('train-labels-idx1-ubyte.gz')),
          'test': SplitFiles(f('t10k-images-idx3-ubyte.gz'),
                             f('t10k-labels-idx1-ubyte.gz'))}

# The recipes' normalisation constants: hysts/pytorch_image_classification
# dataloader.py (KMNIST 0.1904/0.3475, MNIST 0.1307/0.3081, FashionMNIST
# 0.2860/0.3530: the training sets' pixel mean and std, rounded); janzd's
# K49 runs normalise K49 by KMNIST's.
_KMNIST_STATS = dict(mean=0.1904, std=0.3475)

DATASETS: dict[str, DatasetInfo] = {
    'kmnist': DatasetInfo(
        name='kmnist',
        num_classes=10,
        metric='accuracy',
        files=_npz_release(_KMNIST, 'kmnist'),
        classmap=pinned(_KMNIST, 'kmnist_classmap.csv'),
        num_examples={'train': 60_000, 'test': 10_000},
        idx_files={
            'train': SplitFiles(
                pinned(_KMNIST, 'train-images-idx3-ubyte.gz'),
                pinned(_KMNIST, 'train-labels-idx1-ubyte.gz')),
            'test': SplitFiles(
                pinned(_KMNIST, 't10k-images-idx3-ubyte.gz'),
                pinned(_KMNIST, 't10k-labels-idx1-ubyte.gz')),
        },
        outdated_md5s={
            'c8fe4d39f842711ac6cc8c1b4be5ee21':
                'the outdated pre-2019-02-05 release of kmnist-test-imgs.npz',
        },
        fallback_chars='おきすつなはまやれを',
        title='KMNIST',
        **_KMNIST_STATS,
    ),
    'k49': DatasetInfo(
        name='k49',
        num_classes=49,
        metric='balanced_accuracy',
        files=_npz_release(_K49, 'k49'),
        classmap=pinned(_K49, 'k49_classmap.csv'),
        num_examples={'train': 232_365, 'test': 38_547},
        # The rows of k49_classmap.csv: written in kmnist_classmap.csv's
        # format they give its pinned size, md5 and sha256 exactly.
        fallback_chars=('あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほ'
                        'まみむめもやゆよらりるれろわゐゑをんゝ'),
        title='K49',
        **_KMNIST_STATS,
    ),
    'mnist': DatasetInfo(
        name='mnist',
        num_classes=10,
        metric='accuracy',
        files=_idx_release(_MNIST, 'mnist'),
        classmap=None,
        num_examples={'train': 60_000, 'test': 10_000},
        class_names=tuple('0123456789'),
        title='MNIST',
        mean=0.1307, std=0.3081,
    ),
    'fashion_mnist': DatasetInfo(
        name='fashion_mnist',
        num_classes=10,
        metric='accuracy',
        files=_idx_release(_FASHION, 'fashion_mnist'),
        classmap=None,
        num_examples={'train': 60_000, 'test': 10_000},
        # zalandoresearch/fashion-mnist README, "Labels".
        class_names=('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                     'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
        title='Fashion-MNIST',
        mean=0.2860, std=0.3530,
    ),
}


def is_proxy(config) -> bool:
  """Whether `config` (a run's config) trains on its dataset's offline
  proxy split (`:proxy`)."""
  info = DATASETS.get(config.dataset)
  return info is not None and config.train_split == info.proxy_splits[0]


def label(name: 'str | DatasetInfo') -> str:
  """The dataset's name in tables and plots, e.g. 'Fashion-MNIST'."""
  info = get_info(name)
  return info.title or info.name


def get_info(name: 'str | DatasetInfo') -> DatasetInfo:
  """Returns the registry entry for `name` (a `DatasetInfo` passes through)."""
  if isinstance(name, DatasetInfo):
    return name
  if isinstance(name, str) and name in DATASETS:
    return DATASETS[name]
  raise UserError(
      f'unknown dataset {name!r}; expected one of: {", ".join(DATASETS)}')
