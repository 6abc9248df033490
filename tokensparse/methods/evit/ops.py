"""EViT's pure function (Liang et al., ICLR 2022): keep the patch tokens the class token
attends to most and fuse the rest into one token weighted by that attention."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from tokensparse.functional import gather_tokens


def kept_count(tokens: int, keep_rate: float) -> int:
  """Patch tokens kept of `tokens` (the fused token of an earlier stage counts as one):
  ceil(keep_rate * tokens), as the reference code."""
  return math.ceil(keep_rate * tokens)


def class_attention(weights: jax.Array, num_prefix: int) -> jax.Array:
  """The class token's attention to the other tokens, averaged over heads:
  weights [B, H, T, T] -> [B, T - num_prefix] (float32)."""
  return weights[:, :, 0, num_prefix:].astype(jnp.float32).mean(axis=1)


def keep_attentive(x: jax.Array, cls_attn: jax.Array, keep: int, num_prefix: int,
                   fuse: bool = True) -> tuple[jax.Array, jax.Array]:
  """x [B, p + n, C], cls_attn [B, n] -> (x' [B, p + keep (+ 1 fused), C], kept [B, keep]).

  The `keep` tokens with the highest class attention stay (in descending attention order,
  after the prefix); with `fuse`, the others are summed into one token weighted by their
  class attention (not renormalised, as in the reference) and appended."""
  p = num_prefix
  tokens = x[:, p:]
  _, kept = lax.top_k(cls_attn, keep)
  parts = [x[:, :p], gather_tokens(tokens, kept)]
  if fuse:
    dropped = 1.0 - jax.nn.one_hot(kept, tokens.shape[1], dtype=jnp.float32).sum(axis=1)
    w = (cls_attn * dropped).astype(x.dtype)
    parts.append(jnp.einsum('bn,bnc->bc', w, tokens)[:, None])
  return jnp.concatenate(parts, axis=1), kept
