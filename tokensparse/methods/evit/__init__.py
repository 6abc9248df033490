"""EViT (Liang et al., ICLR 2022): keep the tokens the class token attends to, fuse the rest.

Config: `model.evit` = {keep_rate (0.7), layers (block indices, default 3, 6, 9 of 12: the
4th, 7th and 10th blocks), fuse (one fused token from the inattentive ones)}. Needs the class
token (`model.classifier='token'`). Off the shelf on any checkpoint, or fine-tuned.
"""
from __future__ import annotations

import ml_collections

from tokensparse.flops import vit_macs
from tokensparse.methods.base import Method, fail
from tokensparse.methods.evit.model import EViT


class EViTMethod(Method):
  name = 'evit'
  summary = 'keeps the tokens the class token attends to and fuses the rest'
  model_class = EViT

  def defaults(self):
    return ml_collections.ConfigDict(dict(evit=dict(keep_rate=0.7, layers=(3, 6, 9), fuse=True)))

  def model_kwargs(self, m):
    return dict(keep_rate=m.evit.keep_rate, layers=tuple(m.evit.layers),
                fuse=m.evit.get('fuse', True))

  def apply_options(self, m, options):
    for key, value in options.items():
      if key == 'keep_rate':
        m.evit.keep_rate = float(value)
      elif key == 'layers':
        m.evit.layers = tuple(int(v) for v in value.split('/'))
      elif key == 'fuse':
        m.evit.fuse = value.lower() in ('1', 'true', 'yes')
      else:
        fail(f'--method evit:{key}', value, 'expected keep_rate=, layers= (e.g. 3/6/9) or fuse=')

  def validate(self, config, kw):
    ev = config.model.evit
    if not 0.0 < ev.keep_rate <= 1.0:
      fail('model.evit.keep_rate', ev.keep_rate, 'must be in (0, 1]')
    layers = list(ev.layers)
    if not layers or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= kw['depth']:
      fail('model.evit.layers', tuple(layers),
           f'must be increasing block indices in [0, {kw["depth"] - 1}] (model.depth={kw["depth"]})')
    if kw.get('classifier', 'token') != 'token':
      fail('model.classifier', kw.get('classifier'),
           "EViT ranks tokens by the class token's attention: needs model.classifier='token'")

  def macs(self, model, channels=3):
    return vit_macs(model, channels, model.counts())

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.evit import viz  # pylint: disable=g-import-not-at-top
    return viz.figures(predictor, out, num_images)


METHODS = (EViTMethod(),)
