"""Fashion-MNIST Detection Clips: video object detection data built offline from the
Fashion-MNIST IDX files, for the ViTDet detector and its Eventful runs.

Each clip shows 2 to `max_objects` Fashion-MNIST items of different classes moving in straight
lines over a static, cluttered canvas (faint texture and ghosted fragments of other items);
items start partly outside and may enter or leave during the clip. Per frame, every item that
shows at least `min_visible` of its pixels gets a box: the tight box of its visible pixels
(x0, y0, x1, y1 in pixels, x1 and y1 exclusive) and its class. Train clips draw their items
from the training images, test clips from the test images. Everything comes from a generator
seeded by (split, clip index): the data set is the same on every machine.

Features: 'video' uint8 [frames, canvas, canvas, 1]; 'boxes' float32 [frames, G, 4];
'labels' int32 [frames, G]; 'valid' bool [frames, G] (G = max_objects; unused rows are zero
and not valid). Configs: 'default' (8 frames of 96x96, 2,000 train / 200 test clips, about
150 MB) and 'tiny' (tests). Select one as data.name='fashion_mnist_detection/tiny'.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from tokensparse.data import fashion_mnist
from tokensparse.data.moving_fashion_mnist import ClipBuilder


@dataclasses.dataclass
class DetectionConfig(tfds.core.BuilderConfig):
  frames: int = 8
  canvas: int = 96
  train_clips: int = 2_000
  test_clips: int = 200
  max_objects: int = 4
  max_speed: float = 3.0      # pixels per frame along each axis
  min_visible: float = 0.3    # share of an item's pixels that must show for a box


def item_box(item: np.ndarray) -> tuple[int, int, int, int]:
  """Tight box (y0, x0, y1, x1) of an item's pixels (> 0), exclusive ends."""
  ys, xs = np.nonzero(item)
  return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def clutter(canvas: int, fragments: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A static background: smooth faint texture plus ghosted 10x10 fragments of other items."""
  coarse = rng.uniform(0, 40, (canvas // 8 + 2, canvas // 8 + 2))
  yy = np.linspace(0, canvas // 8, canvas)
  tex = coarse[np.round(yy).astype(int)][:, np.round(yy).astype(int)]
  bg = tex + rng.uniform(0, 12, (canvas, canvas))
  for frag in fragments:
    y, x = rng.integers(0, canvas - 10, 2)
    bg[y:y + 10, x:x + 10] = np.maximum(bg[y:y + 10, x:x + 10], frag * 0.35)
  return bg


def render(items: np.ndarray, labels: np.ndarray, background: np.ndarray, frames: int,
           rng: np.random.Generator, max_speed: float, min_visible: float, max_objects: int):
  """Items [K, 28, 28] moving over `background` -> (video [T, S, S, 1] uint8, boxes
  [T, G, 4], labels [T, G], valid [T, G])."""
  s = background.shape[0]
  k, h, w = items.shape
  start = rng.uniform(-h * 0.6, s - h * 0.4, (k, 2))
  speed = rng.uniform(0.5, max_speed, (k, 2)) * rng.choice([-1.0, 1.0], (k, 2))
  video = np.zeros((frames, s, s, 1), np.uint8)
  boxes = np.zeros((frames, max_objects, 4), np.float32)
  out_labels = np.zeros((frames, max_objects), np.int32)
  valid = np.zeros((frames, max_objects), bool)
  for t in range(frames):
    frame = background.copy()
    for j in range(k):
      y, x = np.round(start[j] + speed[j] * t).astype(int)
      ys, xs = slice(max(y, 0), min(y + h, s)), slice(max(x, 0), min(x + w, s))
      if ys.start >= ys.stop or xs.start >= xs.stop:
        continue
      part = items[j][ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
      frame[ys, xs] = np.maximum(frame[ys, xs], part)
      if part.sum() < min_visible * items[j].sum() or not part.any():
        continue
      y0, x0, y1, x1 = item_box(part)
      boxes[t, j] = (xs.start + x0, ys.start + y0, xs.start + x1, ys.start + y1)
      out_labels[t, j], valid[t, j] = labels[j], True
    video[t, :, :, 0] = np.clip(frame, 0, 255).astype(np.uint8)
  return video, boxes, out_labels, valid


class FashionMnistDetection(ClipBuilder, skip_registration=True):
  """Fashion-MNIST Detection Clips (see the module docstring)."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Rendered offline from the IDX files of dataset-fashion-mnist.'}
  BUILDER_CONFIGS = [
      DetectionConfig(name='default', description='8 frames of 96x96, 2k train / 200 test'),
      DetectionConfig(name='tiny', description='for tests', frames=3, canvas=48,
                      train_clips=16, test_clips=8, max_objects=3),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    g = c.max_objects
    return tfds.core.DatasetInfo(
        builder=self,
        description='Fashion-MNIST items moving over a cluttered canvas; a box and class per '
                    'visible item and frame.',
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(shape=(c.frames, c.canvas, c.canvas, 1),
                                          dtype=np.uint8),
            'boxes': tfds.features.Tensor(shape=(c.frames, g, 4), dtype=np.float32),
            'labels': tfds.features.Tensor(shape=(c.frames, g), dtype=np.int32),
            'valid': tfds.features.Tensor(shape=(c.frames, g), dtype=np.bool_),
        }))

  def _generate_examples(self, split: str, images_file: str, labels_file: str, count: int):
    images = fashion_mnist.read_idx(os.path.join(self.source_dir, images_file))
    labels = fashion_mnist.read_idx(os.path.join(self.source_dir, labels_file)).astype(np.int32)
    c = self.builder_config
    split_id = {'train': 0, 'test': 1}[split]
    for i in range(count):
      rng = np.random.default_rng([split_id, i, 7])
      k = int(rng.integers(2, c.max_objects + 1))
      classes = rng.choice(10, k, replace=False)            # different classes per clip
      picks = [int(rng.choice(np.flatnonzero(labels == cl))) for cl in classes]
      frags = images[rng.integers(0, len(images), 6)][:, 9:19, 9:19]
      background = clutter(c.canvas, frags, rng)
      video, boxes, lab, valid = render(images[picks], labels[picks], background, c.frames,
                                        rng, c.max_speed, c.min_visible, c.max_objects)
      yield i, {'video': video, 'boxes': boxes, 'labels': lab, 'valid': valid}


def load(split: str = 'test', limit: int | None = None, config: str = 'default',
         data_dir: str = '', source_dir: str = fashion_mnist.DEFAULT_SOURCE_DIR) -> dict:
  """The clips of a split as numpy arrays {'video' [n, T, S, S, 1], 'boxes', 'labels',
  'valid'}; builds the data set on first use (seconds to a minute)."""
  builder = fashion_mnist.prepared(FashionMnistDetection, config=config, source_dir=source_dir,
                                   data_dir=data_dir or fashion_mnist.DEFAULT_DATA_DIR)
  source = builder.as_data_source(split=split)
  n = len(source) if limit is None else min(limit, len(source))
  rows = [source[i] for i in range(n)]
  return {k: np.stack([r[k] for r in rows]) for k in ('video', 'boxes', 'labels', 'valid')}
