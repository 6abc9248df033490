"""Analytic multiply-accumulate (MAC) counts: the "GFLOPs" of the token-sparsity papers.

Only matrix products are counted (patch embedding, q/k/v, QK^T, AV, output projection, MLP,
heads); LayerNorm, softmax, GELU and additions are left out, as in the papers. With this
convention DeiT-Ti/S/B at 224 px give 1.25 / 4.60 / 17.56 GMACs.

Method models count their own stages with `block_macs` at each stage's token count, so every
method is measured with the same ruler. `xla_flops` reads XLA's own count as a cross-check
(XLA counts 2 FLOPs per MAC, plus elementwise work).
"""
from __future__ import annotations

from typing import Any, Callable

import jax

from tokensparse.models.vit import ViT, per_layer


def block_macs(tokens: int, width: int, num_heads: int, head_dim: int, mlp_dim: int) -> dict:
  """MACs of one pre-LN encoder block over `tokens` tokens, split by part."""
  inner = num_heads * head_dim
  return {
      'qkv': 3 * tokens * width * inner,
      'attn': 2 * tokens * tokens * inner,   # QK^T and AV
      'proj': tokens * inner * width,
      'mlp': 2 * tokens * width * mlp_dim,
  }


def add(total: dict, part: dict) -> dict:
  for k, v in part.items():
    total[k] = total.get(k, 0) + v
  return total


def patch_embed_macs(model: ViT, channels: int = 3) -> int:
  return model.frames * model.num_patches * model.patch_size ** 2 * channels * model.width


def head_macs(model: ViT) -> int:
  return model.width * model.num_classes * (2 if model.distilled else 1)


def vit_macs(model: ViT, channels: int = 3, tokens_per_block: list[int] | None = None) -> dict:
  """MACs of a dense ViT for one image, by part, with 'total'.

  `tokens_per_block` overrides the token count each block sees (methods that drop tokens).
  """
  tokens = model.num_prefix + model.frames * model.num_patches
  counts = {'patch_embed': patch_embed_macs(model, channels)}
  for i in range(model.depth):
    n = tokens if tokens_per_block is None else tokens_per_block[i]
    head_dim = per_layer(model.head_dim, i) or model.width // model.num_heads
    add(counts, block_macs(n, model.width, model.num_heads, head_dim,
                           per_layer(model.mlp_dim, i)))
  counts['head'] = head_macs(model)
  counts['total'] = sum(counts.values())
  return counts


def xla_flops(fn: Callable[..., Any], *args) -> float:
  """FLOPs that XLA's cost analysis reports for jit(fn)(*args) (2 per MAC + elementwise)."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returns one dict per device
    analysis = analysis[0]
  return float(analysis['flops'])


def predictor_macs(tokens: int, width: int) -> int:
  """DynamicViT predictor: Dense C->C, C->C/2, C/2->C/4, C/4->2 per token."""
  return tokens * (width * width + width * (width // 2) + (width // 2) * (width // 4)
                   + (width // 4) * 2)


def dynamic_vit_macs(model, channels: int = 3) -> dict:
  """MACs of DynamicViT at inference: each block at its stage's token count, predictors included
  (they score the tokens still present before each pruning block)."""
  n, p = model.num_patches, model.num_prefix
  kept, tokens_per_block, pred = n, [], 0
  for i in range(model.depth):
    if i in model.prune_layers:
      s = list(model.prune_layers).index(i)
      if model.selector != 'static':  # static selection reads stored scores: no matmuls
        pred += predictor_macs(kept, model.width)
      kept = model.counts[s]
    tokens_per_block.append(p + kept)
  counts = vit_macs(model, channels, tokens_per_block)
  counts['predictors'] = pred
  counts['total'] += pred
  return counts


def token_learner_module_macs(positions: int, width: int, tokens: int, version: str = 'v1.1',
                              bottleneck: int = 64) -> int:
  """One TokenLearner on one image/frame: the maps (MLP, or four 3x3 convs for v1.0) and the
  weighted sums of the inputs."""
  if version == 'v1.0':
    maps = positions * 9 * (width * tokens + 3 * tokens * tokens)
  else:
    maps = positions * (width * bottleneck + bottleneck * tokens)
  return maps + tokens * positions * width


def token_fuser_macs(positions: int, width: int, tokens: int, bottleneck: int = 64) -> int:
  """One TokenFuser on one image/frame: token mixing, mixing weights, map back to positions."""
  return (width * tokens * tokens + positions * (width * bottleneck + bottleneck * tokens)
          + positions * tokens * width)


def token_learner_macs(model, channels: int = 3) -> dict:
  """MACs of TokenLearnerViT for one image (clip): blocks before the learner at all tokens,
  later blocks at S (T*S) learned tokens, learner (and fuser) modules included."""
  p, t, n, s = model.num_prefix, model.frames, model.num_patches, model.num_learned_tokens
  tokens_per_block = [p + t * (n if i < model.learner_layer else s) for i in range(model.depth)]
  counts = vit_macs(model, channels, tokens_per_block)
  learner = t * token_learner_module_macs(n, model.width, s, model.learner_version,
                                          model.learner_bottleneck)
  later = model.depth - model.learner_layer
  counts['token_learner'] = learner * (later if model.fuser else 1)
  if model.fuser:
    counts['token_fuser'] = later * t * token_fuser_macs(n, model.width, s,
                                                         model.learner_bottleneck)
  counts['total'] = sum(v for k, v in counts.items() if k != 'total')
  return counts


def pooled_vit_macs(model, channels: int = 3) -> dict:
  """PooledViT: a quarter of the patch tokens from `pool_layer` on."""
  n, p = model.num_patches, model.num_prefix
  return vit_macs(model, channels,
                  [p + (n if i < model.pool_layer else n // 4) for i in range(model.depth)])


def model_macs(model, channels: int = 3) -> dict:
  """MACs by part (with 'total') of any tokensparse model, in its inference mode."""
  from tokensparse.models.dynamic_vit import DynamicViT, PooledViT  # pylint: disable=g-import-not-at-top
  from tokensparse.models.token_learner import TokenLearnerViT  # pylint: disable=g-import-not-at-top
  for cls, fn in ((DynamicViT, dynamic_vit_macs), (PooledViT, pooled_vit_macs),
                  (TokenLearnerViT, token_learner_macs)):
    if isinstance(model, cls):
      return fn(model, channels)
  return vit_macs(model, channels)


def eventful_macs(model, tokens: int | None = None, channels: int = 3) -> dict:
  """MACs of one EventfulViT frame after the first, with `tokens` (default: the capacity)
  recomputed by every gate. Counted as the rest of this module (matrix products), plus the
  gates' error norms (one multiply-add per element of the compared tensor): qkv, projection
  and MLP on the selected tokens; QK^T dense (tokenwise) or its updated rows and columns
  (2NMd per head); AV dense, or the two delta products of the full variant (2NMd per head)."""
  n, m = model.num_tokens, tokens if tokens is not None else model.m
  d = model.width
  counts = {'patch_embed': patch_embed_macs(model, channels), 'head': head_macs(model)}
  for i in range(model.depth):
    inner = model.num_heads * (per_layer(model.head_dim, i) or d // model.num_heads)
    mlp = per_layer(model.mlp_dim, i)
    part = {'gates': n * d + n * inner + n * d,
            'qkv': 3 * m * d * inner,
            'qk': n * n * inner if model.variant == 'tokenwise' else 2 * n * m * inner,
            'av': 2 * n * m * inner if model.variant == 'full' else n * n * inner,
            'proj': m * inner * d,
            'mlp': 2 * m * d * mlp}
    add(counts, part)
  counts['total'] = sum(v for k, v in counts.items() if k != 'total')
  return counts
