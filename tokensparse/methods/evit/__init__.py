"""EViT (Liang et al., ICLR 2022): keep the tokens the class token attends to, fuse the rest.

Config: `model.evit` = {keep_rate (0.7), layers (block indices; () = the paper's 4th, 7th
and 10th of 12 blocks, scaled to the depth: 3, 6, 9 for 12 blocks, 1, 3, 4 for 6), fuse (one
fused token from the inattentive ones)}. Needs the class
token (`model.classifier='token'`). Off the shelf on any checkpoint, or fine-tuned.
"""
from __future__ import annotations

import ml_collections

import numpy as np

from tokensparse.fields import boolean, fail, int_tuple
from tokensparse.flops import vit_macs
from tokensparse.methods.base import Method, Variant
from tokensparse.methods.evit.model import EViT


def layers(ev, depth: int) -> tuple[int, ...]:
  """The reorganising blocks: `model.evit.layers`, or by default the paper's blocks 3, 6, 9 of
  12 (0-based) scaled to the depth."""
  if ev.layers:
    return tuple(ev.layers)
  return tuple(sorted({int(depth * k / 12) for k in (3, 6, 9)}))


class EViTMethod(Method):
  name = 'evit'
  summary = 'keeps the tokens the class token attends to and fuses the rest'
  model_class = EViT
  options = {'keep_rate': float, 'layers': int_tuple, 'fuse': boolean}

  training_free = True

  def defaults(self):
    return ml_collections.ConfigDict(dict(keep_rate=0.7, layers=(), fuse=True))

  def model_kwargs(self, f, kw):
    return dict(keep_rate=f.keep_rate, layers=layers(f, kw['depth']), fuse=f.fuse)

  def validate(self, config, kw):
    ev = self.fields(config.model)
    if kw.get('classifier', 'token') != 'token':
      fail('model.classifier', kw.get('classifier'),
           "EViT ranks tokens by the class token's attention: needs model.classifier='token'")
    if not 0.0 < ev.keep_rate <= 1.0:
      fail('model.evit.keep_rate', ev.keep_rate, 'must be in (0, 1]')
    chosen = list(ev.layers)  # () = the paper's placement, scaled to the depth
    if chosen and (chosen != sorted(set(chosen)) or chosen[0] < 0 or chosen[-1] >= kw['depth']):
      fail('model.evit.layers', tuple(chosen),
           f'must be increasing block indices in [0, {kw["depth"] - 1}] (model.depth={kw["depth"]})')

  def suggest(self, kw):
    return 'keep_rate=0.7' if kw.get('classifier', 'token') == 'token' else None

  def variants(self):
    return (Variant('evit', 'EViT', 'evit/fashion_mnist_canvas.py'),)

  def budget_knobs(self, kw):
    return [{'keep_rate': round(float(k), 3)} for k in np.linspace(0.05, 1.0, 96)]

  def macs(self, model, channels=3):
    return vit_macs(model, channels, model.counts())

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.evit import viz  # drawing (PIL, data) only when drawn
    return viz.figures(predictor, out, num_images)


METHODS = (EViTMethod(),)
