"""Moving Fashion-MNIST: short video clips built offline from the Fashion-MNIST IDX files.

Each clip shows one 28x28 Fashion-MNIST item gliding at constant velocity across a black
canvas and bouncing off its borders (Moving-MNIST style); the label is the item's class. Train
clips use the first `train_clips` training images, test clips the first `test_clips` test
images, so no test item is seen in training. Positions and velocities come from a generator
seeded by (split, clip index): the dataset is the same on every machine.

Features: 'video' uint8 [frames, canvas, canvas, 1], 'label' (10 classes), 'positions' int32
[frames, 2] (the item's top-left corner per frame, for visualisations and tests).
The background is static, so between frames only the tokens the item crosses change: the
setting Eventful Transformers exploit, and a per-frame budget that TokenLearner can spend on
the item.

Configs: 'default' (8 frames, 42x42, 10,000 train / 2,000 test clips, about 170 MB) and
'tiny' (for tests). Select one as data.name='moving_fashion_mnist/tiny'.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from tokensparse.data import fashion_mnist


@dataclasses.dataclass
class ClipConfig(tfds.core.BuilderConfig):
  frames: int = 8
  canvas: int = 42
  train_clips: int = 10_000
  test_clips: int = 2_000
  max_speed: float = 3.0   # pixels per frame along each axis; at least 1


def bounce(start: float, velocity: float, steps: np.ndarray, limit: int) -> np.ndarray:
  """Positions start + velocity * t reflected into [0, limit] (a triangle wave), rounded."""
  if limit == 0:
    return np.zeros(len(steps), np.int32)
  q = np.mod(start + velocity * steps, 2 * limit)
  return np.round(np.where(q <= limit, q, 2 * limit - q)).astype(np.int32)


def render_clip(item: np.ndarray, frames: int, canvas: int, rng: np.random.Generator,
                max_speed: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
  """item [h, w] uint8 -> (clip [frames, canvas, canvas, 1] uint8, positions [frames, 2])."""
  h, w = item.shape
  if canvas < max(h, w):
    raise ValueError(f'canvas {canvas} is smaller than the {h}x{w} item')
  limits = (canvas - h, canvas - w)
  start = rng.uniform(0, 1, 2) * limits
  speed = rng.uniform(1.0, max(max_speed, 1.0), 2) * rng.choice([-1.0, 1.0], 2)
  t = np.arange(frames)
  ys, xs = (bounce(start[a], speed[a], t, limits[a]) for a in range(2))
  clip = np.zeros((frames, canvas, canvas, 1), np.uint8)
  for f, (y, x) in enumerate(zip(ys, xs)):
    clip[f, y:y + h, x:x + w, 0] = item
  return clip, np.stack([ys, xs], axis=1)


class ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Clips rendered offline from the Fashion-MNIST IDX files: train clips from the training
  items, test clips from the test items (`train_clips` / `test_clips` of the config, items
  reused when there are fewer), one clip per `example(split_id, index, item, label)`."""

  def __init__(self, *, source_dir: str = fashion_mnist.DEFAULT_SOURCE_DIR, **kwargs):
    self.source_dir = source_dir
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    fashion_mnist.check_source_dir(self.source_dir)
    c = self.builder_config
    return {split: self._generate_examples(split, *files, count)
            for (split, files), count in zip(fashion_mnist.FILES.items(),
                                             (c.train_clips, c.test_clips))}

  def _generate_examples(self, split: str, images_file: str, labels_file: str, count: int):
    images = fashion_mnist.read_idx(os.path.join(self.source_dir, images_file))
    labels = fashion_mnist.read_idx(os.path.join(self.source_dir, labels_file))
    split_id = {'train': 0, 'test': 1}[split]
    for i in range(count):
      j = i % len(images)  # fewer images than clips (test fixtures): reuse items
      yield i, self.example(split_id, i, images[j], int(labels[j]))

  def example(self, split_id: int, index: int, item: np.ndarray, label: int) -> dict:
    raise NotImplementedError


class MovingFashionMnist(ClipBuilder, skip_registration=True):
  """Moving Fashion-MNIST clips (see the module docstring)."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Rendered offline from the IDX files of dataset-fashion-mnist.'}
  BUILDER_CONFIGS = [
      ClipConfig(name='default', description='8 frames of 42x42, 10k train / 2k test clips'),
      ClipConfig(name='tiny', description='for tests', frames=4, canvas=35, train_clips=64,
                 test_clips=32),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description='One Fashion-MNIST item moving across a black canvas; label = its class.',
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(shape=(c.frames, c.canvas, c.canvas, 1),
                                          dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=fashion_mnist.CLASS_NAMES),
            'positions': tfds.features.Tensor(shape=(c.frames, 2), dtype=np.int32),
        }),
        supervised_keys=('video', 'label'))

  def example(self, split_id, index, item, label):
    c = self.builder_config
    rng = np.random.default_rng([split_id, index])
    clip, positions = render_clip(item, c.frames, c.canvas, rng, c.max_speed)
    return {'video': clip, 'label': label, 'positions': positions}


def load_clips(size: int, limit: int, split: str = 'test', data_dir: str = '',
               config: str = 'default') -> tuple[np.ndarray, np.ndarray]:
  """(clips uint8 [n, T, size, size, 1], labels [n]) of the first `limit` clips of `split`,
  each frame centred on a black size x size canvas (for per-frame models trained on larger
  canvases; the item keeps its 28x28 size). Builds the dataset on first use."""
  canvas = next(c.canvas for c in MovingFashionMnist.BUILDER_CONFIGS if c.name == config)
  if size < canvas:  # before building anything
    raise ValueError(f'Moving Fashion-MNIST clips ({config!r}) are {canvas}x{canvas}; a model of '
                     f'image_size {size} cannot take them (train one on the canvas, e.g. '
                     'configs/vit/fashion_mnist_canvas.py)')
  builder = fashion_mnist.prepared(MovingFashionMnist, config=config,
                                   data_dir=data_dir or fashion_mnist.DEFAULT_DATA_DIR)
  source = builder.as_data_source(split=split)
  rows = [source[i] for i in range(min(limit, len(source)))]
  clips = np.stack([r['video'] for r in rows])
  h = clips.shape[2]
  pad = (size - h) // 2
  out = np.zeros(clips.shape[:2] + (size, size, clips.shape[-1]), np.uint8)
  out[:, :, pad:pad + h, pad:pad + h] = clips
  return out, np.array([r['label'] for r in rows])
