"""Fashion-MNIST as a TFDS builder that needs no download.

It reads the original IDX files that Debian's package `dataset-fashion-mnist` installs in
`/usr/share/datasets/fashion-mnist` (`apt-get install dataset-fashion-mnist`), and writes
array_record files that `tfds.data_source` reads without TensorFlow. Images are stored as raw
uint8 tensors [28, 28, 1], labels as a 10-way ClassLabel, 60,000 train / 10,000 test.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import logging
import os
import time

import numpy as np
import tensorflow_datasets as tfds

DEFAULT_SOURCE_DIR = '/usr/share/datasets/fashion-mnist'
DEFAULT_DATA_DIR = os.path.join(os.path.expanduser('~'), 'tensorflow_datasets')
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
               'Sneaker', 'Bag', 'Ankle boot')
FILES = {'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
         'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')}
MEAN, STD = (0.2860,), (0.3530,)  # of the training images scaled to [0, 1]


def read_idx(path: str) -> np.ndarray:
  """Array from an IDX file (gzipped or not): magic 0x0000 0x08 ndim, big-endian dims."""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f'{path}: not an unsigned-byte IDX file')
  ndim = data[3]
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
  expected = 4 + 4 * ndim + int(np.prod(dims))
  if len(data) != expected:
    raise ValueError(f'{path}: {len(data)} bytes, the header promises {expected}')
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def check_source_dir(source_dir: str) -> None:
  missing = [f for pair in FILES.values() for f in pair
             if not os.path.exists(os.path.join(source_dir, f))]
  if missing:
    raise FileNotFoundError(
        f'Fashion-MNIST files not found in {source_dir} (missing {", ".join(missing)}). '
        'Install them with `apt-get install dataset-fashion-mnist`, or point '
        'data.source_dir at a folder holding the original IDX .gz files.')


def load(split: str = 'test', source_dir: str = DEFAULT_SOURCE_DIR) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28, 1], labels int [N]) of a split, straight from the IDX files:
  stored pixels as `Predictor.predict` and exported models take them, offline."""
  if split not in FILES:
    raise ValueError(f'split={split!r}: Fashion-MNIST has {", ".join(FILES)}')
  check_source_dir(source_dir)
  images_file, labels_file = FILES[split]
  images = read_idx(os.path.join(source_dir, images_file))
  return images[..., None], read_idx(os.path.join(source_dir, labels_file)).astype(np.int64)


@contextlib.contextmanager
def quiet_tfds():
  """Silence TFDS's warnings, banner and progress bars; on an unexpected failure, replay what
  it printed (ValueError and FileNotFoundError carry their own one-line message)."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  out = io.StringIO()
  absl_logger.setLevel(logging.ERROR)
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
      yield
  except (ValueError, FileNotFoundError):
    raise
  except BaseException:
    print(out.getvalue(), end='')
    raise
  finally:
    absl_logger.setLevel(level)


def build_offline(builder) -> None:
  """Build a local dataset once, with one line before and one after instead of TFDS's
  'Downloading and preparing dataset Unknown size' banner: nothing is downloaded."""
  source = getattr(builder, 'source_dir', None)
  if source:
    check_source_dir(source)
  print(f'[{time.strftime("%H:%M:%S")}] building {builder.name} once, offline'
        + (f' from the files in {source}' if source else '') + f', into {builder.data_dir} '
        '(nothing is downloaded; later runs reuse it)', flush=True)
  start = time.time()
  with quiet_tfds():
    tfds.disable_progress_bar()
    try:
      builder.download_and_prepare()
    finally:
      tfds.enable_progress_bar()
  print(f'[{time.strftime("%H:%M:%S")}] built {builder.name} in {time.time() - start:.0f}s',
        flush=True)


def prepared(builder_class, **kwargs):
  """A local builder (this one or one made from its files), built offline on first use."""
  def make():
    with quiet_tfds():  # before a first build TFDS warns about a missing dataset_info.json
      made = builder_class(file_format='array_record', **kwargs)
      return made, made.is_prepared()
  builder, ready = make()
  if ready:
    return builder
  # One build at a time: a second first run waits for the first one's build and reuses it.
  root = str(builder.data_dir_root)  # (not beside the version folders: TFDS lists those)
  os.makedirs(root, exist_ok=True)
  name = os.path.relpath(builder.data_dir, root).replace(os.sep, '-')
  with open(os.path.join(root, f'.{name}.build.lock'), 'w') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f'[{time.strftime("%H:%M:%S")}] waiting for another process that is building '
            f'{builder.name} into {builder.data_dir}', flush=True)
      fcntl.flock(lock, fcntl.LOCK_EX)
    builder, ready = make()
    if not ready:
      build_offline(builder)
  return builder


class FashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Fashion-MNIST from local IDX files (see the module docstring)."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Built offline from the IDX files of dataset-fashion-mnist.'}

  def __init__(self, *, source_dir: str = DEFAULT_SOURCE_DIR, **kwargs):
    self.source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST (Xiao et al. 2017), 28x28 grey images of 10 clothing kinds.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/zalandoresearch/fashion-mnist')

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    check_source_dir(self.source_dir)
    return {split: self._generate_examples(*files) for split, files in FILES.items()}

  def _generate_examples(self, images_file: str, labels_file: str):
    images = read_idx(os.path.join(self.source_dir, images_file))
    labels = read_idx(os.path.join(self.source_dir, labels_file))
    if len(images) != len(labels):
      raise ValueError(f'{images_file} has {len(images)} images but {labels_file} has '
                       f'{len(labels)} labels')
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image[..., None], 'label': int(label)}
