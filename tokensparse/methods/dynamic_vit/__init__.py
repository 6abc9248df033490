"""DynamicViT (Rao et al., NeurIPS 2021) and the paper's baselines at the same budget: static
(input-independent) token selection (`model.dynamic_vit.selector='static'`) and 2x2 token
pooling (`model.name='pooled_vit'`).

Config: `model.dynamic_vit` = {keep_ratio, prune_layers, gumbel_noise, selector}; loss weights
`loss.dynamic_vit` = {ratio_weight, distill_weight, token_weight}; `model.pooled_vit.pool_layer`
and `loss.pooled_vit.distill_weight`. The dense `init_from.path` checkpoint is also the frozen
teacher.
"""
from __future__ import annotations

import ml_collections
import numpy as np

from tokensparse import backbone
from tokensparse.fields import fail
from tokensparse.methods.base import Method, Variant
from tokensparse.methods.dynamic_vit import flops, objective
from tokensparse.methods.dynamic_vit.model import DynamicViT, PooledViT, keep_counts

RECIPE = 'dynamic_vit/fashion_mnist_canvas.py'


def depth_stages(depth: int) -> tuple[int, ...]:
  """The paper's three pruning stages (before blocks 3, 6, 9 of 12) scaled to the depth."""
  return tuple(sorted({min(max(1, round(depth * f)), depth - 1) for f in (0.25, 0.5, 0.75)}))


class DynamicViTMethod(Method):
  name = 'dynamic_vit'
  summary = 'learned predictors drop uninformative tokens in stages'
  model_class = DynamicViT
  legacy_fields = {f'model.{k}': f'model.dynamic_vit.{k}'
                   for k in ('keep_ratio', 'prune_layers', 'gumbel_noise', 'selector')} | {
                       f'dynamic_vit.{k}': f'loss.dynamic_vit.{k}'
                       for k in ('ratio_weight', 'distill_weight', 'token_weight')}
  distillation_fields = ('distill_weight', 'token_weight')

  def defaults(self):
    return ml_collections.ConfigDict(dict(keep_ratio=0.7, prune_layers=(3, 6, 9),
                                          gumbel_noise=True, selector='predictor'))

  def loss_defaults(self):
    return ml_collections.ConfigDict(dict(ratio_weight=2.0, distill_weight=0.5,
                                          token_weight=0.5))

  def model_kwargs(self, f, kw):
    return dict(keep_ratio=f.keep_ratio, prune_layers=tuple(f.prune_layers),
                gumbel_noise=f.gumbel_noise, selector=f.selector)

  def validate(self, config, kw):
    f = self.fields(config.model)
    if not 0.0 < f.keep_ratio <= 1.0:
      fail('model.dynamic_vit.keep_ratio', f.keep_ratio, 'must be in (0, 1]')
    layers = list(f.prune_layers)
    if not layers or layers != sorted(set(layers)) or layers[0] < 1 or layers[-1] >= kw['depth']:
      fail('model.dynamic_vit.prune_layers', tuple(layers),
           f'must be increasing block indices in [1, {kw["depth"] - 1}] (model.depth={kw["depth"]})')
    n = backbone.num_patches(kw)
    counts = keep_counts(n, f.keep_ratio, len(layers))
    if min(counts) < 1:
      fail('model.dynamic_vit.keep_ratio', f.keep_ratio,
           f'keeps {counts} of {n} patch tokens; every stage must keep at least one')
    if f.selector not in ('predictor', 'static'):
      fail('model.dynamic_vit.selector', f.selector, "expected 'predictor' or 'static'")

  def loss_fn(self, config):
    return objective.dynamic_vit_loss(config, self.fields(config.model), self.loss_fields(config))

  def frozen_variables(self, config, params):
    return objective.teacher_variables(config, params)

  def variants(self):
    return (Variant('dynamic_vit', 'DynamicViT', RECIPE),
            Variant('static', 'static selection', RECIPE + ':static', {'selector': 'static'}))

  def budget_knobs(self, kw):
    return [dict(keep_ratio=round(float(k), 3), prune_layers=depth_stages(kw['depth']))
            for k in np.linspace(0.05, 1.0, 96)]

  def macs(self, model, channels=3):
    return flops.dynamic_vit_macs(model, channels)

  def checkpoint_rules(self, model_config):
    """The official DynamicViT predictors (`score_predictor.{s}.in_conv.{0,1}` = LayerNorm,
    Linear; `out_conv.{0,2,4}` = the three Linears) onto `predictor_{s}`."""
    rules = []
    for s in range(len(self.fields(model_config).prune_layers)):
      src, dst = f'score_predictor.{s}.', (f'predictor_{s}',)
      for tn, fn, kind in (('in_conv.0', 'in_norm', 'ln'), ('in_conv.1', 'in_dense', 'dense'),
                           ('out_conv.0', 'out_0', 'dense'), ('out_conv.2', 'out_1', 'dense'),
                           ('out_conv.4', 'out_2', 'dense')):
        rules += [(f'{src}{tn}.weight', dst + (fn, 'scale' if kind == 'ln' else 'kernel'),
                   (lambda w: w) if kind == 'ln' else (lambda w: w.T)),
                  (f'{src}{tn}.bias', dst + (fn, 'bias'), lambda w: w)]
    return rules

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.dynamic_vit import viz  # drawing (PIL, data) only when drawn
    return viz.figures(predictor, out, num_images)


class PooledViTMethod(Method):
  name = 'pooled_vit'
  summary = "DynamicViT's structural baseline: 2x2 pooling of the token grid at one block"
  model_class = PooledViT
  legacy_fields = {'model.pool_layer': 'model.pooled_vit.pool_layer'}
  distillation_fields = ('distill_weight',)

  def defaults(self):
    return ml_collections.ConfigDict(dict(pool_layer=6))

  def loss_defaults(self):
    return ml_collections.ConfigDict(dict(distill_weight=0.5))

  def model_kwargs(self, f, kw):
    return dict(pool_layer=f.pool_layer)

  def validate(self, config, kw):
    grid = kw['image_size'] // kw['patch_size']
    if grid % 2:
      fail('model.image_size', kw['image_size'], f'2x2 pooling needs an even patch grid, not {grid}')
    pool_layer = self.fields(config.model).pool_layer
    if not 0 <= pool_layer < kw['depth']:
      fail('model.pooled_vit.pool_layer', pool_layer,
           f'must be a block index in [0, {kw["depth"] - 1}]')

  def loss_fn(self, config):
    return objective.distilled_classification_loss(config, self.loss_fields(config))

  def frozen_variables(self, config, params):
    return objective.teacher_variables(config, params)

  def variants(self):
    return (Variant('pooled_vit', '2x2 pooling', RECIPE + ':pool'),)

  def budget_knobs(self, kw):
    return [dict(pool_layer=layer) for layer in range(kw['depth'])]

  def macs(self, model, channels=3):
    return flops.pooled_vit_macs(model, channels)


METHODS = (DynamicViTMethod(), PooledViTMethod())
