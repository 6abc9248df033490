"""ToMe on the shared backbone: in every block, after the attention half, merge r tokens by
bipartite soft matching on the keys (averaged over heads), then run the MLP half on the
remaining tokens. Sizes (patches per token) weight the merges and, with proportional
attention, add log(size) to the attention logits of every key. Prefix tokens (class,
distillation) are never merged. No new parameters: any backbone checkpoint runs as is, and
trains with the ordinary trainer.

aux: 'size' [B, T_final] patches per final token; with `trace_source`, 'source'
[B, T_final, N0] (which input tokens each final token holds).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from tokensparse.backbone.vit import ViT
from tokensparse.methods.tome import ops


class ToMeViT(ViT):
  """The backbone with token merging in every block (see the module docstring)."""
  merges: Sequence[int] = ()      # r per block; () merges nothing
  prop_attn: bool = True
  trace_source: bool = False

  @property
  def schedule(self) -> tuple[int, ...]:
    return tuple(self.merges) + (0,) * (self.depth - len(self.merges))

  def __call__(self, images: jax.Array, train: bool = False):
    deterministic = not train
    x = self.embed(images, deterministic)
    b, t, _ = x.shape
    p = self.num_prefix
    size = jnp.ones((b, t, 1), jnp.float32)
    source = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32), (b, t, t)) \
        if self.trace_source else None
    merged = False  # while nothing is merged every size is 1: no logit bias (exactly dense)
    for block, r in zip(self.blocks, self.schedule):
      bias = ops.size_bias(size) if self.prop_attn and merged else None
      if r == 0:
        x = block(x, deterministic, bias=bias)
        continue
      x, info = block.attend(x, deterministic, with_info=True, bias=bias)
      matched = ops.matching(info['k'].mean(axis=2), r, p)     # keys [B, T, H, d] -> [B, T, d]
      x, size, source = ops.merge_weighted(x, size, matched, p, source)
      merged = True
      x = block.feed_forward(x, deterministic)
    aux = {'size': size[..., 0]}
    if source is not None:
      aux['source'] = source
    return self.finish(x, aux)
