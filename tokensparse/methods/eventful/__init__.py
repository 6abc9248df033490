"""Eventful Transformer (Dutson, Li, Gupta, ICCV 2023): per-frame ViT inference on video that
recomputes only the tokens that changed; any per-frame checkpoint, no retraining.

Config: `model.name='eventful'`, `model.eventful` = {capacity (tokens recomputed per gate and
frame, 0 = all), variant ('tokenwise', 'sparse_qk', 'full'), threshold (None: top-capacity)}.
The model takes images (the dense first frame) or clips [B, T, H, W, C] (mean of per-frame
logits); `run_clip` is the lax.scan runner, and the method's `clip_runner(predictor, ...)` a
jitted one on pixels for any per-frame image model:

    from tokensparse import methods
    run = methods.get('eventful').clip_runner(predictor, capacity=16)
    frame_logits = run(clips)            # uint8 [B, T, H, W, C] -> [B, T, classes]
"""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import numpy as np
from ml_collections import config_dict

from tokensparse import backbone
from tokensparse.fields import fail
from tokensparse.methods.base import Method
from tokensparse.methods.eventful import flops
from tokensparse.methods.eventful.export import export_eventful_step
from tokensparse.methods.eventful.model import VARIANTS, EventfulViT, run_clip  # noqa: F401


class EventfulMethod(Method):
  name = 'eventful'
  summary = 'video: recomputes only the tokens that changed since the last frame'
  model_class = EventfulViT
  options = {'capacity': int, 'variant': str, 'threshold': float}

  training_free = True

  def defaults(self):
    return ml_collections.ConfigDict(dict(capacity=0, variant='full',
                                          threshold=config_dict.placeholder(float)))

  def model_kwargs(self, f, kw):
    return dict(capacity=f.capacity, variant=f.variant, threshold=f.threshold)

  def validate(self, config, kw):
    f = self.fields(config.model)
    if f.variant not in VARIANTS:
      fail('model.eventful.variant', f.variant, f'expected one of {VARIANTS}')
    n = backbone.num_prefix(kw) + backbone.num_patches(kw)
    if not isinstance(f.capacity, int) or not 0 <= f.capacity <= n:
      fail('model.eventful.capacity', f.capacity, f'must be in [0, N={n}] (0 means N)')
    if f.threshold is not None and f.threshold < 0:
      fail('model.eventful.threshold', f.threshold, 'must be >= 0')
    if kw.get('num_frames'):
      fail('model.num_frames', kw['num_frames'], 'Eventful runs a per-frame backbone: must be 0')

  def budget_knobs(self, kw):
    n = backbone.num_prefix(kw) + backbone.num_patches(kw)
    return [dict(capacity=r) for r in range(1, n + 1)]

  def macs(self, model, channels=3):
    """Per frame after the first (the first frame costs the dense model's)."""
    return flops.eventful_macs(model, channels=channels)

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.eventful import viz  # drawing (PIL, data) only when drawn
    return viz.figures(predictor, out, num_images)

  def export(self, predictor, platforms=None):
    return export_eventful_step(predictor, platforms=platforms)

  def clip_runner(self, predictor, capacity: int = 0, variant: str = 'full',
                  threshold: float | None = None) -> Callable:
    """A jitted fn: pixel clips [B, T, H, W, C] -> per-frame logits [B, T, classes], run by an
    Eventful Transformer on a predictor's (per-frame image model's) weights."""
    config = predictor.config
    if config.model.get('name', 'vit') not in ('vit', self.name) or predictor.model.num_frames:
      raise ValueError(f'Eventful runs a per-frame image ViT; this model is '
                       f'{config.model.name!r} with num_frames={predictor.model.num_frames}')
    model = EventfulViT(**backbone.backbone_kwargs(config.model), capacity=capacity,
                        variant=variant, threshold=threshold)
    run = jax.jit(lambda v, c: run_clip(model, v, c)[0])

    def fn(clips):
      shape = tuple(np.shape(clips))
      if len(shape) != 5 or shape[2:] != predictor.input_shape:
        raise ValueError(f'clips have shape {shape}; expected [batch, frames, '
                         f'{", ".join(map(str, predictor.input_shape))}]')
      return run(predictor.variables, predictor.normalize(clips))
    return fn


METHODS = (EventfulMethod(),)
