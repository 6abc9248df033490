"""Model factory: `build(config.model)` returns the Flax module named by `model.name`.

The backbone fields (`variant` or width/depth/num_heads/mlp_dim, patch_size, image_size,
num_classes, ...) are shared by every method; a method adds its own fields under its name.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from tokensparse.models.dynamic_vit import DynamicViT, PooledViT
from tokensparse.models.token_learner import TokenLearnerViT
from tokensparse.models.vit import ViT, parse_variant
from tokensparse.models.vtp import VTPViT

BACKBONE_FIELDS = ('num_classes', 'image_size', 'patch_size', 'width', 'depth', 'num_heads',
                   'mlp_dim', 'head_dim', 'attn_scale', 'distilled', 'dropout', 'attn_dropout',
                   'droppath', 'classifier', 'num_frames')
NAMES = ('vit', 'dynamic_vit', 'pooled_vit', 'token_learner', 'vtp')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def backbone_kwargs(model_config: Any) -> dict[str, Any]:
  """ViT keyword arguments from a model config: the variant first, explicit fields override."""
  cfg = dict(model_config)
  kwargs = parse_variant(cfg['variant']) if cfg.get('variant') else {}
  for name in BACKBONE_FIELDS:
    if cfg.get(name) is not None:
      kwargs[name] = cfg[name]
  for name in ('mlp_dim', 'head_dim'):  # per-layer widths arrive as lists from configs
    if isinstance(kwargs.get(name), list):
      kwargs[name] = tuple(kwargs[name])
  dtype = cfg.get('dtype', 'float32')
  if dtype not in DTYPES:
    raise ValueError(f'model.dtype={dtype!r}: expected one of {sorted(DTYPES)}')
  kwargs['dtype'] = DTYPES[dtype]
  missing = [f for f in ('num_classes', 'image_size', 'patch_size', 'width', 'depth',
                         'num_heads', 'mlp_dim') if f not in kwargs]
  if missing:
    raise ValueError(f'model config lacks {", ".join("model." + m for m in missing)} '
                     '(set model.variant, e.g. "S/16", or the fields themselves)')
  return kwargs


def learner_layer(at: float, depth: int) -> int:
  """The block before which TokenLearner runs: `at` is a fraction of the depth (0.5 of 12
  blocks -> 6, i.e. after 6 blocks)."""
  return int(at * depth + 0.5)


def build(model_config: Any):
  """Flax module for `model_config.name` (one of NAMES)."""
  name = model_config.get('name', 'vit')
  if name == 'vit':
    return ViT(**backbone_kwargs(model_config))
  if name == 'dynamic_vit':
    return DynamicViT(**backbone_kwargs(model_config), keep_ratio=model_config.keep_ratio,
                      prune_layers=tuple(model_config.prune_layers),
                      gumbel_noise=model_config.get('gumbel_noise', True),
                      selector=model_config.get('selector', 'predictor'))
  if name == 'pooled_vit':
    return PooledViT(**backbone_kwargs(model_config), pool_layer=model_config.pool_layer)
  if name == 'vtp':
    return VTPViT(**backbone_kwargs(model_config))
  if name == 'token_learner':
    kw = backbone_kwargs(model_config)
    tl = model_config.token_learner
    return TokenLearnerViT(**kw, num_learned_tokens=tl.num_tokens,
                           learner_layer=learner_layer(tl.at, kw['depth']),
                           learner_version=tl.get('version', 'v1.1'),
                           learner_reduce=tl.get('reduce', 'sum'),
                           learner_bottleneck=tl.get('bottleneck', 64),
                           fuser=tl.get('fuser', False))
  raise ValueError(f'model.name={name!r}: unknown model; available: {", ".join(NAMES)}')
