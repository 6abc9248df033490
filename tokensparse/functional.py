"""Pure array functions shared by the backbone and every method: attention, stochastic depth,
position-embedding resampling, token gathers and frame reshapes. A method's own math lives in
`tokensparse/methods/<name>/ops.py`.

Every function here is a plain function of arrays (no Flax state), so it can be tested alone
against a numpy reference. Shapes use B = batch, N = tokens,
H = heads, d = head dimension, D = width.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def heads_first(x: jax.Array) -> jax.Array:
  """[B, N, H, d] -> [B, H, N, d] (and back: the same swap)."""
  return jnp.swapaxes(x, 1, 2)


def head_logits(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
  """Scaled dot products per head. q: [B, H, N, d], k: [B, H, M, d] -> [B, H, N, M]."""
  return jnp.einsum('bhnd,bhmd->bhnm', q, k) * scale


def head_attend(weights: jax.Array, v: jax.Array) -> jax.Array:
  """Weighted sum of values per head. weights: [B, H, N, M], v: [B, H, M, d] -> [B, H, N, d]."""
  return jnp.einsum('bhnm,bhmd->bhnd', weights, v)


def attention_logits(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
  """Scaled dot products. q: [B, N, H, d], k: [B, M, H, d] -> [B, H, N, M].

  The products run with the heads first (`head_logits`): XLA's CPU matmuls are faster on
  that layout than on the token-major einsum, and the swaps are cheap."""
  return head_logits(heads_first(q), heads_first(k), scale)


def softmax(logits: jax.Array) -> jax.Array:
  """Softmax over the last axis computed in float32: [..., M] -> [..., M] float32."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def attention_weights(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
  """Softmax attention probabilities.

  q: [B, N, H, d], k: [B, M, H, d] -> [B, H, N, M]. The softmax runs in float32 whatever the
  input dtype, then is cast back, as the reference implementations do for bf16/fp16 inference.
  """
  return softmax(attention_logits(q, k, scale)).astype(q.dtype)


def attend(weights: jax.Array, v: jax.Array) -> jax.Array:
  """Weighted sum of values. weights: [B, H, N, M], v: [B, M, H, d] -> [B, N, H, d]."""
  return heads_first(head_attend(weights, heads_first(v)))


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float,
                          dropout: Callable[[jax.Array], jax.Array] | None = None,
                          bias: jax.Array | None = None,
                          softmax_fn: Callable[[jax.Array], jax.Array] | None = None
                          ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The backbone's attention function: q [B, N, H, d], k and v [B, M, H, d] ->
  (out [B, N, H, d], info {'weights': [B, H, N, M]}).

  `bias` is added to the scaled logits (broadcast to [B, H, N, M]); `softmax_fn(logits) ->
  weights` replaces the float32 softmax; `dropout` acts on the weights. Methods pass this with
  their own arguments, or a function of the same signature, as a block's `attention_fn`
  (see tokensparse/backbone/layers.py). An attention function may answer only some queries:
  it then returns out [B, K, H, d] and info['rows'] [B, K], the query positions it answered,
  and the block keeps only those rows of its residual stream."""
  if bias is None and softmax_fn is None:
    w = attention_weights(q, k, scale)
  else:
    logits = attention_logits(q, k, scale)
    if bias is not None:
      logits = logits + bias.astype(logits.dtype)
    w = (softmax_fn or softmax)(logits).astype(q.dtype)
  return attend(w if dropout is None else dropout(w), v), {'weights': w}


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


def inflate_kernel(kernel: jax.Array, frames: int) -> jax.Array:
  """An image patch-embedding kernel [p, p, C, D] as a tubelet kernel [t, p, p, C, D] by ViViT's
  central-frame initialisation: the middle frame holds the image kernel, the others are zero, so
  each tubelet embeds as its middle frame would."""
  out = jnp.zeros((frames,) + tuple(kernel.shape), kernel.dtype)
  return out.at[frames // 2].set(kernel)


# ----------------------------------------------------------------------------- tokens
def gather_tokens(x: jax.Array, indices: jax.Array) -> jax.Array:
  """Rows of x at indices, per batch element. x: [B, N, ...], indices: [B, K] -> [B, K, ...]."""
  return jnp.take_along_axis(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1)


def split_frames(x: jax.Array, frames: int) -> jax.Array:
  """[B, T*N, D] (frame-major) -> [B*T, N, D], so per-frame work cannot mix time steps."""
  b, tn, d = x.shape
  return x.reshape(b * frames, tn // frames, d)


def merge_frames(x: jax.Array, frames: int) -> jax.Array:
  """[B*T, N, D] -> [B, T*N, D], the inverse of `split_frames`."""
  bt, n, d = x.shape
  return x.reshape(bt // frames, frames * n, d)
