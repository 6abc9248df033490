"""DynamicViT's pure functions: masked attention softmax, Gumbel keep decisions, the
predictor's masked mean and the top-k keep indices. Shapes: B batch, N tokens, H heads.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def softmax_with_policy(logits: jax.Array, policy: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Attention softmax in which dropped tokens are hidden as keys (DynamicViT training).

  logits: [B, H, N, N] (already scaled), policy: [B, N] with 1 = kept, 0 = dropped
  -> [B, H, N, N] float32. Row i attends to key j with weight
  exp(s_ij) G_ij / sum_k exp(s_ik) G_ik, where G_ij = policy_j for j != i and G_ii = 1 (a token
  always sees itself), computed after subtracting the row max and smoothed as
  (a + eps/N) / (sum a + eps), exactly as the reference implementation.
  """
  n = logits.shape[-1]
  keep = policy.astype(jnp.float32)[:, None, None, :]                   # [B, 1, 1, N]
  eye = jnp.eye(n, dtype=jnp.float32)
  gate = keep + (1.0 - keep) * eye                                       # [B, 1, N, N]
  logits = logits.astype(jnp.float32)
  a = jnp.exp(logits - logits.max(-1, keepdims=True)) * gate
  return (a + eps / n) / (a.sum(-1, keepdims=True) + eps)


def gumbel_keep_decision(log_probs: jax.Array, rng: jax.Array, tau: float = 1.0) -> jax.Array:
  """Hard straight-through Gumbel-softmax keep decision.

  log_probs: [B, N, 2] (column 0 = keep, as in the reference code) -> [B, N] in {0, 1}. The
  forward value is the one-hot argmax of (log_probs + Gumbel noise) / tau; the gradient is that
  of the soft sample.
  """
  noise = jax.random.gumbel(rng, log_probs.shape, jnp.float32)
  soft = jax.nn.softmax((log_probs.astype(jnp.float32) + noise) / tau, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(soft, -1), 2, dtype=soft.dtype)
  # (soft - stop_gradient(soft)) is exactly 0 forward, so decisions are exact 0/1.
  return (hard + (soft - jax.lax.stop_gradient(soft)))[..., 0]


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over tokens weighted by a keep mask. x: [B, N, C], mask: [B, N] -> [B, 1, C]."""
  m = mask.astype(x.dtype)[..., None]
  return (x * m).sum(1, keepdims=True) / m.sum(1, keepdims=True)


def top_k_keep(scores: jax.Array, k: int) -> jax.Array:
  """Indices of the k highest scores per row, in descending score order. [B, N] -> [B, k]."""
  return jax.lax.top_k(scores, k)[1]
