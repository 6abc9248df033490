"""Tiny Fashion-MNIST look-alikes written as IDX files, so tests build the real builder fast."""
import gzip
import os

import numpy as np


def write_idx(path, array: np.ndarray) -> None:
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_like(folder, n_train=96, n_test=37, seed=0):
  """Images whose class is easy to learn: a bright square whose position encodes the label."""
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  if len(os.listdir(folder)) == 4:  # already written (e.g. by the parent of a subprocess test)
    return folder
  for split, n in (('train', n_train), ('t10k', n_test)):
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 40, (n, 28, 28))
    for i, y in enumerate(labels):
      r, c = divmod(int(y), 5)
      images[i, 4 + 10 * r:12 + 10 * r, 2 + 5 * c:6 + 5 * c] = 255
    write_idx(os.path.join(folder, f'{split}-images-idx3-ubyte.gz'), images)
    write_idx(os.path.join(folder, f'{split}-labels-idx1-ubyte.gz'), labels)
  return folder


def tiny_config(tmp_path, **overrides):
  """The default Fashion-MNIST config shrunk to a 2-block width-32 ViT on fake data."""
  import importlib.util
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', 'vit', 'fashion_mnist.py')
  spec = importlib.util.spec_from_file_location('cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  with config.unlocked():
    config.model.update(width=32, depth=2, num_heads=4, mlp_dim=64)
    config.data.source_dir = make_fashion_like(str(tmp_path / 'idx'))
    config.data.data_dir = str(tmp_path / 'tfds')
    config.batch_size = 16
    config.eval_batch_size = 16
    config.total_steps = 4
    config.warmup_steps = 1
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    set_fields(config, overrides)
  return config


def set_fields(config, fields: dict):
  """Set dotted fields of a ConfigDict: {'model.name': 'tome', 'init_from.path': ...}."""
  for key, value in fields.items():
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value


def make_imagenet_manual(folder, classes=('n01440764', 'n01443537', 'n01484850'), per_class=4,
                         n_val=6, seed=0, jpegs=None):
  """A tiny manual directory in the layout TFDS's imagenet2012 builder reads: a train tar of
  per-class tars of JPEGs ('<wnid>_<i>.JPEG') and a validation tar of 'ILSVRC2012_val_*.JPEG'
  (whose labels the builder takes, in sorted order, from the official validation list).
  `jpegs`: JPEG bytes to use instead of generated ones, dealt round-robin to the classes (the
  first n_val also make the validation tar)."""
  import io
  import tarfile
  from PIL import Image

  rng = np.random.default_rng(seed)

  def jpeg(h, w):
    image = np.clip(np.mgrid[0:h, 0:w].sum(0)[..., None] * [1, 2, 3] % 256
                    + rng.integers(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(image).save(out, 'JPEG', quality=90)
    return out.getvalue()

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  if jpegs is None:   # ImageNet-like 3:4 shapes
    train = [[jpeg(75 + 9 * i, 100) for i in range(per_class)] for _ in classes]
    val = [jpeg(100, 75) for _ in range(n_val)]
  else:
    train = [jpegs[k::len(classes)] for k in range(len(classes))]
    val = jpegs[:n_val]
  os.makedirs(folder, exist_ok=True)
  with tarfile.open(os.path.join(folder, 'ILSVRC2012_img_train.tar'), 'w') as outer:
    for wnid, images in zip(classes, train):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as tar:
        for i, data in enumerate(images):
          add(tar, f'{wnid}_{i + 1}.JPEG', data)
      add(outer, f'{wnid}.tar', inner.getvalue())
  with tarfile.open(os.path.join(folder, 'ILSVRC2012_img_val.tar'), 'w') as tar:
    for i, data in enumerate(val):
      add(tar, f'ILSVRC2012_val_{i + 1:08d}.JPEG', data)
  return folder
