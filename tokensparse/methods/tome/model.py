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

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from tokensparse import functional as F
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
    x = self.embed(images, not train)
    b, t, _ = x.shape
    p, rs = self.num_prefix, self.schedule
    source = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32), (b, t, t)) \
        if self.trace_source else None
    # While nothing is merged every size is 1: no logit bias (exactly dense). carry: (size,
    # source, merged yet).
    carry = (jnp.ones((b, t, 1), jnp.float32), source, False)

    def attention_fn(i, carry):
      size, _, merged = carry
      if not (self.prop_attn and merged):
        return None
      return functools.partial(F.dot_product_attention, bias=ops.size_bias(size))

    def merge(i, x, info, carry):
      if rs[i] == 0:
        return x, carry
      size, source, _ = carry
      matched = ops.matching(info['k'].mean(axis=2), rs[i], p)  # keys [B, T, H, d] -> [B, T, d]
      x, size, source = ops.merge_weighted(x, size, matched, p, source)
      return x, (size, source, True)

    x, (size, source, _) = self.run_blocks(x, not train, carry, after_attention=merge,
                                           attention_fn=attention_fn)
    aux = {'size': size[..., 0]}
    if source is not None:
      aux['source'] = source
    return self.finish(x, aux)
