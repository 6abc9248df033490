"""Shared Flax layers: attention, MLP and the pre-LN encoder block.

Parameter names follow the vit_jax / big_vision scheme (`MultiHeadDotProductAttention_1/query`,
`MlpBlock_3/Dense_0`, ...) so that vit_jax `.npz` checkpoints load without renaming; timm names
are mapped onto this scheme in `tokensparse.convert`.

Modules are written with `setup` (not `@compact`) so method models can call their parts one
at a time: `block.attn.qkv(y)`, `block.mlp(y)`, `block.norm1(x)`.

The one extension point, in the spirit of Flax's `attention_fn` (no method is named here):
  * `attention_fn(q, k, v, *, scale, dropout) -> (out, info)`: how a block attends, given the
    projected q, k, v [B, N, H, d]. The default is `functional.dot_product_attention`; a method
    passes it with a logit bias or another softmax, or wraps it (scaling q/k/v, answering only
    some queries). The block adds 'q', 'k', 'v' to the info it returns.
  * `hidden_fn(h) -> h`: a transform of the MLP's hidden activations after GELU.
`EncoderBlock.attend` and `EncoderBlock.feed_forward` are the block's two residual halves;
`ViT.run_blocks` (vit.py) runs them for every block with a method's callbacks in between.

ViTDet's options (Li et al. 2022, detectron2's `ViT`) are the backbone's, not a method's: a
block with `window_size` attends inside non-overlapping windows of its token grid (padded with
the q, k, v of a zero token, as detectron2 pads the normed tokens with zeros), and
`rel_pos_size` gives its attention decomposed relative position tables (`rel_pos_h`,
`rel_pos_w` [2s - 1, d], resized when the grid differs; the bias reaches the attention
function as its `bias` argument).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokensparse import functional as F

Dtype = Any
AttentionFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]  # (q, k, v, *, scale, dropout)
HiddenFn = Callable[[jax.Array], jax.Array]                          # [B, N, mlp_dim] -> same
LN_EPS = 1e-6  # DeiT / ViT backbone LayerNorm epsilon.


def dense_init():
  return nn.initializers.truncated_normal(stddev=0.02)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as in timm and vit_jax; flax's default is the tanh approximation."""
  return nn.gelu(x, approximate=False)


class Attention(nn.Module):
  """Multi-head self-attention with separate q/k/v kernels of shape [D, H, d].

  `head_dim` defaults to width // num_heads. `scale` defaults to head_dim ** -0.5; pruned models
  pass the scale of the original head dimension so pruning does not change the softmax
  temperature.
  """
  width: int
  num_heads: int
  head_dim: int | None = None
  scale: float | None = None
  attn_dropout: float = 0.0
  rel_pos_size: int = 0          # s: decomposed relative position tables [2s - 1, d]; 0: none
  rel_pos_resize: str = 'linear'  # 'linear' (detectron2) or 'bicubic' (official Eventful)
  dtype: Dtype = jnp.float32

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.width // self.num_heads

  @property
  def softmax_scale(self) -> float:
    return self.scale if self.scale is not None else self.dim_per_head ** -0.5

  def setup(self):
    proj = lambda: nn.DenseGeneral((self.num_heads, self.dim_per_head), dtype=self.dtype,
                                   kernel_init=dense_init())
    self.query, self.key, self.value = proj(), proj(), proj()
    self.out = nn.DenseGeneral(self.width, axis=(-2, -1), dtype=self.dtype,
                               kernel_init=dense_init())
    self.dropout = nn.Dropout(self.attn_dropout)
    if self.rel_pos_size:  # zero-initialised, as detectron2's rel_pos_zero_init
      shape = (2 * self.rel_pos_size - 1, self.dim_per_head)
      self.rel_pos_h = self.param('rel_pos_h', nn.initializers.zeros, shape)
      self.rel_pos_w = self.param('rel_pos_w', nn.initializers.zeros, shape)

  def rel_pos_tables(self, grid: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """The per-axis relative position matrices at a token grid: [gh, gh, d], [gw, gw, d]."""
    return (F.rel_pos_table(self.rel_pos_h, grid[0], self.rel_pos_resize),
            F.rel_pos_table(self.rel_pos_w, grid[1], self.rel_pos_resize))

  def rel_pos_bias(self, q: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Logit bias [B, H, N, N] of the queries q [B, H, N, d] (heads first) on a token grid."""
    return F.rel_pos_bias(*F.rel_pos_terms(q, *self.rel_pos_tables(grid), grid))

  def qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x: [B, N, D] -> q, k, v each [B, N, H, d]."""
    return self.query(x), self.key(x), self.value(x)

  def __call__(self, x: jax.Array, deterministic: bool = True,
               attention_fn: AttentionFn | None = None, grid: tuple[int, int] | None = None,
               window: int = 0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: [B, N, D] -> (out [B, N, D], info {'q', 'k', 'v': [B, N, H, d], 'weights': ...}).

    `attention_fn` replaces `functional.dot_product_attention` (see the module docstring); if
    it answers only some queries, out is [B, K, D] and info['rows'] [B, K] says which. `grid`
    is the (gh, gw) layout of the N tokens (relative positions and windows need it); with
    `window` > 0 the tokens attend inside window x window tiles of the grid, padded with
    tokens whose q, k, v are those of a zero token (the biases: detectron2 pads the normed
    tokens with zeros), and info's 'weights' are per window."""
    q, k, v = self.qkv(x)
    qa, ka, va, rel_grid = q, k, v, grid
    if window:
      pads = self.qkv(jnp.zeros((1, 1, x.shape[-1]), x.dtype))
      qa, ka, va = (F.window_partition(t, grid, window, p[0, 0]) for t, p in zip((q, k, v), pads))
      rel_grid = (window, window)
    extra = {}
    if self.rel_pos_size:
      extra['bias'] = self.rel_pos_bias(F.heads_first(qa), rel_grid)
    out, info = (attention_fn or F.dot_product_attention)(
        qa, ka, va, scale=self.softmax_scale,
        dropout=lambda w: self.dropout(w, deterministic=deterministic), **extra)
    if window:
      out = F.window_merge(out, grid, window)
    return self.out(out), {'q': q, 'k': k, 'v': v, **info}


class MlpBlock(nn.Module):
  """Linear(D -> mlp_dim) -> exact GELU -> dropout -> Linear(mlp_dim -> D) -> dropout."""
  width: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  def setup(self):
    self.Dense_0 = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=dense_init())
    self.Dense_1 = nn.Dense(self.width, dtype=self.dtype, kernel_init=dense_init())
    self.drop = nn.Dropout(self.dropout)

  def hidden(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """x: [B, N, D] -> [B, N, mlp_dim] (after GELU and dropout)."""
    return self.drop(gelu(self.Dense_0(x)), deterministic=deterministic)

  def __call__(self, x: jax.Array, deterministic: bool = True,
               hidden_fn: HiddenFn | None = None) -> jax.Array:
    """x: [B, N, D] -> [B, N, D]; `hidden_fn` transforms the hidden activations [B, N, mlp_dim]
    after GELU and dropout."""
    h = self.hidden(x, deterministic)
    if hidden_fn is not None:
      h = hidden_fn(h)
    return self.drop(self.Dense_1(h), deterministic=deterministic)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)), with stochastic depth."""
  width: int
  num_heads: int
  mlp_dim: int
  head_dim: int | None = None
  attn_scale: float | None = None
  dropout: float = 0.0
  attn_dropout: float = 0.0
  droppath: float = 0.0
  window_size: int = 0               # > 0: attend inside windows of this side (ViTDet)
  grid: tuple[int, int] = (0, 0)     # the token grid (windows and relative positions need it)
  rel_pos_size: int = 0              # Attention.rel_pos_size
  rel_pos_resize: str = 'linear'
  dtype: Dtype = jnp.float32

  def setup(self):
    self.LayerNorm_0 = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)
    self.MultiHeadDotProductAttention_1 = Attention(
        self.width, self.num_heads, self.head_dim, self.attn_scale, self.attn_dropout,
        self.rel_pos_size, self.rel_pos_resize, self.dtype)
    self.LayerNorm_2 = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)
    self.MlpBlock_3 = MlpBlock(self.width, self.mlp_dim, self.dropout, self.dtype)
    self.drop = nn.Dropout(self.dropout)

  # Readable aliases for method code.
  @property
  def norm1(self):
    return self.LayerNorm_0

  @property
  def attn(self):
    return self.MultiHeadDotProductAttention_1

  @property
  def norm2(self):
    return self.LayerNorm_2

  @property
  def mlp(self):
    return self.MlpBlock_3

  def residual(self, x: jax.Array, branch: jax.Array, deterministic: bool) -> jax.Array:
    """x + drop_path(dropout(branch)); both [B, N, D]."""
    branch = self.drop(branch, deterministic=deterministic)
    rng = None if deterministic or self.droppath == 0.0 else self.make_rng('dropout')
    return x + F.drop_path(branch, self.droppath, rng)

  def attend(self, x: jax.Array, deterministic: bool = True,
             attention_fn: AttentionFn | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The attention half: x + Attn(LN(x)), [B, N, D] -> ([B, N, D], the attention's info).
    Where the attention function answered only some queries (info['rows'] [B, K]), only those
    rows of x go on: -> [B, K, D]. A windowed block attends inside windows of its grid."""
    branch, info = self.attn(self.norm1(x), deterministic, attention_fn, self.grid,
                             self.window_size)
    if 'rows' in info:
      x = F.gather_tokens(x, info['rows'])
    return self.residual(x, branch, deterministic), info

  def feed_forward(self, x: jax.Array, deterministic: bool = True,
                   hidden_fn: HiddenFn | None = None) -> jax.Array:
    """The MLP half: x + MLP(LN(x)), [B, N, D] -> [B, N, D]."""
    return self.residual(x, self.mlp(self.norm2(x), deterministic, hidden_fn), deterministic)

  def __call__(self, x: jax.Array, deterministic: bool = True,
               attention_fn: AttentionFn | None = None,
               hidden_fn: HiddenFn | None = None) -> jax.Array:
    """x: [B, N, D] -> [B, N, D] (both halves; hooks as in `attend` and `feed_forward`)."""
    return self.feed_forward(self.attend(x, deterministic, attention_fn)[0], deterministic,
                             hidden_fn)
