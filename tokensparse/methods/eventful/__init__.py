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
from tokensparse.methods.eventful.model import (VARIANTS, EventfulViT, run_clip,  # noqa: F401
                                               run_video)


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
    if kw.get('num_frames') and kw.get('video', 'joint') == 'joint':
      fail('model.video', 'joint', "Eventful runs a per-frame (per-step) backbone: an image "
           "model, or a video model with model.video='factorised' or 'frames'")

  def suggest(self, kw):
    # An image model's figure runs a Moving Fashion-MNIST test clip (42 px frames).
    if not kw.get('num_frames') and kw['image_size'] < 42:
      return None
    return f'capacity={max((backbone.num_prefix(kw) + backbone.num_patches(kw)) // 4, 1)}'

  def budget_knobs(self, kw):
    n = backbone.num_prefix(kw) + backbone.num_patches(kw)
    return [dict(capacity=r) for r in range(1, n + 1)]

  def macs(self, model, channels=3):
    """Image models: per frame after the first (the first frame costs the dense model's).
    Video models: per clip (first step dense, the others eventful, temporal encoder dense)."""
    if model.factorised:
      return flops.eventful_clip_macs(model, channels=channels)
    return flops.eventful_macs(model, channels=channels)

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.eventful import viz  # drawing (PIL, data) only when drawn
    return viz.figures(predictor, out, num_images)

  def check_evaluation(self, model, clips):
    if not clips and not model.factorised:
      raise ValueError(
          'the Eventful Transformer saves work between the frames of a clip; on still images '
          'every input is the dense first frame (the dense accuracy, at the dense cost). '
          "Evaluate it on clips: a video model (model.video='factorised'), or an image model's "
          "weights on clips with methods.get('eventful').clip_runner(predictor, capacity=...) "
          '(benchmarks/eventful_accuracy.py does that for the canvas model)')

  def export(self, predictor, platforms=None):
    return export_eventful_step(predictor, platforms=platforms)

  def clip_runner(self, predictor, capacity: int = 0, variant: str = 'full',
                  threshold: float | None = None) -> Callable:
    """A jitted fn on a predictor's weights, run by an Eventful Transformer: pixel clips
    [B, T, H, W, C] -> per-frame logits [B, T, classes] (a per-frame image model), or clip
    logits [B, classes] (a video model, model.video 'factorised' or 'frames')."""
    config = predictor.config
    model_ = predictor.model
    if config.model.get('name', 'vit') not in ('vit', self.name) or (
        model_.num_frames and not model_.factorised):
      raise ValueError(f'Eventful runs a per-frame image ViT or a factorised video ViT; this '
                       f'model is {config.model.name!r} with num_frames={model_.num_frames}, '
                       f'video={model_.video!r}')
    model = EventfulViT(**backbone.backbone_kwargs(config.model), capacity=capacity,
                        variant=variant, threshold=threshold)
    if model.factorised:
      run = jax.jit(lambda v, c: run_video(model, v, c)['logits'])
      want = predictor.input_shape
    else:
      run = jax.jit(lambda v, c: run_clip(model, v, c)[0])
      want = (None,) + predictor.input_shape

    def fn(clips):
      shape = tuple(np.shape(clips))
      if len(shape) != len(want) + 1 or any(w is not None and w != s
                                            for w, s in zip(want, shape[1:])):
        raise ValueError(f'clips have shape {shape}; expected [batch, '
                         f'{", ".join("frames" if w is None else str(w) for w in want)}]')
      return run(predictor.variables, predictor.normalize(clips))
    return fn


METHODS = (EventfulMethod(),)
