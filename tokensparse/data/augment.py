"""DeiT's training augmentations, per example and per batch, seeded by the caller's Generator.

The semantics are timm's (which DeiT, DynamicViT and VTP trained with); only the random streams
differ: every draw comes from the numpy Generator the pipeline derives from (seed, example
index) or (seed, batch index), so a resumed run replays exactly the same augmentations.

- `RandAugment.from_policy('rand-m9-mstd0.5-inc1', ...)`: `n` ops (default 2) drawn with
  replacement from 15, each applied with probability `p` (0.5) at a magnitude drawn from
  N(m, mstd) clipped to [0, mmax=10]; `inc1` picks the ops whose strength grows with m.
- `random_erase`: timm's RandomErasing(mode='pixel') on a normalised image: one box of 2 %-33 %
  of the area, aspect ratio in [0.3, 3.3], filled with N(0, 1) per pixel.
- `mix_batch`: timm's Mixup(mode='batch'): one lambda per batch from Beta(alpha, alpha), CutMix
  instead of Mixup with probability `switch_prob`, partner = the batch reversed, CutMix's lambda
  corrected to the pasted box's true area, soft targets smoothed then mixed alike.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0   # timm's _LEVEL_DENOM: magnitude m means m / 10 of each op's range

# timm's _RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS (inc1), in timm's order.
OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd',
       'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel',
       'TranslateYRel')
INCREASING_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
                  'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing',
                  'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY',
                  'TranslateXRel', 'TranslateYRel')
INTERPOLATIONS = {'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}


def _signed(value: float, rng: np.random.Generator) -> float:
  return -value if rng.random() > 0.5 else value   # timm's _randomly_negate


def op_argument(name: str, magnitude: float, rng: np.random.Generator):
  """timm's LEVEL_TO_ARG: the argument op `name` takes at `magnitude` (0..10), with its random
  sign where the op has one; None for ops without an argument."""
  level = magnitude / MAX_LEVEL
  if name in ('AutoContrast', 'Equalize', 'Invert'):
    return None
  if name == 'Rotate':
    return _signed(level * 30.0, rng)                      # degrees
  if name in ('ShearX', 'ShearY'):
    return _signed(level * 0.3, rng)                       # shear factor
  if name in ('TranslateXRel', 'TranslateYRel'):
    return _signed(level * 0.45, rng)                      # fraction of the side
  if name == 'Posterize':
    return int(level * 4)                                  # bits kept
  if name == 'PosterizeIncreasing':
    return 4 - int(level * 4)
  if name == 'Solarize':
    return min(256, int(level * 256))                      # threshold
  if name == 'SolarizeIncreasing':
    return 256 - min(256, int(level * 256))
  if name == 'SolarizeAdd':
    return min(128, int(level * 110))                      # added below 128
  if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return level * 1.8 + 0.1                               # enhance factor
  if name.endswith('Increasing'):                          # Color/Contrast/... Increasing
    return max(0.1, 1.0 + _signed(level * 0.9, rng))
  raise ValueError(f'unknown RandAugment op {name!r}')


def apply_op(image: Image.Image, name: str, arg, *, fill, resample) -> Image.Image:
  """Op `name` with argument `arg` on a PIL image, as timm's NAME_TO_OP does it."""
  base = name.replace('Increasing', '')
  if base == 'AutoContrast':
    return ImageOps.autocontrast(image)
  if base == 'Equalize':
    return ImageOps.equalize(image)
  if base == 'Invert':
    return ImageOps.invert(image)
  if base == 'Rotate':
    return image.rotate(arg, resample=resample, fillcolor=fill)
  if base == 'Posterize':  # 0 bits (PosterizeIncreasing at m=10) is black, as PIL made it
    if arg <= 0:          # before Pillow began refusing bits < 1 (timm still passes 0)
      return Image.new(image.mode, image.size, 0)
    return image if arg >= 8 else ImageOps.posterize(image, arg)
  if base == 'Solarize':
    return ImageOps.solarize(image, arg)
  if base == 'SolarizeAdd':
    lut = [min(255, i + arg) if i < 128 else i for i in range(256)]
    return image.point(lut * len(image.getbands()))
  if base in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return getattr(ImageEnhance, base)(image).enhance(arg)
  matrix = {'ShearX': (1, arg, 0, 0, 1, 0), 'ShearY': (1, 0, 0, arg, 1, 0),
            'TranslateXRel': (1, 0, arg * image.size[0], 0, 1, 0),
            'TranslateYRel': (1, 0, 0, 0, 1, arg * image.size[1])}[base]
  return image.transform(image.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


@dataclasses.dataclass(frozen=True)
class RandAugment:
  """timm's RandAugment on uint8 [h, w, c] arrays (see the module docstring)."""
  ops: tuple[str, ...]
  magnitude: float
  num_layers: int = 2
  prob: float = 0.5
  magnitude_std: float = 0.0
  magnitude_max: float = MAX_LEVEL
  fill: tuple[int, ...] = (128, 128, 128)
  interpolation: str = 'bicubic'

  @classmethod
  def from_policy(cls, policy: str, *, mean=(0.485, 0.456, 0.406), interpolation='bicubic'):
    """Parse timm's policy string, e.g. 'rand-m9-mstd0.5-inc1' (sections m, n, p, mstd, mmax,
    inc); the fill of rotations, shears and translations is the mean colour, as timm sets it."""
    sections = policy.split('-')
    if sections[0] != 'rand':
      raise ValueError(f'data.rand_augment={policy!r}: a RandAugment policy starts with "rand-" '
                       '(e.g. rand-m9-mstd0.5-inc1)')
    fields = dict(magnitude=MAX_LEVEL, num_layers=2, prob=0.5, magnitude_std=0.0,
                  magnitude_max=MAX_LEVEL)
    increasing = False
    for section in sections[1:]:
      key, value = (re.split(r'(\d.*)', section) + [''])[:2]
      try:
        if key == 'm':
          fields['magnitude'] = float(int(value))
        elif key == 'n':
          fields['num_layers'] = int(value)
        elif key == 'p':
          fields['prob'] = float(value)
        elif key == 'mstd':
          std = float(value)
          fields['magnitude_std'] = math.inf if std > 100 else std
        elif key == 'mmax':
          fields['magnitude_max'] = float(int(value))
        elif key == 'inc':
          increasing = bool(int(value))
        else:
          raise ValueError(f'unknown section {section!r} (known: m, n, p, mstd, mmax, inc)')
      except ValueError as e:
        raise ValueError(f'data.rand_augment={policy!r}: {e}') from None
    fill = tuple(min(255, round(255 * m)) for m in mean)
    return cls(ops=INCREASING_OPS if increasing else OPS, fill=fill,
               interpolation=interpolation, **fields)

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gray = image.shape[-1] == 1
    out = np.asarray(self.apply(Image.fromarray(image[..., 0] if gray else image), rng))
    return out[..., None] if gray else out

  def apply(self, pil: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The same on a PIL image (the pipeline's inception-crop path stays in PIL)."""
    fill = self.fill[0] if pil.mode == 'L' else self.fill
    for name in rng.choice(self.ops, self.num_layers, replace=True):
      if self.prob < 1.0 and rng.random() > self.prob:
        continue
      magnitude = self.magnitude
      if self.magnitude_std == math.inf:
        magnitude = rng.uniform(0, magnitude)
      elif self.magnitude_std > 0:
        magnitude = rng.normal(magnitude, self.magnitude_std)
      magnitude = max(0.0, min(magnitude, self.magnitude_max))
      pil = apply_op(pil, str(name), op_argument(str(name), magnitude, rng), fill=fill,
                     resample=INTERPOLATIONS[self.interpolation])
    return pil


def random_erase(image: np.ndarray, rng: np.random.Generator, prob: float,
                 area=(0.02, 1 / 3), min_aspect=0.3) -> np.ndarray:
  """timm's RandomErasing(probability=prob, mode='pixel', max_count=1) on a normalised float
  image [h, w, c], in place: with probability `prob`, up to 10 tries for a box of random area
  fraction in `area` and log-uniform aspect ratio in [min_aspect, 1 / min_aspect] that fits,
  filled with N(0, 1) noise."""
  if rng.random() > prob:
    return image
  h, w, c = image.shape
  log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
  for _ in range(10):
    target = rng.uniform(*area) * h * w
    aspect = math.exp(rng.uniform(*log_aspect))
    eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if ew < w and eh < h:
      top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
      image[top:top + eh, left:left + ew] = rng.standard_normal((eh, ew, c), np.float32)
      break
  return image


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator):
  """timm's rand_bbox: a box of sides int(side * sqrt(1 - lam)) centred at a uniform pixel,
  clipped to the image; returns (y0, y1, x0, x1) and lambda corrected to the box's true area."""
  ratio = math.sqrt(1.0 - lam)
  cut_h, cut_w = int(height * ratio), int(width * ratio)
  cy, cx = rng.integers(0, height), rng.integers(0, width)
  y0, y1 = np.clip([cy - cut_h // 2, cy + (cut_h + 1) // 2], 0, height)
  x0, x1 = np.clip([cx - cut_w // 2, cx + (cut_w + 1) // 2], 0, width)
  lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
  return (int(y0), int(y1), int(x0), int(x1)), lam


def soft_targets(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
  """Integer labels [n] -> smoothed one-hot [n, K]: 1 - s + s/K on the label, s/K elsewhere."""
  off = smoothing / num_classes
  targets = np.full((len(labels), num_classes), off, np.float32)
  targets[np.arange(len(labels)), labels] = 1.0 - smoothing + off
  return targets


@dataclasses.dataclass(frozen=True)
class Mix:
  """timm's Mixup(mode='batch', correct_lam=True) on a normalised float batch [n, h, w, c]."""
  mixup_alpha: float = 0.8
  cutmix_alpha: float = 1.0
  switch_prob: float = 0.5
  prob: float = 1.0
  smoothing: float = 0.1

  def params(self, rng: np.random.Generator) -> tuple[float, bool]:
    """(lambda, use_cutmix) for one batch."""
    if not rng.random() < self.prob:
      return 1.0, False
    if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
      cutmix = bool(rng.random() < self.switch_prob)
      alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
    else:
      cutmix = self.cutmix_alpha > 0
      alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
    return float(rng.beta(alpha, alpha)), cutmix

  def __call__(self, images: np.ndarray, labels: np.ndarray, num_classes: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """-> (mixed images, soft targets [n, K], lambda); each example i is mixed with n-1-i."""
    if images.ndim != 4:
      raise ValueError(f'Mixup/CutMix mixes images [n, h, w, c], not arrays of shape '
                       f'{images.shape} (video clips are not mixed)')
    if len(images) % 2:
      raise ValueError(f'Mixup/CutMix pairs each example with another: the per-process batch '
                       f'must be even (got {len(images)})')
    lam, cutmix = self.params(rng)
    if lam != 1.0:
      if cutmix:
        (y0, y1, x0, x1), lam = cutmix_box(images.shape[1], images.shape[2], lam, rng)
        mixed = images.copy()
        mixed[:, y0:y1, x0:x1] = images[::-1, y0:y1, x0:x1]
        images = mixed
      else:
        images = images * np.float32(lam) + images[::-1] * np.float32(1.0 - lam)
    targets = soft_targets(labels, num_classes, self.smoothing)
    return images, targets * lam + targets[::-1] * (1.0 - lam), lam


def check_fields(data_config) -> None:
  """Raise ValueError naming the first augmentation or loader field of a data config that
  cannot work (configs.validate and the pipeline both call this)."""
  d = data_config

  def fail(field, why):
    raise ValueError(f'data.{field}={d[field]!r}: {why}')
  if d.get('interpolation', 'bilinear') not in INTERPOLATIONS:
    fail('interpolation', 'expected bilinear or bicubic')
  if d.get('rand_augment'):
    RandAugment.from_policy(d.rand_augment)
  for field in ('random_erase', 'mix_switch_prob', 'mix_prob'):
    if not 0.0 <= d.get(field, 0.0) <= 1.0:
      fail(field, 'a probability in [0, 1]')
  for field in ('mixup', 'cutmix'):
    if d.get(field, 0.0) < 0:
      fail(field, 'a Beta parameter: 0 (off) or positive')
  repeats = d.get('repeated_aug', 1)
  if not isinstance(repeats, int) or repeats < 1:
    fail('repeated_aug', 'how often each example repeats in an epoch, >= 1')
  threads = d.get('threads', 1)
  if not isinstance(threads, int) or threads < 0:
    fail('threads', 'threads that decode and augment examples (0 = one per CPU core)')
