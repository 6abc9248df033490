"""Input pipeline: TFDS array_record data sources read with grain, no TensorFlow.

Train: global shuffle (reshuffled each epoch; with data.repeated_aug = R each example of an
epoch's first 1/R is read R times) -> global batches -> each process reads and augments its
slice, as an indexable grain `MapDataset`, so batch `i` is a pure function of (seed, i): resuming
at step s reads exactly the batches an uninterrupted run would have read. Per example: crop,
flip, RandAugment, random erasing (tokensparse.data.augment) from a seed of its own; per
process slice of the batch: Mixup/CutMix (pairs stay inside a process, as with timm under DDP),
which turns `label` into soft targets [n, num_classes]. JPEG datasets (imagenet2012) come as
bytes and are decoded here straight into PIL; `data.threads` threads decode and augment.
Eval: per-process shard read in order, the last batch padded; `mask` marks real examples so
each example counts exactly once.
Batches are dicts of numpy arrays shaped [local_devices, per_device_batch, ...].
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import os
import queue
import sys
import threading
from typing import Any, Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tokensparse.data import augment as augment_lib
from tokensparse.data import fashion_mnist, fashion_mnist_actions, moving_fashion_mnist

LOCAL_BUILDERS = {'fashion_mnist': fashion_mnist.FashionMnist,
                  'moving_fashion_mnist': moving_fashion_mnist.MovingFashionMnist,
                  'fashion_mnist_actions': fashion_mnist_actions.FashionMnistActions}
DEFAULT_DATA_DIR = fashion_mnist.DEFAULT_DATA_DIR


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]   # as stored; the pipeline resizes to model.image_size
  num_train: int
  num_eval: int


def get_builder(data_config) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder for `data.name`; local builders are built on first use."""
  data_dir = data_config.get('data_dir') or DEFAULT_DATA_DIR
  name = data_config.name
  local, _, builder_config = name.partition('/')
  if local in LOCAL_BUILDERS:
    kwargs = {}
    if data_config.get('source_dir'):
      kwargs['source_dir'] = data_config.source_dir
    if builder_config:
      known = [c.name for c in LOCAL_BUILDERS[local].BUILDER_CONFIGS]
      if builder_config not in known:
        raise ValueError(f'data.name={name!r}: {local} has the configs {", ".join(known)}')
      kwargs['config'] = builder_config
    return fashion_mnist.prepared(LOCAL_BUILDERS[local], data_dir=data_dir, **kwargs)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several kinds for unknown names
    raise ValueError(f'data.name={name!r}: not a local dataset ({", ".join(LOCAL_BUILDERS)}) '
                     f'and tfds cannot find it: {e}') from e
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'data.name={name!r}: no prepared copy under data.data_dir={data_dir!r}. Prepare it '
        f'once with `python -m tokensparse.data.build {name} --data_dir=...` (array_record; '
        'manual downloads such as imagenet2012 need --manual_dir), then pass data.data_dir.')
  return builder


def open_split(builder, split: str, jpeg_bytes: bool = False):
  """A random-access data source for `split` (or a TFDS slice of it, e.g. 'test[:1000]');
  requires the array_record file format. `jpeg_bytes`: JPEG images come undecoded, for the
  pipeline to decode straight into PIL (see `Preprocess.pixels`)."""
  if split.split('[')[0] not in builder.info.splits:
    raise ValueError(f'split {split!r} not in {builder.name}: has '
                     f'{", ".join(builder.info.splits)}')
  decoders = None
  if jpeg_bytes and stored_as_jpeg(builder):
    decoders = {keys(builder)[0]: tfds.decode.SkipDecoding()}
  try:
    return builder.as_data_source(split=split, decoders=decoders)
  except NotImplementedError as e:
    raise ValueError(f'{builder.name} is stored as {builder.info.file_format}; tokensparse reads '
                     'array_record: rebuild with --file_format=array_record') from e


def dataset_meta(builder, data_config) -> DatasetMeta:
  image_key, label_key = keys(builder)
  feature = builder.info.features[image_key]
  label = builder.info.features[label_key]
  return DatasetMeta(
      name=builder.name, num_classes=label.num_classes, image_shape=tuple(feature.shape),
      num_train=builder.info.splits[data_config.train_split].num_examples,
      num_eval=builder.info.splits[data_config.eval_split].num_examples)


def keys(builder) -> tuple[str, str]:
  return builder.info.supervised_keys or ('image', 'label')


def stored_as_jpeg(builder) -> bool:
  feature = builder.info.features[keys(builder)[0]]
  return isinstance(feature, tfds.features.Image) and \
      getattr(feature, 'encoding_format', None) == 'jpeg'


# ----------------------------------------------------------------------------- preprocessing
def resize(image: np.ndarray, size: int, interpolation: str = 'bilinear') -> np.ndarray:
  """[h, w, c] uint8 -> [size, size, c] uint8, bilinear (or bicubic)."""
  if image.shape[:2] == (size, size):
    return image
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  out = np.asarray(pil.resize((size, size), augment_lib.INTERPOLATIONS[interpolation]))
  return out[..., None] if out.ndim == 2 else out


def random_resized_crop(image, rng: np.random.Generator, size: int, scale=(0.08, 1.0),
                        interpolation: str = 'bilinear', as_pil: bool = False):
  """Inception-style crop: random area and aspect ratio, resized to size x size (a PIL image
  if `as_pil`, the same pixels without the round trip through numpy). `image`: [h, w, c] uint8
  or a PIL image (then `as_pil`)."""
  if isinstance(image, Image.Image) and not as_pil:
    image = from_pil(image)
  h, w = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch, cw = int(round(np.sqrt(area / ratio))), int(round(np.sqrt(area * ratio)))
    if 0 < ch <= h and 0 < cw <= w:
      y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      if as_pil:
        return to_pil(image).crop((x, y, x + cw, y + ch)).resize(
            (size, size), augment_lib.INTERPOLATIONS[interpolation])
      return resize(image[y:y + ch, x:x + cw], size, interpolation)
  if isinstance(image, Image.Image):
    image = from_pil(image)
  out = center_crop(image, size, interpolation=interpolation)
  return to_pil(out) if as_pil else out


def to_pil(image) -> Image.Image:
  if isinstance(image, Image.Image):
    return image
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(image: Image.Image) -> np.ndarray:
  out = np.asarray(image)
  return out[..., None] if out.ndim == 2 else out


def center_crop(image, size: int, crop_fraction: float = 1.0, interpolation: str = 'bilinear'):
  """Central square of `crop_fraction` of the shorter side, resized to size x size."""
  h, w = image.shape[:2]
  side = int(min(h, w) * crop_fraction)
  y, x = (h - side) // 2, (w - side) // 2
  return resize(image[y:y + side, x:x + side], size, interpolation)


def pad_crop(image, rng: np.random.Generator, size: int, pad: int):
  """Zero-pad by `pad` pixels and take a random size x size window (CIFAR/MNIST style)."""
  image = resize(image, size)
  y, x = rng.integers(-pad, pad + 1, size=2)
  out = np.zeros_like(image)
  out[max(0, -y):size - max(0, y), max(0, -x):size - max(0, x)] = \
      image[max(0, y):size - max(0, -y), max(0, x):size - max(0, -x)]
  return out


class Preprocess:
  """Per-example transforms from the data config; picklable for grain workers."""

  def __init__(self, data_config, image_size: int, image_key: str, label_key: str):
    self.augment = data_config.augment
    self.pad = data_config.get('crop_padding', 4)
    self.flip = data_config.get('flip', True)
    self.eval_crop = data_config.get('eval_crop_fraction', 1.0)
    self.to_rgb = data_config.get('to_rgb', False)
    self.canvas = data_config.get('canvas_size', 0)
    self.interpolation = data_config.get('interpolation', 'bilinear')
    self.size = image_size
    self.image_key, self.label_key = image_key, label_key
    self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)
    if self.augment not in ('crop_flip', 'inception_crop', 'none'):
      raise ValueError(f'data.augment={self.augment!r}: expected crop_flip, inception_crop or none')
    augment_lib.check_fields(data_config)
    policy = data_config.get('rand_augment', '')
    self.rand_augment = policy and augment_lib.RandAugment.from_policy(
        policy, mean=(self.mean * 3)[:3], interpolation=self.interpolation)
    self.erase = data_config.get('random_erase', 0.0)

  def pixels(self, value, as_pil: bool = False):
    """An example's image: decoded uint8 [h, w, c] from TFDS, or JPEG bytes (train and eval
    sources skip TFDS's decoding of JPEG datasets) decoded here with PIL; left a PIL image if
    `as_pil`, which saves the copies in and out of numpy. Grey JPEGs become RGB as TFDS does."""
    if not isinstance(value, bytes):
      return np.asarray(value)
    with Image.open(io.BytesIO(value)) as image:
      image = image.convert('RGB') if image.mode != 'RGB' else image
      image.load()
    return image if as_pil else np.asarray(image)

  def train(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    pil_path = self.augment == 'inception_crop' and not self.canvas
    image = self.pixels(example[self.image_key], as_pil=pil_path)
    if isinstance(image, np.ndarray) and image.ndim == 4:
      return self.clip(image, example, flip=self.flip and rng.random() < 0.5)
    if self.canvas:
      image = place_on_canvas(image, self.canvas, rng)
    if self.augment == 'inception_crop':  # in PIL from crop to RandAugment: one copy in, one out
      pil = random_resized_crop(image, rng, self.size, interpolation=self.interpolation,
                                as_pil=True)
      if self.flip and rng.random() < 0.5:
        pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
      image = from_pil(self.rand_augment.apply(pil, rng) if self.rand_augment else pil)
    else:
      if self.augment == 'crop_flip':
        image = pad_crop(image, rng, self.size, self.pad)
      else:
        image = resize(image, self.size, self.interpolation)
      if self.flip and rng.random() < 0.5:
        image = image[:, ::-1]
      if self.rand_augment:
        image = self.rand_augment(np.ascontiguousarray(image), rng)
    out = self.finish(image, example)
    if self.erase:  # timm erases the normalised tensor: the pipeline hands on float32 from here
      out['image'] = augment_lib.random_erase(normalize(out['image'], self.mean, self.std), rng,
                                              self.erase)
    return out

  def eval(self, example: dict[str, Any], index: int = 0) -> dict[str, np.ndarray]:
    image = self.pixels(example[self.image_key])
    if image.ndim == 4:
      return self.clip(image, example, flip=False)
    if self.canvas:  # a fixed position per eval example
      image = place_on_canvas(image, self.canvas, np.random.default_rng(index))
    image = center_crop(image, self.size, self.eval_crop, self.interpolation)
    return self.finish(image, example)

  def clip(self, clip: np.ndarray, example, flip: bool) -> dict[str, np.ndarray]:
    """Video clips [T, h, w, c]: every frame resized alike, the whole clip flipped or not;
    crops and canvases are image-only (a crop per frame would fake motion)."""
    if self.augment != 'none' or self.canvas:
      raise ValueError(f'{self.image_key!r} holds video clips: set data.augment="none" and '
                       f'data.canvas_size=0 (got {self.augment!r}, {self.canvas})')
    clip = np.stack([resize(frame, self.size, self.interpolation) for frame in clip])
    return self.finish(clip[:, :, ::-1] if flip else clip, example)

  def finish(self, image, example):
    if self.to_rgb and image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    return {'image': np.ascontiguousarray(image, np.uint8),
            'label': np.int32(example[self.label_key])}


def place_on_canvas(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Put image [h, w, c] at a random position on a zero canvas [size, size, c]
  (cluttered-MNIST style: most tokens are background, so dropping tokens can pay)."""
  h, w, c = image.shape
  if size < max(h, w):
    raise ValueError(f'data.canvas_size={size} is smaller than the {h}x{w} images')
  y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
  out = np.zeros((size, size, c), image.dtype)
  out[y:y + h, x:x + w] = image
  return out


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 [..., C] -> float32 ((x / 255) - mean) / std, looked up per channel in a 256-entry
  table computed with exactly those float32 steps (so bit-identical to them, 4x faster than
  numpy broadcasting over a length-3 last axis)."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    return (images.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / \
        np.asarray(std, np.float32)
  table = _normalize_table(tuple(mean), tuple(std))
  if len(mean) == 1 and images.shape[-1] != 1:
    table = np.repeat(table, images.shape[-1], axis=0)
  out = np.empty(images.shape, np.float32)
  for c in range(images.shape[-1]):
    np.take(table[c], images[..., c], out=out[..., c])
  return out


@functools.lru_cache(maxsize=16)
def _normalize_table(mean: tuple, std: tuple) -> np.ndarray:
  """[C, 256] float32: (v / 255 - mean[c]) / std[c] for every uint8 level v."""
  levels = np.arange(256, dtype=np.float32)[:, None]
  return np.ascontiguousarray(((levels / 255.0 - np.asarray(mean, np.float32))
                               / np.asarray(std, np.float32)).T)


# ----------------------------------------------------------------------------- pipelines
class Data:
  """Train and eval batches for one process. See the module docstring."""

  def __init__(self, config, *, local_devices: int, process_index: int = 0,
               process_count: int = 1):
    data_config = config.data
    self.builder = get_builder(data_config)
    self.meta = dataset_meta(self.builder, data_config)
    self.local_devices = local_devices
    self.process_index, self.process_count = process_index, process_count
    self.mean, self.std = tuple(data_config.mean), tuple(data_config.std)
    image_key, label_key = keys(self.builder)
    self.preprocess = Preprocess(data_config, config.model.image_size, image_key, label_key)
    mixup, cutmix = data_config.get('mixup', 0.0), data_config.get('cutmix', 0.0)
    self.mix = (mixup or cutmix) and augment_lib.Mix(
        mixup_alpha=mixup, cutmix_alpha=cutmix, switch_prob=data_config.get('mix_switch_prob', 0.5),
        prob=data_config.get('mix_prob', 1.0), smoothing=config.get('label_smoothing', 0.0))
    if self.mix and (config.batch_size // process_count) % 2:
      raise ValueError(f'batch_size={config.batch_size}: Mixup/CutMix pairs examples inside '
                       'each process, so the batch per process must be even')

    if config.batch_size % (local_devices * process_count):
      raise ValueError(f'batch_size={config.batch_size} is not divisible by the '
                       f'{local_devices * process_count} devices')
    self.process_batch = config.batch_size // process_count
    self.eval_process_batch = config.get('eval_batch_size', config.batch_size) // process_count
    if self.eval_process_batch % local_devices:
      raise ValueError(f'eval_batch_size={config.eval_batch_size} is not divisible by the '
                       f'{local_devices * process_count} devices')

    # grain orders and batches example indices of the whole split into global batches; each
    # process reads its slice of every global batch in one bulk read. Batch i is the same set
    # of examples, augmented alike, for any number of processes (a per-example seed), so a run
    # on 2 hosts x 2 devices sees exactly what 1 host x 4 devices sees.
    self.train_source = open_split(self.builder, data_config.train_split, jpeg_bytes=True)
    self.train_examples = len(self.train_source)
    order = grain.MapDataset.range(self.train_examples).shuffle(seed=config.seed).repeat(None)
    repeats = data_config.get('repeated_aug', 1)
    if repeats > 1:  # timm's RASampler: each epoch reads its first N/R examples R times each
      order = grain.MapDataset.range(sys.maxsize).map(
          RepeatedOrder(order, self.train_examples, repeats))
    self.train_indices = order.batch(config.batch_size, drop_remainder=True)  # [step] -> indices
    self.train = self.train_indices.random_map(self._read_train_batch, seed=config.seed + 1)
    self.eval_source = open_split(self.builder, data_config.eval_split, jpeg_bytes=True)
    # Decoding and augmenting run in PIL and numpy, which release the GIL: threads scale.
    self.threads = data_config.get('threads', 1) or os.cpu_count() or 1
    self._pool = None

  def map(self, fn, *iterables) -> list:
    """[fn(*args) ...] in order, over `data.threads` threads (each example has its own seed, so
    the result does not depend on the thread count)."""
    if self.threads == 1:
      return [fn(*args) for args in zip(*iterables)]
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(self.threads,
                                                         thread_name_prefix='tokensparse-data')
    return list(self._pool.map(fn, *iterables))

  def _read_train_batch(self, indices: np.ndarray, rng: np.random.Generator):
    """Global batch of example indices -> this process's slice, augmented, stacked."""
    seeds = rng.integers(0, 2 ** 63 - 1, size=len(indices))   # one per example of the batch
    lo = self.process_index * self.process_batch
    mine = slice(lo, lo + self.process_batch)
    examples = read_many(self.train_source, [int(i) for i in indices[mine]])
    rows = self.map(lambda ex, seed: self.preprocess.train(ex, np.random.default_rng(seed)),
                    examples, seeds[mine])
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    if self.mix:  # one lambda (and box) per global batch: `rng` is the same on every process
      images = batch['image']
      if images.dtype == np.uint8:
        images = normalize(images, self.mean, self.std)
      batch['image'], batch['label'], _ = self.mix(images, batch['label'], self.meta.num_classes,
                                                   rng)
    return batch

  def shard(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalise images (unless augmentation already did) and reshape [n, ...] ->
    [local_devices, n / local_devices, ...]."""
    batch = dict(batch)
    if batch['image'].dtype == np.uint8:
      batch['image'] = normalize(batch['image'], self.mean, self.std)
    return {k: v.reshape(self.local_devices, -1, *v.shape[1:]) for k, v in batch.items()}

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """The training batch of `step` (deterministic)."""
    return self.shard(self.train[step])

  def train_iter(self, start_step: int, prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
    """Batches for steps start_step, start_step + 1, ..., produced by a background thread."""
    return prefetch_iter((self.train_batch(s) for s in _count(start_step)), prefetch)

  def eval_steps(self) -> int:
    """Eval batches per process: the same count on every process so collectives line up."""
    per_process = -(-self.meta.num_eval // self.process_count)
    return -(-per_process // self.eval_process_batch)

  def eval_iter(self) -> Iterator[dict[str, np.ndarray]]:
    """Every eval example of this process once, in order; padding rows have mask 0."""
    indices = np.arange(self.process_index, self.meta.num_eval, self.process_count)
    b = self.eval_process_batch
    for i in range(self.eval_steps()):
      chunk = indices[i * b:(i + 1) * b]
      mask = np.zeros(b, np.float32)
      mask[:len(chunk)] = 1.0
      chunk = chunk if len(chunk) else indices[:1]  # a process with nothing left still steps
      rows = self.map(lambda ex, i: self.preprocess.eval(ex, int(i)),
                      read_many(self.eval_source, chunk.tolist()), chunk)
      rows += [rows[0]] * (b - len(rows))
      batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
      batch['mask'] = mask
      yield self.shard(batch)


class RepeatedOrder:
  """Position k of the repeated stream -> position in the shuffled stream: epoch k // n reads
  the first n / R examples of its own shuffle, each R times in a row."""

  def __init__(self, shuffled, n: int, repeats: int):
    self.shuffled, self.n, self.repeats = shuffled, n, repeats

  def __call__(self, k: int) -> int:
    epoch, position = divmod(int(k), self.n)
    return self.shuffled[epoch * self.n + position // self.repeats]


def examples(config, n: int, split: str = '') -> tuple[np.ndarray, np.ndarray]:
  """The first n examples of a trained model's `config`'s eval split (or `split`) as the model
  sees them before normalisation: (uint8 inputs [n, ...] with the canvas placement and crop of
  evaluation applied, int labels [n]). Builds a local dataset on first use."""
  builder = get_builder(config.data)
  source = open_split(builder, split or config.data.eval_split)
  image_key, label_key = keys(builder)
  prep = Preprocess(config.data, config.model.image_size, image_key, label_key)
  rows = [prep.eval(ex, i) for i, ex in
          enumerate(read_many(source, list(range(min(n, len(source))))))]
  return np.stack([r['image'] for r in rows]), np.array([r['label'] for r in rows])


def read_many(source, indices: list[int]) -> list[dict[str, Any]]:
  """Examples at `indices`, read in one call where the source supports it."""
  if hasattr(source, '__getitems__'):
    return list(source.__getitems__(indices))
  return [source[i] for i in indices]


def _count(start: int):
  while True:
    yield start
    start += 1


def prefetch_iter(iterator: Iterator, size: int) -> Iterator:
  """Run `iterator` in a daemon thread, `size` items ahead; errors are re-raised here."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def worker():
    try:
      for item in iterator:
        q.put(item)
    except BaseException as e:  # pylint: disable=broad-except
      q.put(e)
    q.put(done)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item
