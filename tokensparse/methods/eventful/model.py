"""Eventful Transformer (Dutson, Li, Gupta, ICCV 2023): re-process only the tokens of a video
frame that changed, on any backbone checkpoint, with no retraining.

Every block runs three gate -> op -> buffer pairs on the dense residual stream x:
    y = LN1(x)  -> gate -> q/k/v of the M selected tokens -> q/k/v buffers
    attention   (variant 'tokenwise': dense QK^T and AV from the buffers;
                 'sparse_qk': only the rows/columns of the updated tokens of QK^T;
                 'full': + delta AV, the attention-value product updated by deltas)
    o (merged heads) -> gate -> output projection of M tokens -> buffer; x = x + buffer
    y = LN2(x)  -> gate -> MLP of M tokens -> buffer; x = x + buffer
A gate keeps a reference per token, selects the M tokens whose current value is farthest (L2)
from it, and moves only their references. The qkv gate's tokens also drive the QK rows/columns,
the value deltas and the attention columns; the proj and MLP gates choose their own.

Policies (all static shapes, one compile per (capacity, variant)): the top-`capacity` tokens;
`budget` (a traced count <= capacity, may change per frame); `threshold` (tokens whose error
exceeds it, at most `capacity`, validity-masked: works at any batch size).

The state is an explicit pytree (`EventfulState`: one `BlockState` per block). Pure functions:
    state, logits = model.apply(variables, frames, method=EventfulViT.init_state)  # dense
    state, logits = model.apply(variables, state, frames, budget, method=EventfulViT.step)
and `run_clip` threads the state through `lax.scan` over a batch of clips.
`init_state` is `step` from an empty state with every token selected, so the first frame is
exactly the dense model.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax import lax

from tokensparse import functional as F
from tokensparse.backbone.vit import ViT
from tokensparse.methods.eventful import ops

VARIANTS = ('tokenwise', 'sparse_qk', 'full')


@flax.struct.dataclass
class BlockState:
  """One block's state. Per-head tensors are stored heads first (the layout XLA's CPU matmuls
  run fastest on); the attention reference is stored key-major, so refreshing a key's column
  is writing one contiguous row."""
  qkv_ref: jax.Array     # [B, N, D]   reference of the qkv gate (LN1 output)
  q: jax.Array           # [B, H, N, d] buffers
  k: jax.Array
  v: jax.Array
  logits: jax.Array      # [B, H, N, N] scaled q k^T of the buffers
  attn_ref: jax.Array    # [B, H, N, N] keys x queries: A_ref^T, the attention with the columns
  #                        of updated keys refreshed (full variant; the others carry it along)
  av: jax.Array          # [B, H, N, d] A_ref @ v (full); this frame's A @ v (the others)
  proj_ref: jax.Array    # [B, N, H*d] reference of the proj gate (merged attention output)
  proj_buf: jax.Array    # [B, N, D]
  mlp_ref: jax.Array     # [B, N, D]   reference of the MLP gate (LN2 output)
  mlp_buf: jax.Array     # [B, N, D]


@flax.struct.dataclass
class EventfulState:
  blocks: tuple[BlockState, ...]
  updated: jax.Array     # [B, depth, N] bool: tokens the qkv gate updated in the last frame


class EventfulViT(ViT):
  """The backbone run frame by frame with Eventful gates (see the module docstring)."""
  capacity: int = 0              # M: tokens recomputed per gate and frame; 0 = all
  variant: str = 'full'
  threshold: float | None = None

  @property
  def num_tokens(self) -> int:
    return self.num_prefix + self.num_patches

  @property
  def m(self) -> int:
    return self.capacity or self.num_tokens

  def check(self):
    if self.variant not in VARIANTS:
      raise ValueError(f'eventful variant={self.variant!r}: expected one of {VARIANTS}')
    if not 0 < self.m <= self.num_tokens:
      raise ValueError(f'eventful capacity={self.capacity}: must be in [1, N={self.num_tokens}] '
                       '(0 means N)')
    if self.num_frames:
      raise ValueError('EventfulViT runs a per-frame backbone: model.num_frames must be 0')

  def empty_state(self, batch: int) -> EventfulState:
    n, d = self.num_tokens, self.width
    blocks = []
    for block in self.blocks:
      h, hd = block.attn.num_heads, block.attn.dim_per_head
      z = lambda *s: jnp.zeros((batch,) + s, self.dtype)
      blocks.append(BlockState(qkv_ref=z(n, d), q=z(h, n, hd), k=z(h, n, hd), v=z(h, n, hd),
                               logits=z(h, n, n), attn_ref=z(h, n, n), av=z(h, n, hd),
                               proj_ref=z(n, h * hd), proj_buf=z(n, d), mlp_ref=z(n, d),
                               mlp_buf=z(n, d)))
    return EventfulState(blocks=tuple(blocks), updated=jnp.zeros((batch, self.depth, n), bool))

  def _select(self, current, reference, capacity, budget, threshold):
    idx, valid = ops.select_tokens(ops.token_errors(current, reference), capacity, budget, threshold)
    # Plain top-capacity: every selected token counts, and the updates skip the masking.
    return idx, (valid if budget is not None or threshold is not None else None)

  def _block(self, block, st: BlockState, x, capacity, budget, threshold):
    b, n, _ = x.shape
    attn = block.attn
    h, hd = attn.num_heads, attn.dim_per_head
    # qkv gate -> q/k/v of the selected tokens -> buffers (heads first: [B, H, N, d])
    y = block.norm1(x)
    idx, valid = self._select(y, st.qkv_ref, capacity, budget, threshold)
    y_s, qkv_ref = ops.gate_tokens(st.qkv_ref, y, idx, valid)
    q_s, k_s, v_s = (F.heads_first(t) for t in attn.qkv(y_s))          # [B, H, M, d]
    v_old_s = ops.take_tokens(st.v, idx, 2)
    # Tokens selected but not valid keep their buffered values. The select on v_old_s (all
    # true without a mask) also makes XLA read the old values before it updates v in place.
    keep = (valid if valid is not None else idx >= 0)[:, None, :, None]
    v_s = jnp.where(keep, v_s, v_old_s)
    q, k, v = (ops.put_tokens(buf, idx, new, valid, 2) for buf, new in
               ((st.q, q_s), (st.k, k_s), (st.v, v_s)))
    if valid is not None:
      q_s, k_s = ops.take_tokens(q, idx, 2), ops.take_tokens(k, idx, 2)
    # attention
    if self.variant == 'tokenwise':
      logits = F.head_logits(q, k, attn.softmax_scale)
    else:
      logits, cols = ops.sparse_qk_update(st.logits, q, k, q_s, k_s, idx, attn.softmax_scale)
    if self.variant == 'full':  # only the attention columns of the updated keys are needed
      av, attn_ref = ops.delta_av_update(st.av, st.attn_ref, ops.softmax_columns(logits, cols),
                                       v_old_s, v_s, idx, valid)
    else:
      weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
      av, attn_ref = F.head_attend(weights, v), st.attn_ref
    # proj gate -> output projection -> buffer
    o = F.heads_first(av).reshape(b, n, h * hd)
    idx2, valid2 = self._select(o, st.proj_ref, capacity, budget, threshold)
    o_s, proj_ref = ops.gate_tokens(st.proj_ref, o, idx2, valid2)
    proj_buf = ops.put_tokens(st.proj_buf, idx2, attn.out(o_s.reshape(b, -1, h, hd)), valid2)
    x = x + proj_buf
    # MLP gate -> MLP -> buffer
    y2 = block.norm2(x)
    idx3, valid3 = self._select(y2, st.mlp_ref, capacity, budget, threshold)
    y2_s, mlp_ref = ops.gate_tokens(st.mlp_ref, y2, idx3, valid3)
    mlp_buf = ops.put_tokens(st.mlp_buf, idx3, block.mlp(y2_s), valid3)
    x = x + mlp_buf
    updated = ops.token_slots(idx, n, valid) >= 0
    new = BlockState(qkv_ref=qkv_ref, q=q, k=k, v=v, logits=logits, attn_ref=attn_ref, av=av,
                     proj_ref=proj_ref, proj_buf=proj_buf, mlp_ref=mlp_ref, mlp_buf=mlp_buf)
    return x, new, updated

  def _run(self, state: EventfulState, images, capacity, budget, threshold):
    x = self.embed(images)
    blocks, updated = [], []
    for block, st in zip(self.blocks, state.blocks):
      x, st, upd = self._block(block, st, x, capacity, budget, threshold)
      blocks.append(st)
      updated.append(upd)
    logits, _ = self.finish(x)
    return EventfulState(blocks=tuple(blocks), updated=jnp.stack(updated, axis=1)), logits

  def init_state(self, images: jax.Array) -> tuple[EventfulState, jax.Array]:
    """Dense pass over the first frames [B, H, W, C]: (filled state, logits [B, classes])."""
    self.check()
    return self._run(self.empty_state(images.shape[0]), images, self.num_tokens, None, None)

  def step(self, state: EventfulState, images: jax.Array,
           budget: jax.Array | int | None = None) -> tuple[EventfulState, jax.Array]:
    """One frame [B, H, W, C]: recompute at most `capacity` tokens per gate (fewer with a
    traced `budget` or the model's `threshold`) -> (state, logits [B, classes])."""
    self.check()
    return self._run(state, images, self.m, budget, self.threshold)

  def __call__(self, inputs: jax.Array, train: bool = False):
    """Images [B, H, W, C]: the dense pass (the first frame of a clip) -> (logits, {}).
    Clips [B, T, H, W, C]: frame 0 dense, the others through the gates (unrolled over T; use
    `run_clip` for lax.scan) -> (mean of the per-frame logits [B, classes], aux with
    'frame_logits' [B, T, classes] and 'updated' [B, T, depth, N])."""
    del train
    if inputs.ndim != 5:
      _, logits = self.init_state(inputs)
      return logits, {}
    state, logits = self.init_state(inputs[:, 0])
    frame_logits, updated = [logits], [state.updated]
    for t in range(1, inputs.shape[1]):
      state, logits = self.step(state, inputs[:, t])
      frame_logits.append(logits)
      updated.append(state.updated)
    frame_logits = jnp.stack(frame_logits, axis=1)
    return frame_logits.mean(axis=1), {'frame_logits': frame_logits,
                                       'updated': jnp.stack(updated, axis=1)}


def run_clip(model: EventfulViT, variables: dict[str, Any], clips: jax.Array,
             budget: jax.Array | int | None = None) -> tuple[jax.Array, jax.Array]:
  """clips [B, T, H, W, C] -> (per-frame logits [B, T, classes], updated-token maps
  [B, T, depth, N] of the qkv gates; frame 0 all True). The first frame is dense, the others go
  through `step` inside `lax.scan`. `budget` (optional, traced): scalar or per-frame [T - 1]."""
  state, first = model.apply(variables, clips[:, 0], method=EventfulViT.init_state)
  frames = jnp.swapaxes(clips[:, 1:], 0, 1)                       # [T - 1, B, H, W, C]
  budgets = None if budget is None else jnp.broadcast_to(jnp.asarray(budget, jnp.int32),
                                                         (frames.shape[0],))

  def body(st, inputs):
    frame, r = inputs
    st, logits = model.apply(variables, st, frame, r, method=EventfulViT.step)
    return st, (logits, st.updated)

  _, (logits, updated) = lax.scan(body, state, (frames, budgets))
  logits = jnp.concatenate([first[:, None], jnp.swapaxes(logits, 0, 1)], axis=1)
  updated = jnp.concatenate([state.updated[:, None], jnp.swapaxes(updated, 0, 1)], axis=1)
  return logits, updated
