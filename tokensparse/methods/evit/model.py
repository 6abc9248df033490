"""EViT on the shared backbone: at each block of `layers`, after the attention half, keep the
ceil(keep_rate * n) patch tokens the class token attends to most (averaged over heads) and,
with `fuse`, fuse the others into one token weighted by that attention; the MLP half and
later blocks see the fewer tokens. No new parameters: runs off the shelf on any checkpoint
with a class token, and fine-tunes with the ordinary trainer.

aux: 'kept_indices' per reorganising block, the original patch positions of the kept tokens
[B, k]; a fused token kept from an earlier block is marked -s, s the reorganisation (1, 2, ...)
that made it, so two fused tokens stay apart.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from tokensparse.backbone.vit import ViT
from tokensparse.functional import gather_tokens
from tokensparse.methods.evit import ops


class EViT(ViT):
  """The backbone with EViT's token reorganisation (see the module docstring)."""
  keep_rate: float = 0.7
  layers: Sequence[int] = (3, 6, 9)
  fuse: bool = True

  def counts(self) -> list[tuple[int, int]]:
    """(tokens of the attention half, tokens of the MLP half) per block."""
    p, n = self.num_prefix, self.frames * self.num_patches
    out = []
    for i in range(self.depth):
      before = n
      if i in self.layers:
        k = ops.kept_count(n, self.keep_rate)
        if k < n:
          n = k + int(self.fuse)
      out.append((p + before, p + n))
    return out

  def __call__(self, images: jax.Array, train: bool = False):
    x = self.embed(images, not train)
    b, p = x.shape[0], self.num_prefix
    kept_indices = []

    def reorganise(i, x, info, positions):
      n = x.shape[1] - p
      k = ops.kept_count(n, self.keep_rate)
      if i not in self.layers or k >= n:
        return x, positions
      x, kept = ops.keep_attentive(x, ops.class_attention(info['weights'], p), k, p, self.fuse)
      positions = gather_tokens(positions, kept)
      kept_indices.append(positions)
      if self.fuse:  # the token fused at the s-th reorganisation is marked -s
        mark = -len(kept_indices)
        positions = jnp.concatenate([positions, jnp.full((b, 1), mark, positions.dtype)], axis=1)
      return x, positions

    positions = jnp.broadcast_to(jnp.arange(x.shape[1] - p), (b, x.shape[1] - p))
    x, _ = self.run_blocks(x, not train, positions, after_attention=reorganise)
    return self.finish(x, {'kept_indices': kept_indices})
