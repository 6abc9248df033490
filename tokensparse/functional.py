"""Pure array functions that the backbone and the token-sparsity methods are made of.

Every function here is a plain function of arrays (no Flax state), so it can be tested alone
against a numpy reference and reused by any model file. Shapes use B = batch, N = tokens,
H = heads, d = head dimension, D = width.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_weights(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
  """Softmax attention probabilities.

  q: [B, N, H, d], k: [B, M, H, d] -> [B, H, N, M]. The softmax runs in float32 whatever the
  input dtype, then is cast back, as the reference implementations do for bf16/fp16 inference.
  """
  logits = jnp.einsum('bnhd,bmhd->bhnm', q, k) * scale
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)


def attend(weights: jax.Array, v: jax.Array) -> jax.Array:
  """Weighted sum of values. weights: [B, H, N, M], v: [B, M, H, d] -> [B, N, H, d]."""
  return jnp.einsum('bhnm,bmhd->bnhd', weights, v)


def drop_path(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Stochastic depth: zero whole residual branches per example and rescale the rest.

  x: [B, ...] -> [B, ...]. With rate 0 or no rng (evaluation) x is returned unchanged.
  """
  if rate == 0.0 or rng is None:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def resample_posemb(posemb: jax.Array, num_prefix: int, new_grid: tuple[int, int]) -> jax.Array:
  """Bilinearly resample a learned position embedding to another patch grid.

  posemb: [1, num_prefix + h*w, D] -> [1, num_prefix + H*W, D]. The prefix rows (class and
  distillation tokens) are kept as they are; the grid part must be square in the source.
  """
  prefix, grid = posemb[:, :num_prefix], posemb[:, num_prefix:]
  n = grid.shape[1]
  side = int(round(n ** 0.5))
  if side * side != n:
    raise ValueError(f'position embedding has {n} grid rows, not a square grid')
  if (side, side) == tuple(new_grid):
    return posemb
  grid = grid.reshape(1, side, side, -1)
  grid = jax.image.resize(grid, (1, *new_grid, grid.shape[-1]), method='bilinear')
  return jnp.concatenate([prefix, grid.reshape(1, new_grid[0] * new_grid[1], -1)], axis=1)
