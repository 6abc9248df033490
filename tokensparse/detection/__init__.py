"""Video object detection with a ViTDet-style detector (tokensparse/detection/model.py) on the
one backbone.

A detection config (configs/vitdet/) has `model` (the backbone's fields, with ViTDet's options
and `num_classes`, the object classes), `detector` (pyramid and head) and `data` (the offline
Fashion-MNIST Detection Clips), and may carry a method's group for runs of the trained weights
(the Eventful Transformer's: tokensparse/methods/eventful/detection.py). `python train.py
--config configs/vitdet/...` trains it (detection/train.py).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from tokensparse import backbone
from tokensparse.backbone.pyramid import SCALES
from tokensparse.backbone.vit import ViT
from tokensparse.detection.model import Detector
from tokensparse.fields import fail


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
  if config.get('batch_size') is not None and config.batch_size <= 0:
    fail('batch_size', config.batch_size, 'must be positive')
  return kw


def build(config: Any, net: ViT | None = None) -> Detector:
  """The detector of a config; `net` replaces its dense backbone (a method's, built from the
  same backbone fields)."""
  kw = validate(config)
  d = config.detector
  return Detector(net or ViT(**kw), num_classes=kw['num_classes'],
                  scale_factors=tuple(d.scale_factors), out_channels=d.out_channels,
                  head_convs=d.head_convs, size_base=d.size_base)


def normalize(frames, mean: float, std: float):
  """uint8 frames [..., H, W, C] -> float32 (x / 255 - mean) / std."""
  return (jnp.asarray(frames, jnp.float32) / 255.0 - mean) / std
