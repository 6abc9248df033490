"""ToMe's pure functions (Bolya et al., ICLR 2023): bipartite soft matching, size-weighted
merging, proportional attention, the merge schedule. Written from the paper's description;
static shapes (r is a Python int per block). Shapes: B batch, T tokens, C channels.

Bipartite soft matching of T tokens (p prefix tokens protected):
  1. alternate tokens into sets A (even positions) and B (odd positions);
  2. cosine similarity of every A token to every B token on the metric (the attention keys
     averaged over heads); prefix tokens are never merged (their rows in A and columns in B
     are excluded: the class token at 0 is in A, a distillation token at 1 in B);
  3. each A token's best B match; the r A tokens with the most similar matches are merged into
     their match, the others stay;
  4. merged values are size-weighted averages: x <- sum(size * x) / sum(size), sizes add.
Result: [prefix..., unmerged A tokens, B tokens], T - r tokens; the unmerged A tokens keep
their original order when a class token is protected and otherwise the order of their best
match's similarity (descending), as the official merge.py does.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from tokensparse.functional import gather_tokens


def schedule(r: int | list[int] | tuple[int, ...], depth: int, inflect: float = 0.0) -> tuple[int, ...]:
  """Tokens merged in each block. An int r with `inflect` 0 merges r in every block; a negative
  `inflect` gives ToMe's decreasing schedule (inflect=-0.5: from 1.5 r down to 0.5 r, the
  same total); a list gives one value per block (padded with 0)."""
  if isinstance(r, (list, tuple)):
    return tuple(int(v) for v in r) + (0,) * (depth - len(r))
  lo = int(r * (1.0 - inflect))
  hi = 2 * r - lo
  step = (hi - lo) / max(depth - 1, 1)
  return tuple(int(lo + step * i) for i in range(depth))


def token_counts(tokens: int, rs: tuple[int, ...]) -> tuple[int, ...]:
  """Tokens entering each block (the merge runs after the block's attention)."""
  counts = []
  for r in rs:
    counts.append(tokens)
    tokens -= r
  return tuple(counts)


def max_merge(tokens: int, num_prefix: int) -> int:
  """The most tokens one matching can merge: the mergeable tokens of the smaller set."""
  return (tokens - num_prefix) // 2


def matching(metric: jax.Array, r: int, num_prefix: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """metric [B, T, C] -> (unmerged A positions [B, ta - r], merged A positions [B, r], their B
  destinations [B, r]), positions within A and B. The unmerged positions are ascending with a
  class token, in descending similarity of their best match without one (the official rule)."""
  metric = metric.astype(jnp.float32)
  metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
  a, b = metric[:, ::2], metric[:, 1::2]
  scores = jnp.einsum('bic,bjc->bij', a, b)                        # [B, ta, tb]
  a_pos, b_pos = jnp.arange(a.shape[1]) * 2, jnp.arange(b.shape[1]) * 2 + 1
  protect = (a_pos[:, None] < num_prefix) | (b_pos[None, :] < num_prefix)
  scores = jnp.where(protect, -jnp.inf, scores)
  node_max, node_idx = scores.max(axis=-1), scores.argmax(axis=-1)   # [B, ta]
  order = jnp.argsort(-node_max, axis=-1, stable=True)                # most similar first
  src = order[:, :r]
  # As the official merge.py: the unmerged A tokens go back to their positions only when a
  # class token is protected (it must stay first); otherwise they stay in similarity order,
  # which sets the next block's alternating A/B split.
  unm = jnp.sort(order[:, r:], axis=-1) if num_prefix else order[:, r:]
  dst = jnp.take_along_axis(node_idx, src, axis=-1)
  return unm, src, dst


def merge(x: jax.Array, unm: jax.Array, src: jax.Array, dst: jax.Array,
          num_prefix: int) -> jax.Array:
  """Sum-merge x [B, T, C] by a matching: the merged A tokens are added to their B match.
  -> [B, T - r, C], prefix tokens first (class token from A, distillation token from B)."""
  a, b = x[:, ::2], x[:, 1::2]
  kept = gather_tokens(a, unm)
  b = jax.vmap(lambda d, i, s: d.at[i].add(s))(b, dst, gather_tokens(a, src))
  if num_prefix >= 2:  # cls (A's first) then dist (B's first)
    return jnp.concatenate([kept[:, :1], b[:, :1], kept[:, 1:], b[:, 1:]], axis=1)
  return jnp.concatenate([kept, b], axis=1)


def merge_weighted(x: jax.Array, size: jax.Array, matched, num_prefix: int,
                   source: jax.Array | None = None):
  """Size-weighted merge: x [B, T, C], size [B, T, 1] (patches per token), optional source
  [B, T, N0] (which input tokens each token holds) -> the same with T - r tokens. The sizes
  ride along as one more channel, so one gather/scatter moves both."""
  unm, src, dst = matched
  c = x.shape[-1]
  parts = [x * size.astype(x.dtype), size.astype(x.dtype)]
  if source is not None:
    parts.append(source.astype(x.dtype))
  out = merge(jnp.concatenate(parts, axis=-1), unm, src, dst, num_prefix)
  size = out[..., c:c + 1].astype(jnp.float32)
  x = out[..., :c] / out[..., c:c + 1]
  return x, size, (out[..., c + 1:].astype(jnp.float32) if source is not None else None)


def size_bias(size: jax.Array) -> jax.Array:
  """Proportional attention: log(size) [B, T, 1] -> a logit bias [B, 1, 1, T] on the keys."""
  return jnp.log(size[..., 0])[:, None, None, :]

