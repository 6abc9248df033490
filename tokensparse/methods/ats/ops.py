"""ATS's pure functions (Fayyaz et al., ECCV 2022, adaptive token sampling), following the
official code (adaptivetokensampling/ATS, libs/models/transformers/ats_block.py) at batch 1.
Static shapes: an ATS block keeps at most K tokens (K - 1 samples plus the class token); the
sampled set is adaptive, so unused slots are padding, marked invalid and hidden as keys.
Shapes: B batch, N tokens entering the block (prefix first), H heads, d head dimension.

1. Significance: S_j = sum_h A_h[cls, j] * ||v_j|| over the patch tokens j (v of all heads
   concatenated), normalised to sum 1; padding scores 0.
2. Inverse transform sampling: sort S ascending, cumulative sum, normalised as (cdf - cdf_min) /
   (cdf_max - cdf_min) over the valid tokens (so the least significant one sits at 0 and is never
   drawn); K - 1 evenly spaced points from the smallest non-zero normalised value to 1 each pick
   the token whose normalised cdf is nearest (first of equals); repeated picks count once.
3. The block answers only the queries of the sampled tokens: class token first, then the
   sampled tokens in ascending significance, then padding.
With K equal to the input token count this is the official configuration (197 for DeiT-S, every
ATS block sampling 196 points); smaller K is the paper's token budget.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_softmax(logits: jax.Array, valid: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Attention weights with invalid (padding) keys hidden: logits [B, H, N, N], valid [B, N]
  -> [B, H, N, N] float32; row i weights key j by exp(s_ij) G_ij / sum_k exp(s_ik) G_ik with
  G_ij = valid_j for j != i and G_ii = 1, after the row max, smoothed as (a + eps/N) /
  (sum a + eps): the reference's `softmax_with_policy`."""
  n = logits.shape[-1]
  keep = valid.astype(jnp.float32)[:, None, None, :]
  gate = keep + (1.0 - keep) * jnp.eye(n, dtype=jnp.float32)
  logits = logits.astype(jnp.float32)
  a = jnp.exp(logits - logits.max(-1, keepdims=True)) * gate
  return (a + eps / n) / (a.sum(-1, keepdims=True) + eps)


def significance(weights: jax.Array, v: jax.Array, valid: jax.Array,
                 num_prefix: int) -> jax.Array:
  """weights [B, H, N, N], v [B, N, H, d] (padding rows zero), valid [B, N] -> the normalised
  scores of the patch tokens [B, N - p] (float32; 0 for padding)."""
  b, n = v.shape[:2]
  v_norm = jnp.linalg.norm(v.reshape(b, n, -1).astype(jnp.float32), axis=-1)      # [B, N]
  s = (weights[:, :, 0].astype(jnp.float32).sum(axis=1) * v_norm)[:, num_prefix:]
  s = jnp.where(valid[:, num_prefix:], s, 0.0)
  return s / jnp.maximum(s.sum(axis=-1, keepdims=True), 1e-30)


def sample(scores: jax.Array, valid: jax.Array, samples: int) -> tuple[jax.Array, jax.Array]:
  """Inverse transform sampling: scores [B, n] (normalised, 0 for padding), valid [B, n] ->
  (picked token positions [B, samples] in ascending significance, distinct ones first;
  their validity [B, samples]); a position repeats where a sample was drawn twice."""
  order = jnp.argsort(jnp.where(valid, scores, -1.0), axis=-1, stable=True)  # padding first
  s = jnp.take_along_axis(scores, order, axis=-1)
  ok = jnp.take_along_axis(valid, order, axis=-1)
  cdf = jnp.cumsum(s, axis=-1)
  lo = jnp.min(jnp.where(ok, cdf, jnp.inf), axis=-1, keepdims=True)
  span = cdf[:, -1:] - lo
  # One valid token (or all of equal cdf): it is the only one to draw.
  norm = jnp.where(ok, jnp.where(span > 0, (cdf - lo) / jnp.where(span > 0, span, 1.0), 1.0), 0.0)
  start = jnp.min(jnp.where(norm > 0, norm, jnp.inf), axis=-1, keepdims=True)   # [B, 1]
  steps = jnp.arange(samples, dtype=jnp.float32) / max(samples - 1, 1)
  ys = start + steps * (1.0 - start)                                            # [B, samples]
  picks = jnp.argmin(jnp.abs(ys[:, :, None] - norm[:, None, :]), axis=-1)       # [B, samples]
  picks = jnp.sort(picks, axis=-1)
  repeat = jnp.concatenate([picks[:, 1:] == picks[:, :-1],
                            jnp.zeros_like(picks[:, :1], bool)], axis=-1)
  n = scores.shape[-1]
  picks = jnp.sort(jnp.where(repeat, n, picks), axis=-1)       # distinct picks, then repeats
  keep = picks < n
  positions = jnp.take_along_axis(order, jnp.minimum(picks, n - 1), axis=-1)
  return positions, keep
