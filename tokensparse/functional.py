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
import numpy as np


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


# ----------------------------------------------------------------------------- ViTDet
# Resizing as PyTorch's F.interpolate does it (align_corners=False), written as a matrix per
# axis so that checkpoints trained with torch's resizes (detectron2's ViTDet, the official
# Eventful code) give the same numbers here. jax.image.resize's 'cubic' uses a = -0.5, torch's
# bicubic a = -0.75, so it cannot stand in.
def resize_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
  """[n_out, n_in] float64 matrix of torch's 1-D 'linear' or 'bicubic' (a = -0.75) resize,
  align_corners=False: out = M @ x."""
  m = np.zeros((n_out, n_in))
  scale = n_in / n_out
  for i in range(n_out):
    src = (i + 0.5) * scale - 0.5
    if mode == 'linear':
      src = max(src, 0.0)
      i0 = int(np.floor(src))
      t = src - i0
      m[i, min(i0, n_in - 1)] += 1.0 - t
      m[i, min(i0 + 1, n_in - 1)] += t
    elif mode == 'bicubic':
      i0 = int(np.floor(src))
      t = src - i0
      a = -0.75
      near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1            # |x| <= 1
      far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a       # 1 < |x| < 2
      for offset, w in ((-1, far(t + 1)), (0, near(t)), (1, near(1 - t)), (2, far(2 - t))):
        m[i, min(max(i0 + offset, 0), n_in - 1)] += w
    else:
      raise ValueError(f"resize mode {mode!r}: expected 'linear' or 'bicubic'")
  return m


def resize_axes(x: jax.Array, sizes: dict[int, int], mode: str) -> jax.Array:
  """Resize the axes of x named by `sizes` ({axis: new length}) one after another, as torch's
  F.interpolate(mode) does (separable; float32 math, x's dtype out)."""
  out = x.astype(jnp.float32)
  for axis, n in sizes.items():
    if out.shape[axis] != n:
      m = jnp.asarray(resize_matrix(out.shape[axis], n, mode), jnp.float32)
      out = jnp.moveaxis(jnp.tensordot(m, jnp.moveaxis(out, axis, 0), axes=1), 0, axis)
  return out.astype(x.dtype)


def grid_posemb(posemb: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """Absolute position embedding of a square grid [1, s*s, D] at another token grid ->
  [1, gh*gw, D], resized bicubically as detectron2's ViTDet (`get_abs_pos`) does."""
  n = posemb.shape[1]
  side = int(round(n ** 0.5))
  if side * side != n:
    raise ValueError(f'position embedding has {n} grid rows, not a square grid')
  x = resize_axes(posemb.reshape(side, side, -1), {0: grid[0], 1: grid[1]}, 'bicubic')
  return x.reshape(1, grid[0] * grid[1], -1)


def rel_pos_table(table: jax.Array, size: int, resize: str = 'linear') -> jax.Array:
  """Relative position embeddings of one axis at `size` positions: table [2s - 1, d] (learned
  for s positions) -> R [size, size, d], R[i, j] = embedding of the offset i - j.

  Where size != s: 'linear' resizes the 1-D table to 2 * size - 1 rows (detectron2's
  `get_rel_pos`); 'bicubic' builds the s x s matrix first and resizes it bicubically (the
  official Eventful code). Both agree where size == s."""
  s = (table.shape[0] + 1) // 2
  if resize == 'linear' or size == s:
    if size != s:
      table = resize_axes(table, {0: 2 * size - 1}, 'linear')
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :] + size - 1
    return jnp.asarray(table)[offsets]
  if resize != 'bicubic':
    raise ValueError(f"model.rel_pos_resize={resize!r}: expected 'linear' or 'bicubic'")
  full = rel_pos_table(table, s)
  return resize_axes(full, {0: size, 1: size}, 'bicubic')


def rel_pos_terms(q: jax.Array, rel_h: jax.Array, rel_w: jax.Array,
                  grid: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
  """The decomposed relative position terms of queries q [B, H, N, d] (heads first, N = gh*gw
  row-major) with the per-axis matrices rel_h [gh, gh, d], rel_w [gw, gw, d] (`rel_pos_table`)
  -> (row term [B, H, N, gh], column term [B, H, N, gw]): the logit of query i and key j
  gains row[i, y(j)] + col[i, x(j)] (MViTv2 / detectron2's `add_decomposed_rel_pos`, with the
  unscaled queries)."""
  b, h, n, d = q.shape
  r_q = q.reshape(b, h, grid[0], grid[1], d)
  row = jnp.einsum('bhywc,ykc->bhywk', r_q, rel_h.astype(q.dtype)).reshape(b, h, n, grid[0])
  col = jnp.einsum('bhywc,wkc->bhywk', r_q, rel_w.astype(q.dtype)).reshape(b, h, n, grid[1])
  return row, col


def rel_pos_bias(row: jax.Array, col: jax.Array) -> jax.Array:
  """The [B, H, N, gh*gw] logit bias of `rel_pos_terms`' (row, col)."""
  b, h, n, gh = row.shape
  return (row[..., :, None] + col[..., None, :]).reshape(b, h, n, gh * col.shape[-1])


def window_partition(x: jax.Array, grid: tuple[int, int], window: int,
                     pad: jax.Array | float = 0.0) -> jax.Array:
  """Tokens x [B, gh*gw, ...] (row-major grid) -> windows [B * nh * nw, window**2, ...],
  the grid padded at the bottom and right with `pad` (broadcast to the trailing dims; zero as
  detectron2 pads the normed tokens) to multiples of `window`."""
  b, rest = x.shape[0], x.shape[2:]
  gh, gw = grid
  ph, pw = -gh % window, -gw % window
  x = x.reshape(b, gh, gw, *rest)
  if ph or pw:
    full = jnp.broadcast_to(jnp.asarray(pad, x.dtype), (b, gh + ph, gw + pw, *rest))
    x = full.at[:, :gh, :gw].set(x)
  nh, nw = (gh + ph) // window, (gw + pw) // window
  x = x.reshape(b, nh, window, nw, window, *rest)
  x = jnp.moveaxis(x, 3, 2)                                    # [B, nh, nw, w, w, ...]
  return x.reshape(b * nh * nw, window * window, *rest)


def window_merge(x: jax.Array, grid: tuple[int, int], window: int) -> jax.Array:
  """The inverse of `window_partition`: [B * nh * nw, window**2, ...] -> [B, gh*gw, ...],
  padding dropped."""
  gh, gw = grid
  nh, nw = -(-gh // window), -(-gw // window)
  rest = x.shape[2:]
  b = x.shape[0] // (nh * nw)
  x = x.reshape(b, nh, nw, window, window, *rest)
  x = jnp.moveaxis(x, 2, 3).reshape(b, nh * window, nw * window, *rest)
  return x[:, :gh, :gw].reshape(b, gh * gw, *rest)
