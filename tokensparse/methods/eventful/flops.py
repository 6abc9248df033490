"""Operations of one Eventful frame or video step (tokensparse.flops rules, plus the gates'
error norms), and of a whole clip of a video model."""
from __future__ import annotations

from tokensparse.flops import (add, attention_macs, head_macs, patch_embed_macs, temporal_macs,
                               vit_macs)
from tokensparse.backbone.vit import per_layer


def eventful_macs(model, tokens: int | None = None, channels: int = 3) -> dict:
  """MACs of one EventfulViT frame after the first, with `tokens` (default: the capacity)
  recomputed by every gate. Counted as the rest of this module (matrix products), plus the
  gates' error norms (one multiply-add per element of the compared tensor): qkv, projection
  and MLP on the selected tokens; QK^T dense (tokenwise) or its updated rows and columns
  (2NMd per head); AV dense, or the two delta products of the full variant (2NMd per head).
  ViTDet's windowed blocks recompute their windows' attention densely; relative position
  terms are recomputed for every query each frame (as the official code does)."""
  n, m = model.num_tokens, tokens if tokens is not None else model.m
  d = model.width
  counts = {'patch_embed': patch_embed_macs(model, channels) // model.steps}
  if not model.factorised:
    counts['head'] = head_macs(model)
  for i in range(model.depth):
    inner = model.num_heads * (per_layer(model.head_dim, i) or d // model.num_heads)
    mlp = per_layer(model.mlp_dim, i)
    part = {'gates': n * d + n * inner + n * d,
            'qkv': 3 * m * d * inner,
            'qk': n * n * inner if model.variant == 'tokenwise' else 2 * n * m * inner,
            'av': 2 * n * m * inner if model.variant == 'full' else n * n * inner,
            'proj': m * inner * d,
            'mlp': 2 * m * d * mlp}
    if model.window_size or model.rel_pos:
      dense = attention_macs(model, i, inner)
      if model.window_size and i not in model.global_blocks:
        part['qk'] = part['av'] = dense['attn'] // 2
      if 'rel_pos' in dense:
        part['rel_pos'] = dense['rel_pos']
    add(counts, part)
  counts['total'] = sum(v for k, v in counts.items() if k != 'total')
  return counts


def eventful_clip_macs(model, tokens: int | None = None, channels: int = 3) -> dict:
  """A video model's MACs per clip: the first step dense, each later step as
  `eventful_macs`, then the dense temporal encoder and head; by part, with 'total'."""
  dense = vit_macs(model, channels)
  first = {k: v // model.steps for k, v in dense.items()
           if k not in ('total', 'head') and not k.startswith('temporal_')}
  later = eventful_macs(model, tokens, channels)
  counts = {'first_step': sum(first.values()),
            'later_steps': (model.steps - 1) * later['total'],
            **temporal_macs(model), 'head': head_macs(model)}
  counts['total'] = sum(counts.values())
  return counts
