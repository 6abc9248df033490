"""Fashion-MNIST actions: clips built offline from the Fashion-MNIST IDX files, labelled by how
the item moves, so the order of the frames decides the class.

Each clip shows one 28x28 item on a black canvas for `frames` frames, moving in a straight line
at a constant speed. The six actions come in time-reversed pairs:

    left / right / up / down   the item stays in view and travels along one axis
    enters / leaves            the item comes in across a border / goes out across one

A clip played backwards is a clip of the other class of its pair, with the same set of frames:
a per-frame model that averages its frames' logits cannot tell the two apart (chance within a
pair, at best 1/2 overall), while a model of the order (ViViT's temporal encoder) can. Train
clips use the training items, test clips the test items; positions and speeds come from a
generator seeded by (split, clip index), so the dataset is the same on every machine.

Features: 'video' uint8 [frames, canvas, canvas, 1], 'label' (6 actions), 'item' (the
Fashion-MNIST class), 'positions' int32 [frames, 2] (the item's top-left corner; may lie
outside the canvas while it enters or leaves).

Configs: 'default' (16 frames of 42x42, 5,000 train / 1,000 test clips, about 170 MB) and
'tiny' (for tests). Select one as data.name='fashion_mnist_actions/tiny'.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from tokensparse.data import fashion_mnist, moving_fashion_mnist

ACTIONS = ('left', 'right', 'up', 'down', 'enters', 'leaves')
ITEM = 28


@dataclasses.dataclass
class ActionConfig(tfds.core.BuilderConfig):
  frames: int = 16
  canvas: int = 42
  train_clips: int = 5_000
  test_clips: int = 1_000


def trajectory(action: int, frames: int, canvas: int, rng: np.random.Generator) -> np.ndarray:
  """Top-left corners [frames, 2] (y, x) of an item moving as `action` (an index of ACTIONS)."""
  room = canvas - ITEM                       # travel that keeps the item fully in view
  t = np.arange(frames)
  name = ACTIONS[action]
  if name in ('left', 'right', 'up', 'down'):
    speed = rng.uniform(0.75, 1.0) * room / max(frames - 1, 1)
    travel = speed * (frames - 1)
    start = rng.uniform(0, room - travel)
    along = start + speed * t
    if name in ('left', 'up'):
      along = along[::-1]
    across = np.full(frames, rng.uniform(0, room))
    path = (along, across) if name in ('up', 'down') else (across, along)
  else:
    # Enter from a random side: from fully outside to fully inside, then keep still.
    side = int(rng.integers(4))
    outside = -ITEM if side in (0, 2) else canvas          # beyond the top/left or bottom/right
    inside = rng.uniform(0, room)
    arrive = int(rng.integers(frames // 2, frames))        # the frame it is fully in view
    along = np.interp(t, [0, arrive], [outside, inside])
    across = np.full(frames, rng.uniform(0, room))
    path = (along, across) if side in (0, 1) else (across, along)
    if name == 'leaves':
      path = tuple(p[::-1] for p in path)
  return np.round(np.stack(path, axis=1)).astype(np.int32)


def render(item: np.ndarray, positions: np.ndarray, canvas: int) -> np.ndarray:
  """item [28, 28] uint8 at each (y, x) of positions [T, 2] -> clip [T, canvas, canvas, 1],
  clipped at the borders."""
  clip = np.zeros((len(positions), canvas, canvas, 1), np.uint8)
  for f, (y, x) in enumerate(positions):
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + ITEM, canvas), min(x + ITEM, canvas)
    if y0 < y1 and x0 < x1:
      clip[f, y0:y1, x0:x1, 0] = item[y0 - y:y1 - y, x0 - x:x1 - x]
  return clip


class FashionMnistActions(moving_fashion_mnist.ClipBuilder, skip_registration=True):
  """Fashion-MNIST actions (see the module docstring)."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Rendered offline from the IDX files of dataset-fashion-mnist.'}
  BUILDER_CONFIGS = [
      ActionConfig(name='default', description='16 frames of 42x42, 5k train / 1k test clips'),
      ActionConfig(name='tiny', description='for tests', frames=4, canvas=35, train_clips=48,
                   test_clips=24),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description='One Fashion-MNIST item moving on a black canvas; label = how it moves.',
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(shape=(c.frames, c.canvas, c.canvas, 1),
                                          dtype=np.uint8),
            'label': tfds.features.ClassLabel(names=ACTIONS),
            'item': tfds.features.ClassLabel(names=fashion_mnist.CLASS_NAMES),
            'positions': tfds.features.Tensor(shape=(c.frames, 2), dtype=np.int32),
        }),
        supervised_keys=('video', 'label'))

  def example(self, split_id, index, item, label):
    c = self.builder_config
    rng = np.random.default_rng([split_id, index, 7])
    action = index % len(ACTIONS)                           # balanced classes
    positions = trajectory(action, c.frames, c.canvas, rng)
    return {'video': render(item, positions, c.canvas), 'label': action, 'item': label,
            'positions': positions}


def load_clips(limit: int, split: str = 'test', data_dir: str = '',
               config: str = 'default') -> tuple[np.ndarray, np.ndarray]:
  """(clips uint8 [n, T, canvas, canvas, 1], action labels [n]) of the first `limit` clips of
  `split`; builds the dataset on first use."""
  builder = fashion_mnist.prepared(FashionMnistActions, config=config,
                                   data_dir=data_dir or fashion_mnist.DEFAULT_DATA_DIR)
  source = builder.as_data_source(split=split)
  rows = [source[i] for i in range(min(limit, len(source)))]
  return np.stack([r['video'] for r in rows]), np.array([r['label'] for r in rows])
