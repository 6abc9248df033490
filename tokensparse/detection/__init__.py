"""Video object detection with a ViTDet-style detector (tokensparse/detection/model.py) on the
one backbone, run dense or as an Eventful Transformer.

A detection config (configs/vitdet/) has `model` (the backbone's fields, with ViTDet's options
and `num_classes`, the object classes), `detector` (pyramid and head), `data` (the offline
Fashion-MNIST Detection Clips) and `eventful` (capacity, variant, threshold of an Eventful
run). `python train.py --config configs/vitdet/...` trains it (detection/train.py);
`build(config, eventful=True)` gives the same weights' Eventful detector.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from tokensparse import backbone
from tokensparse.backbone.pyramid import SCALES
from tokensparse.backbone.vit import ViT
from tokensparse.detection.model import Detector, run_clip  # noqa: F401
from tokensparse.fields import fail
from tokensparse.methods.eventful.model import VARIANTS, EventfulViT  # noqa: F401


def validate(config: Any) -> dict:
  """Raise ValueError naming the first field of a detection config that cannot work; return
  the backbone kwargs."""
  kw = backbone.validate(config.model)
  if kw.get('classifier', 'token') != 'gap':
    fail('model.classifier', kw.get('classifier', 'token'),
         "a detector's backbone has no class token: set model.classifier='gap'")
  d = config.detector
  bad = [s for s in d.scale_factors if s not in SCALES]
  if bad or not d.scale_factors:
    fail('detector.scale_factors', list(d.scale_factors), f'expected some of {SCALES}')
  if not isinstance(d.out_channels, int) or d.out_channels <= 0 or \
      d.out_channels % min(32, d.out_channels):
    fail('detector.out_channels', d.out_channels,
         'must be a positive multiple of 32 (or below 32): the head uses GroupNorm(32)')
  grid = kw['image_size'] // kw['patch_size']
  small = [s for s in d.scale_factors if grid * s < 1]
  if small:
    fail('detector.scale_factors', list(d.scale_factors),
         f'scale {small[0]} leaves no cell of the {grid}x{grid} token grid')
  e = config.get('eventful')
  if e is not None:
    if e.variant not in VARIANTS:
      fail('eventful.variant', e.variant, f'expected one of {VARIANTS}')
    if not isinstance(e.capacity, int) or not 0 <= e.capacity <= grid * grid:
      fail('eventful.capacity', e.capacity, f'must be in [0, N={grid * grid}] (0 means N)')
  if config.get('batch_size') is not None and config.batch_size <= 0:
    fail('batch_size', config.batch_size, 'must be positive')
  return kw


def build(config: Any, eventful: bool = False, capacity: int | None = None,
          variant: str | None = None, threshold: float | None = None) -> Detector:
  """The detector of a config; `eventful=True` runs its backbone as an EventfulViT (capacity,
  variant and threshold default to config.eventful's)."""
  kw = validate(config)
  if eventful:
    e = config.eventful
    net = EventfulViT(**kw, capacity=e.capacity if capacity is None else capacity,
                      variant=variant or e.variant,
                      threshold=e.threshold if threshold is None else threshold)
  else:
    net = ViT(**kw)
  d = config.detector
  return Detector(net, num_classes=kw['num_classes'], scale_factors=tuple(d.scale_factors),
                  out_channels=d.out_channels, head_convs=d.head_convs,
                  size_base=d.size_base)


def normalize(frames, mean: float, std: float):
  """uint8 frames [..., H, W, C] -> float32 (x / 255 - mean) / std."""
  return (jnp.asarray(frames, jnp.float32) / 255.0 - mean) / std
