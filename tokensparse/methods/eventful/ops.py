"""Eventful Transformer's pure functions: token errors and selection, gathers and scatters
along the token axis, the token gate, the sparse query-key update and the delta
attention-value update. Per-head tensors are [B, H, N, d] (heads first).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from tokensparse.functional import head_attend, head_logits  # noqa: F401


def token_errors(current: jax.Array, reference: jax.Array) -> jax.Array:
  """L2 norm per token of current - reference: [B, N, C] x2 -> [B, N] (float32)."""
  e = (current - reference).astype(jnp.float32)
  return jnp.sqrt(jnp.sum(e * e, axis=-1))


def select_tokens(errors: jax.Array, capacity: int, budget: jax.Array | int | None = None,
                  threshold: float | jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The `capacity` tokens with the largest errors, and which of them count.

  errors [B, N] -> indices [B, M] (largest first), valid [B, M] bool. A token is valid when it
  is among the first `budget` (a traced value <= capacity: the budget can change per frame
  without recompiling) and, with `threshold` (a scalar or one per example [B], traced or
  not), when its error exceeds it. Shapes are static.
  """
  top, indices = lax.top_k(errors, capacity)
  valid = jnp.ones(indices.shape, bool)
  if budget is not None:
    valid &= jnp.arange(capacity) < jnp.asarray(budget)[..., None]
  if threshold is not None:
    threshold = jnp.asarray(threshold)
    valid &= top > (threshold[:, None] if threshold.ndim == 1 else threshold)  # per example
  return indices, valid


def take_tokens(x: jax.Array, indices: jax.Array, axis: int = 1) -> jax.Array:
  """Gather along the token axis: x [B, ..., N (axis), ...], indices [B, M] -> [B, ..., M, ...].
  Indices must be in range (they come from top_k)."""
  return jax.vmap(lambda a, i: jnp.take(a, i, axis=axis - 1, mode='clip'))(x, indices)


def token_slots(indices: jax.Array, n: int, valid: jax.Array | None = None) -> jax.Array:
  """Inverse of a selection: indices [B, M] -> slots [B, N], the position in the selection of
  each of the N tokens, -1 for tokens not selected (or selected but not valid)."""
  m = indices.shape[1]
  pos = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), indices.shape)
  if valid is not None:
    pos = jnp.where(valid, pos, -1)
  return jax.vmap(lambda i, p: jnp.full((n,), -1, jnp.int32).at[i].set(p))(indices, pos)


def put_tokens(x: jax.Array, indices: jax.Array, values: jax.Array,
               valid: jax.Array | None = None, axis: int = 1) -> jax.Array:
  """Scatter values [B, ..., M, ...] into x [B, ..., N, ...] along the token axis at indices
  [B, M] where valid (None: all): the token buffer, and the gate's reference update. Indices
  are distinct (from top_k).

  Written as a gather and a select through the inverse map (`token_slots`): XLA's CPU scatter
  is an element-wise loop, several times slower than this."""
  slots = token_slots(indices, x.shape[axis], valid)
  full = take_tokens(values, jnp.maximum(slots, 0), axis)
  shape = [1] * x.ndim
  shape[0], shape[axis] = x.shape[0], x.shape[axis]
  return jnp.where((slots >= 0).reshape(shape), full, x)


def gate_tokens(reference: jax.Array, current: jax.Array, indices: jax.Array,
                valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Eventful token gate: the selected current tokens [B, M, C] and the reference [B, N, C]
  with those tokens (where valid) moved to their current value."""
  selected = take_tokens(current, indices)
  return selected, put_tokens(reference, indices, selected, valid)


def sparse_qk_update(logits: jax.Array, q: jax.Array, k: jax.Array, q_s: jax.Array,
                     k_s: jax.Array, indices: jax.Array,
                     scale: float) -> tuple[jax.Array, jax.Array]:
  """Refresh the rows (queries) and columns (keys) of `indices` in logits [B, H, N, N] from the
  current buffers q, k [B, H, N, d], whose entries at indices are q_s, k_s [B, H, M, d]:
  2NMd MACs per head instead of N^2 d. Other entries are kept; recomputing an index whose q and
  k did not change rewrites the same values. -> (logits, the refreshed columns
  logits[..., indices] [B, H, N, M])."""
  rows = head_logits(q_s, k, scale)                                     # [B, H, M, N]
  cols = head_logits(q, k_s, scale)                                     # [B, H, N, M]
  slots = token_slots(indices, q.shape[2])                              # [B, N]
  at = jnp.maximum(slots, 0)
  sel = slots >= 0  # one pass: where a row and a column meet both hold the same q.k
  return jnp.where(sel[:, None, :, None], take_tokens(rows, at, 2),
                   jnp.where(sel[:, None, None, :], take_tokens(cols, at, 3), logits)), cols


def softmax_columns(logits: jax.Array, cols: jax.Array) -> jax.Array:
  """softmax(logits)[..., indices] from logits [B, H, N, N] and their columns at indices,
  cols [B, H, N, M]: the row maxima and sums of one pass over the logits; the full attention
  matrix is never written. Float32 inside, as `attention_weights`."""
  x = logits.astype(jnp.float32)
  m = jnp.max(x, axis=-1, keepdims=True)
  z = jnp.sum(jnp.exp(x - m), axis=-1, keepdims=True)
  return (jnp.exp(cols.astype(jnp.float32) - m) / z).astype(logits.dtype)


def delta_av_update(av: jax.Array, attn_ref: jax.Array, attn_cols: jax.Array,
                    v_old_s: jax.Array, v_new_s: jax.Array, indices: jax.Array,
                    valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Delta attention-value product, per head.

  State: av [B, H, N, d] = A_ref @ v_buf, and the attention reference stored key-major,
  attn_ref [B, H, N (keys), N (queries)] = A_ref^T (so a key's column is a contiguous row).
  This frame's attention columns attn_cols [B, H, N, M] (`softmax_columns`) refresh the keys
  S = indices (where valid), whose values changed from v_old_s to v_new_s ([B, H, M, d]):
      av += A_new[:, S] @ (v_new - v_old)_S + (A_new - A_ref)[:, S] @ v_old_S
  (2NMd MACs per head) -> (av, attn_ref), with av == A_ref' @ v_buf' exactly."""
  a_old = jnp.swapaxes(take_tokens(attn_ref, indices, 2), -1, -2)     # [B, H, N, M]
  # Always a select on a_old (all-true without a mask): the refreshed rows then depend on the
  # old ones, so XLA reads them before it overwrites attn_ref in place instead of copying it.
  keep = valid if valid is not None else indices >= 0
  a_new = jnp.where(keep[:, None, None, :], attn_cols, a_old)
  av = av + head_attend(a_new, v_new_s - v_old_s) + head_attend(a_new - a_old, v_old_s)
  return av, put_tokens(attn_ref, indices, jnp.swapaxes(a_new, -1, -2), axis=2)
