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
    state, out = model.apply(variables, frames, method=EventfulViT.init_state)  # dense
    state, out = model.apply(variables, state, frames, budget, threshold, method=EventfulViT.step)
and `run_clip` threads the state through `lax.scan` over a batch of clips.
`init_state` is `step` from an empty state with every token selected, so the first frame is
exactly the dense model. `budget` and `threshold` may be traced values: the budget can change at
every step without recompiling (`run_clip(..., budget=[T - 1], threshold=[T - 1])`).

Video models (the paper's ViViT, `model.video='factorised'`, or `'frames'`): a step is one
tubelet time step, frames [B, t, H, W, C]; the spatial encoder runs as above and `out` is the
step's pooled feature [B, D]; `run_video` scans the steps and runs the dense temporal encoder
and head on the features (as the paper, only the spatial encoder is eventful). For image models
`out` is the frame's logits.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax import lax

from tokensparse import functional as F
from tokensparse.backbone.vit import ViT
from tokensparse.methods.eventful import flops, ops

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
    if self.num_frames and not self.factorised:
      raise ValueError("Eventful runs a per-frame (per-step) backbone: an image model, or a "
                       "video model with model.video='factorised' or 'frames'")

  @property
  def step_shape(self) -> tuple[int, ...]:
    """The input of one step, without batch and channels: a frame, or one tubelet."""
    s = self.image_size
    return (self.tubelet, s, s) if self.factorised else (s, s)

  def empty_state(self, batch: int) -> EventfulState:
    n, d = self.num_tokens, self.width
    blocks = []
    for block in self.blocks:
      h, hd = block.attn.num_heads, block.attn.dim_per_head
      z = lambda *s: jnp.zeros((batch,) + s, self.dtype)
      nn_ = 0 if block.window_size else n   # windowed blocks keep no N x N products
      blocks.append(BlockState(qkv_ref=z(n, d), q=z(h, n, hd), k=z(h, n, hd), v=z(h, n, hd),
                               logits=z(h, nn_, nn_), attn_ref=z(h, nn_, nn_), av=z(h, n, hd),
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
    if block.window_size:  # ViTDet's windowed blocks: token-wise, dense inside each window
      av, logits, attn_ref = self._window_attention(block, y, q, k, v), st.logits, st.attn_ref
    else:
      rel = self._rel_pos(attn, q)
      if self.variant == 'tokenwise':
        logits = F.head_logits(q, k, attn.softmax_scale)
      else:
        logits, cols = ops.sparse_qk_update(st.logits, q, k, q_s, k_s, idx, attn.softmax_scale)
      # Relative positions: a bias of the queries, recomputed densely every frame (as the
      # official code does); the buffered logits stay q k^T.
      biased = logits if rel is None else logits + F.rel_pos_bias(*rel)
      if self.variant == 'full':  # only the attention columns of the updated keys are needed
        if rel is not None:
          gw = self.grid[1]
          cols = cols + (ops.take_tokens(rel[0], idx // gw, 3) +
                         ops.take_tokens(rel[1], idx % gw, 3))
        av, attn_ref = ops.delta_av_update(st.av, st.attn_ref,
                                           ops.softmax_columns(biased, cols),
                                           v_old_s, v_s, idx, valid)
      else:
        weights = jax.nn.softmax(biased.astype(jnp.float32), axis=-1).astype(q.dtype)
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

  def _rel_pos(self, attn, q):
    """A global block's relative position terms of the query buffer q [B, H, N, d]: (row
    [B, H, N, gh], column [B, H, N, gw]), or None without relative positions."""
    if not attn.rel_pos_size:
      return None
    return F.rel_pos_terms(q, *attn.rel_pos_tables(self.grid), self.grid)

  def _window_attention(self, block, y, q, k, v):
    """Attention inside the windows of a windowed block from the buffers q, k, v [B, H, N, d]:
    the windows padded with the q, k, v of a zero token (as the dense block) -> [B, H, N, d]."""
    attn, w = block.attn, block.window_size
    pads = attn.qkv(jnp.zeros((1, 1, y.shape[-1]), y.dtype))               # [1, 1, H, d]
    qw, kw, vw = (F.heads_first(F.window_partition(F.heads_first(t), self.grid, w, p[0, 0]))
                  for t, p in zip((q, k, v), pads))                          # [B*nw, H, w*w, d]
    logits = F.head_logits(qw, kw, attn.softmax_scale)
    if attn.rel_pos_size:
      logits = logits + attn.rel_pos_bias(qw, (w, w))
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    out = F.window_merge(F.heads_first(F.head_attend(weights, vw)), self.grid, w)
    return F.heads_first(out)

  def _run(self, state: EventfulState, images, capacity, budget, threshold):
    state, x = self._run_tokens(state, images, capacity, budget, threshold)
    if self.factorised:
      out = self.pool(self.Transformer.encoder_norm(x))           # the step's feature [B, D]
    else:
      out, _ = self.finish(x)
    return state, out

  def _run_tokens(self, state: EventfulState, images, capacity, budget, threshold):
    x = self.embed(images, frames=self.tubelet if self.factorised else None)
    blocks, updated = [], []
    for block, st in zip(self.blocks, state.blocks):
      x, st, upd = self._block(block, st, x, capacity, budget, threshold)
      blocks.append(st)
      updated.append(upd)
    return EventfulState(blocks=tuple(blocks), updated=jnp.stack(updated, axis=1)), x

  def init_state(self, images: jax.Array) -> tuple[EventfulState, jax.Array]:
    """Dense pass over the first frames [B, H, W, C] (a video model's first tubelet [B, t, H,
    W, C]): (filled state, logits [B, classes] or the step's feature [B, D])."""
    self.check()
    return self._run(self.empty_state(images.shape[0]), images, self.num_tokens, None, None)

  def step(self, state: EventfulState, images: jax.Array,
           budget: jax.Array | int | None = None,
           threshold: jax.Array | float | None = None) -> tuple[EventfulState, jax.Array]:
    """One frame [B, H, W, C] (tubelet [B, t, H, W, C]): recompute at most `capacity` tokens
    per gate, fewer with a traced `budget` or a `threshold` (a traced value, or the model's)
    -> (state, logits [B, classes] or the step's feature [B, D])."""
    self.check()
    return self._run(state, images, self.m, budget,
                     self.threshold if threshold is None else threshold)

  def init_features(self, images: jax.Array) -> tuple[EventfulState, jax.Array]:
    """A detection backbone's dense first frame [B, H, W, C] -> (filled state, the last
    block's tokens as a map [B, gh, gw, D], as `ViT.features`)."""
    self.check()
    state, x = self._run_tokens(self.empty_state(images.shape[0]), images, self.num_tokens,
                                None, None)
    return state, x.reshape(x.shape[0], *self.grid, self.width)

  def step_features(self, state: EventfulState, images: jax.Array,
                    budget: jax.Array | int | None = None,
                    threshold: jax.Array | float | None = None
                    ) -> tuple[EventfulState, jax.Array]:
    """`step` for a detection backbone: -> (state, feature map [B, gh, gw, D])."""
    self.check()
    state, x = self._run_tokens(state, images, self.m, budget,
                                self.threshold if threshold is None else threshold)
    return state, x.reshape(x.shape[0], *self.grid, self.width)

  def __call__(self, inputs: jax.Array, train: bool = False):
    """Images [B, H, W, C]: the dense pass (the first frame of a clip) -> (logits, {}).
    Clips [B, T, H, W, C]: frame 0 dense, the others through the gates (unrolled over T; use
    `run_clip` for lax.scan) -> (mean of the per-frame logits [B, classes], aux with
    'frame_logits' [B, T, classes] and 'updated' [B, T, depth, N]). A video model's clips:
    its steps through the gates, then the temporal encoder -> (logits, aux with
    'step_features' [B, T', D] and 'updated' [B, T', depth, N])."""
    del train
    if self.factorised:
      self.check_images(inputs)
      steps = inputs.reshape(inputs.shape[0], self.steps, self.tubelet, *inputs.shape[2:])
      state, feature = self.init_state(steps[:, 0])
      features, updated = [feature], [state.updated]
      for t in range(1, self.steps):
        state, feature = self.step(state, steps[:, t])
        features.append(feature)
        updated.append(state.updated)
      logits, aux = self.temporal(jnp.stack(features, axis=1))
      return logits, {**aux, 'updated': jnp.stack(updated, axis=1)}
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


def scan_steps(model: EventfulViT, variables: dict[str, Any], steps: jax.Array,
               budget: jax.Array | int | None = None,
               threshold: jax.Array | float | None = None, features: bool = False):
  """steps [B, S, *step input] -> (per-step outputs [B, S, ...], updated-token maps of the qkv
  gates [B, S, depth, N]; step 0 all True). Step 0 is dense, the others go through `step`
  inside `lax.scan`. `budget` / `threshold` (optional, traced): scalars or per-step [S - 1].
  `features=True`: the outputs are the last block's feature maps (`init_features`,
  `step_features`: a detection backbone)."""
  init, step = ((EventfulViT.init_features, EventfulViT.step_features) if features else
                (EventfulViT.init_state, EventfulViT.step))
  state, first = model.apply(variables, steps[:, 0], method=init)
  xs = jnp.swapaxes(steps[:, 1:], 0, 1)                            # [S - 1, B, ...]
  per_step = lambda v, dtype: None if v is None else jnp.broadcast_to(
      jnp.asarray(v, dtype), (xs.shape[0],))

  def body(st, inputs):
    frame, r, h = inputs
    st, out = model.apply(variables, st, frame, r, h, method=step)
    return st, (out, st.updated)

  _, (outs, updated) = lax.scan(body, state, (xs, per_step(budget, jnp.int32),
                                              per_step(threshold, jnp.float32)))
  outs = jnp.concatenate([first[:, None], jnp.swapaxes(outs, 0, 1)], axis=1)
  updated = jnp.concatenate([state.updated[:, None], jnp.swapaxes(updated, 0, 1)], axis=1)
  return outs, updated


def run_clip(model: EventfulViT, variables: dict[str, Any], clips: jax.Array,
             budget: jax.Array | int | None = None,
             threshold: jax.Array | float | None = None) -> tuple[jax.Array, jax.Array]:
  """An image model on clips [B, T, H, W, C] -> (per-frame logits [B, T, classes], updated-token
  maps [B, T, depth, N] of the qkv gates; frame 0 all True). `budget` / `threshold` (optional,
  traced): scalars or per-frame [T - 1]."""
  return scan_steps(model, variables, clips, budget, threshold)


def run_video(model: EventfulViT, variables: dict[str, Any], clips: jax.Array,
              budget: jax.Array | int | None = None,
              threshold: jax.Array | float | None = None) -> dict[str, jax.Array]:
  """A video model (model.video 'factorised' or 'frames') on clips [B, T, H, W, C]: its T' =
  T / tubelet steps through the eventful spatial encoder (`lax.scan`), then the dense temporal
  encoder and head -> {'logits' [B, classes], 'step_features' [B, T', D], 'updated'
  [B, T', depth, N]}. `budget` / `threshold` (optional, traced): scalars or per-step [T' - 1]."""
  b, t = clips.shape[:2]
  steps = clips.reshape(b, t // model.tubelet, model.tubelet, *clips.shape[2:])
  features, updated = scan_steps(model, variables, steps, budget, threshold)
  logits, _ = model.apply(variables, features, method=EventfulViT.temporal)
  return {'logits': logits, 'step_features': features, 'updated': updated}


# ----------------------------------------------------------------------------- budget control
def macs_line(model: EventfulViT, channels: int = 3) -> tuple[float, float]:
  """(a, b): the counted MACs of one step after the first are a + b * m when every gate
  recomputes m tokens (tokensparse.methods.eventful.flops; affine in m)."""
  base = flops.eventful_macs(model, 0, channels)['total']
  return float(base), float(flops.eventful_macs(model, 1, channels)['total'] - base)


def budget_for(model: EventfulViT, target_macs, channels: int = 3) -> jax.Array:
  """The largest top-r budget whose step costs at most `target_macs` (scalar or per step),
  clipped to [1, capacity]: an open-loop schedule for `run_clip` / `run_video`'s budget."""
  a, b = macs_line(model, channels)
  r = jnp.floor((jnp.asarray(target_macs, jnp.float32) - a) / b)
  return jnp.clip(r, 1, model.m).astype(jnp.int32)


def run_video_controlled(model: EventfulViT, variables: dict[str, Any], clips: jax.Array,
                         target_macs: jax.Array, threshold: jax.Array, gain: float = 0.5,
                         smoothing: float = 0.5, channels: int = 3) -> dict[str, jax.Array]:
  """A video model under a threshold policy whose threshold a controller moves to hold a MACs
  target per step. A threshold policy is bursty (a token skipped now has a larger error next
  time), so the controller holds the average: after each step it updates a moving average of
  the tokens recomputed per gate (`smoothing`: the weight of the past), compares it with the
  count the target affords (`macs_line`) and scales the threshold by
  exp(gain * (average - afforded) / afforded). clips [B, T, H, W, C]; target_macs [T' - 1] (may
  change within the clip); threshold [B] and the average are the controller's state (carry
  them from clip to clip of a stream: `next_threshold`, `next_average`). -> {'logits',
  'macs' [B, T' - 1] counted per step, 'threshold' [B, T' - 1] used at each step,
  'next_threshold' [B], 'next_average' [B], 'updated'}."""
  a, b_cost = macs_line(model, channels)
  b = clips.shape[0]
  steps = clips.reshape(b, model.steps, model.tubelet, *clips.shape[2:])
  state, first = model.apply(variables, steps[:, 0], method=EventfulViT.init_state)
  xs = jnp.swapaxes(steps[:, 1:], 0, 1)
  afford = jnp.maximum((jnp.asarray(target_macs, jnp.float32) - a) / b_cost, 1.0)

  def body(carry, inputs):
    st, h, average = carry
    frame, want = inputs
    st, feature = model.apply(variables, st, frame, None, h, method=EventfulViT.step)
    m = st.updated.sum(-1).mean(-1).astype(jnp.float32)                  # [B] per gate
    average = smoothing * average + (1.0 - smoothing) * m
    h_next = jnp.clip(h * jnp.exp(gain * (average - want) / want), 1e-6, 1e6)
    return (st, h_next, average), (feature, st.updated, a + b_cost * m, h)

  h0 = jnp.broadcast_to(jnp.asarray(threshold, jnp.float32), (b,))
  (_, h_last, average), (features, updated, macs, used) = lax.scan(
      body, (state, h0, jnp.broadcast_to(afford[0], (b,))), (xs, afford))
  features = jnp.concatenate([first[:, None], jnp.swapaxes(features, 0, 1)], axis=1)
  logits, _ = model.apply(variables, features, method=EventfulViT.temporal)
  updated = jnp.concatenate([state.updated[:, None], jnp.swapaxes(updated, 0, 1)], axis=1)
  return {'logits': logits, 'macs': macs.T, 'threshold': used.T, 'next_threshold': h_last,
          'next_average': average, 'updated': updated}
