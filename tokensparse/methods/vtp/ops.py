"""VTP's pure functions: channel scaling by importance scores and the L1 penalty.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def scale_channels(x: jax.Array, scores: jax.Array) -> jax.Array:
  """VTP's soft channel gate: x [..., C] (or [..., H, d]) times scores [C] ([H, d])."""
  return x * scores.astype(x.dtype)


def l1_penalty(scores, weight: float) -> jax.Array:
  """weight * sum |s| over every leaf of a score tree; its gradient is weight * sign(s)."""
  return weight * sum(jnp.abs(s).sum() for s in jax.tree.leaves(scores))
