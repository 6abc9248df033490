"""TokenLearner's pure functions: spatial weights of the learned tokens, pooling, and
TokenFuser's map back to the input positions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def learned_token_weights(logits: jax.Array, version: str) -> jax.Array:
  """Spatial weights of the learned tokens. logits: [B, N, S] (one map per learned token over
  the N input positions) -> weights [B, S, N]: 'v1.0' sigmoid per position (the paper),
  'v1.1' softmax over the N positions (Scenic's default). Computed in float32."""
  w = jnp.swapaxes(logits, -1, -2).astype(jnp.float32)
  if version == 'v1.0':
    return jax.nn.sigmoid(w)
  if version == 'v1.1':
    return jax.nn.softmax(w, axis=-1)
  raise ValueError(f"TokenLearner version {version!r}: expected 'v1.0' or 'v1.1'")


def pool_tokens(weights: jax.Array, x: jax.Array, reduce: str = 'sum') -> jax.Array:
  """Learned tokens as weighted sums of the inputs: weights [B, S, N], x [B, N, D] -> [B, S, D].
  `reduce='mean'` divides by N (the paper's "average"; Scenic sums)."""
  out = jnp.einsum('bsn,bnd->bsd', weights.astype(x.dtype), x)
  return out / x.shape[1] if reduce == 'mean' else out


def fuse_tokens(tokens: jax.Array, mix: jax.Array) -> jax.Array:
  """TokenFuser's map back to the input positions: tokens [B, S, D], mix [B, N, S] (sigmoid
  weights per position) -> [B, N, D]."""
  return jnp.einsum('bsd,bns->bnd', tokens, mix.astype(tokens.dtype))
