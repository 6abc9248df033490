"""Pure array functions that the backbone and the token-sparsity methods are made of.

Every function here is a plain function of arrays (no Flax state), so it can be tested alone
against a numpy reference and reused by any model file. Shapes use B = batch, N = tokens,
H = heads, d = head dimension, D = width.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


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


def attention_weights(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
  """Softmax attention probabilities.

  q: [B, N, H, d], k: [B, M, H, d] -> [B, H, N, M]. The softmax runs in float32 whatever the
  input dtype, then is cast back, as the reference implementations do for bf16/fp16 inference.
  """
  logits = attention_logits(q, k, scale)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)


def attend(weights: jax.Array, v: jax.Array) -> jax.Array:
  """Weighted sum of values. weights: [B, H, N, M], v: [B, M, H, d] -> [B, N, H, d]."""
  return heads_first(head_attend(weights, heads_first(v)))


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


# ----------------------------------------------------------------------------- DynamicViT
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


def gather_tokens(x: jax.Array, indices: jax.Array) -> jax.Array:
  """Rows of x at indices, per batch element. x: [B, N, ...], indices: [B, K] -> [B, K, ...]."""
  return jnp.take_along_axis(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1)


# ----------------------------------------------------------------------------- TokenLearner
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


def split_frames(x: jax.Array, frames: int) -> jax.Array:
  """[B, T*N, D] (frame-major) -> [B*T, N, D], so per-frame work cannot mix time steps."""
  b, tn, d = x.shape
  return x.reshape(b * frames, tn // frames, d)


def merge_frames(x: jax.Array, frames: int) -> jax.Array:
  """[B*T, N, D] -> [B, T*N, D], the inverse of `split_frames`."""
  bt, n, d = x.shape
  return x.reshape(bt // frames, frames * n, d)


# ----------------------------------------------------------------------------- VTP
def gate(x: jax.Array, scores: jax.Array) -> jax.Array:
  """VTP's soft channel gate: x [..., C] (or [..., H, d]) times scores [C] ([H, d])."""
  return x * scores.astype(x.dtype)


def l1_penalty(scores, weight: float) -> jax.Array:
  """weight * sum |s| over every leaf of a score tree; its gradient is weight * sign(s)."""
  return weight * sum(jnp.abs(s).sum() for s in jax.tree.leaves(scores))


# ----------------------------------------------------------------------------- Eventful
def token_errors(current: jax.Array, reference: jax.Array) -> jax.Array:
  """L2 norm per token of current - reference: [B, N, C] x2 -> [B, N] (float32)."""
  e = (current - reference).astype(jnp.float32)
  return jnp.sqrt(jnp.sum(e * e, axis=-1))


def select_tokens(errors: jax.Array, capacity: int, budget: jax.Array | int | None = None,
                  threshold: float | jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The `capacity` tokens with the largest errors, and which of them count.

  errors [B, N] -> indices [B, M] (largest first), valid [B, M] bool. A token is valid when it
  is among the first `budget` (a traced value <= capacity: the budget can change per frame
  without recompiling) and, with `threshold`, when its error exceeds it. Shapes are static.
  """
  top, indices = lax.top_k(errors, capacity)
  valid = jnp.ones(indices.shape, bool)
  if budget is not None:
    valid &= jnp.arange(capacity) < jnp.asarray(budget)[..., None]
  if threshold is not None:
    valid &= top > threshold
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
