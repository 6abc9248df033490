"""Analytic multiply-accumulate (MAC) counts: the "GFLOPs" of the token-sparsity papers.

Only matrix products are counted (patch embedding, q/k/v, QK^T, AV, output projection, MLP,
heads); LayerNorm, softmax, GELU and additions are left out, as in the papers. With this
convention DeiT-Ti/S/B at 224 px give 1.25 / 4.60 / 17.56 GMACs.

Method models count their own stages with `vit_macs(model, tokens_per_block=...)` (each
method's `macs` in tokensparse/methods/<name>/), so every method is measured with the same
ruler; `tokensparse.methods.macs(model)` asks the model's method. `xla_flops` reads XLA's own
count as a cross-check (XLA counts 2 FLOPs per MAC, plus elementwise work).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

from tokensparse.backbone.vit import ViT, per_layer


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
  """The patch (tubelet) embedding of one input."""
  tubelet = model.tubelet if model.factorised else 1
  return (model.steps * model.frames * model.num_patches * tubelet * model.patch_size ** 2
          * channels * model.width)


def temporal_macs(model: ViT) -> dict:
  """The temporal blocks of a factorised model (over its time steps + prefix), by part."""
  counts = {}
  if model.factorised:
    head_dim = per_layer(model.head_dim, model.depth - 1) or model.width // model.num_heads
    mlp_dim = per_layer(model.mlp_dim, model.depth - 1)
    for _ in range(model.temporal_depth):
      add(counts, {f'temporal_{k}': v for k, v in block_macs(
          model.num_prefix + model.steps, model.width, model.num_heads, head_dim,
          mlp_dim).items()})
  return counts


def head_macs(model: ViT) -> int:
  return model.width * model.num_classes * (2 if model.distilled else 1)


def attention_macs(model: ViT, i: int, inner: int) -> dict:
  """QK^T + AV and the relative position terms of block i of a ViTDet-style model over its
  full token grid: a windowed block attends inside ceil(gh/w) * ceil(gw/w) padded windows of
  w*w tokens; relative positions cost (gh + gw) (or 2w) MACs per query and channel."""
  (gh, gw), w = model.grid, model.window_size if i not in model.global_blocks else 0
  if w:
    windows = -(-gh // w) * -(-gw // w)
    out = {'attn': 2 * windows * w ** 4 * inner}
    rel = windows * w * w * 2 * w * inner
  else:
    out = {'attn': 2 * (gh * gw) ** 2 * inner}
    rel = gh * gw * (gh + gw) * inner
  if model.rel_pos:
    out['rel_pos'] = rel
  return out


def vit_macs(model: ViT, channels: int = 3,
             tokens_per_block: Sequence[int | tuple[int, int]] | None = None) -> dict:
  """MACs of a dense ViT for one image (one clip), by part, with 'total'.

  `tokens_per_block` overrides the token count each block sees (methods that drop tokens):
  an int per block, or (tokens of the attention half, tokens of the MLP half) for methods
  that change the tokens inside a block. A factorised model's spatial blocks run once per
  time step (`tokens_per_block` counts one step), then its temporal blocks.
  """
  tokens = model.num_prefix + model.frames * model.num_patches
  counts = {'patch_embed': patch_embed_macs(model, channels)}
  for i in range(model.depth):
    n = tokens if tokens_per_block is None else tokens_per_block[i]
    n_attn, n_mlp = n if isinstance(n, tuple) else (n, n)
    head_dim = per_layer(model.head_dim, i) or model.width // model.num_heads
    mlp_dim = per_layer(model.mlp_dim, i)
    attn = block_macs(n_attn, model.width, model.num_heads, head_dim, mlp_dim)
    attn['mlp'] = block_macs(n_mlp, model.width, model.num_heads, head_dim, mlp_dim)['mlp']
    if model.window_size or model.rel_pos:   # ViTDet options (no prefix, all tokens)
      attn.update(attention_macs(model, i, model.num_heads * head_dim))
    add(counts, {k: v * model.steps for k, v in attn.items()})
  add(counts, temporal_macs(model))
  counts['head'] = head_macs(model)
  counts['total'] = sum(counts.values())
  return counts


def xla_flops(fn: Callable[..., Any], *args) -> float:
  """FLOPs that XLA's cost analysis reports for jit(fn)(*args) (2 per MAC + elementwise)."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returns one dict per device
    analysis = analysis[0]
  return float(analysis['flops'])
