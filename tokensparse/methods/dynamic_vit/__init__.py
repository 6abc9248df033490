"""DynamicViT (Rao et al., NeurIPS 2021) and the paper's baselines at the same budget: static
(input-independent) token selection (`model.selector='static'`) and 2x2 token pooling
(`model.name='pooled_vit'`).

Config: `model.keep_ratio`, `model.prune_layers`, `model.gumbel_noise`, `model.selector`;
loss weights in `config.dynamic_vit` (ratio_weight, distill_weight, token_weight); the dense
`init_from.path` checkpoint is also the frozen teacher.
"""
from __future__ import annotations

import ml_collections

from tokensparse import backbone
from tokensparse.methods.base import Method, fail
from tokensparse.methods.dynamic_vit import flops, objective
from tokensparse.methods.dynamic_vit.model import DynamicViT, PooledViT, keep_counts



class DynamicViTMethod(Method):
  name = 'dynamic_vit'
  summary = 'learned predictors drop uninformative tokens in stages'
  model_class = DynamicViT

  def defaults(self):
    return ml_collections.ConfigDict(dict(keep_ratio=0.7, prune_layers=(3, 6, 9),
                                          gumbel_noise=True, selector='predictor'))

  def model_kwargs(self, m):
    return dict(keep_ratio=m.keep_ratio, prune_layers=tuple(m.prune_layers),
                gumbel_noise=m.get('gumbel_noise', True), selector=m.get('selector', 'predictor'))

  def validate(self, config, kw):
    m = config.model
    if not 0.0 < m.keep_ratio <= 1.0:
      fail('model.keep_ratio', m.keep_ratio, 'must be in (0, 1]')
    layers = list(m.prune_layers)
    if not layers or layers != sorted(set(layers)) or layers[0] < 1 or layers[-1] >= kw['depth']:
      fail('model.prune_layers', tuple(layers),
           f'must be increasing block indices in [1, {kw["depth"] - 1}] (model.depth={kw["depth"]})')
    n = backbone.num_patches(kw)
    counts = keep_counts(n, m.keep_ratio, len(layers))
    if min(counts) < 1:
      fail('model.keep_ratio', m.keep_ratio,
           f'keeps {counts} of {n} patch tokens; every stage must keep at least one')
    if m.get('selector', 'predictor') not in ('predictor', 'static'):
      fail('model.selector', m.selector, "expected 'predictor' or 'static'")

  def loss_fn(self, config):
    return objective.dynamic_vit_loss(config)

  def frozen_variables(self, config, params):
    return objective.teacher_variables(config, params)

  def macs(self, model, channels=3):
    return flops.dynamic_vit_macs(model, channels)

  def checkpoint_rules(self, model_config):
    """The official DynamicViT predictors (`score_predictor.{s}.in_conv.{0,1}` = LayerNorm,
    Linear; `out_conv.{0,2,4}` = the three Linears) onto `predictor_{s}`."""
    rules = []
    for s in range(len(model_config.prune_layers)):
      src, dst = f'score_predictor.{s}.', (f'predictor_{s}',)
      for tn, fn, kind in (('in_conv.0', 'in_norm', 'ln'), ('in_conv.1', 'in_dense', 'dense'),
                           ('out_conv.0', 'out_0', 'dense'), ('out_conv.2', 'out_1', 'dense'),
                           ('out_conv.4', 'out_2', 'dense')):
        rules += [(f'{src}{tn}.weight', dst + (fn, 'scale' if kind == 'ln' else 'kernel'),
                   (lambda w: w) if kind == 'ln' else (lambda w: w.T)),
                  (f'{src}{tn}.bias', dst + (fn, 'bias'), lambda w: w)]
    return rules

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.dynamic_vit import viz  # pylint: disable=g-import-not-at-top
    return viz.figures(predictor, out, num_images)


class PooledViTMethod(Method):
  name = 'pooled_vit'
  summary = "DynamicViT's structural baseline: 2x2 pooling of the token grid at one block"
  model_class = PooledViT

  def defaults(self):
    return ml_collections.ConfigDict(dict(pool_layer=6))

  def model_kwargs(self, m):
    return dict(pool_layer=m.pool_layer)

  def validate(self, config, kw):
    grid = kw['image_size'] // kw['patch_size']
    if grid % 2:
      fail('model.image_size', kw['image_size'], f'2x2 pooling needs an even patch grid, not {grid}')
    if not 0 <= config.model.pool_layer < kw['depth']:
      fail('model.pool_layer', config.model.pool_layer,
           f'must be a block index in [0, {kw["depth"] - 1}]')

  def loss_fn(self, config):
    return objective.distilled_classification_loss(config)

  def frozen_variables(self, config, params):
    return objective.teacher_variables(config, params)

  def macs(self, model, channels=3):
    return flops.pooled_vit_macs(model, channels)


METHODS = (DynamicViTMethod(), PooledViTMethod())
