"""Shared Flax layers: attention, MLP and the pre-LN encoder block.

Parameter names follow the vit_jax / big_vision scheme (`MultiHeadDotProductAttention_1/query`,
`MlpBlock_3/Dense_0`, ...) so that vit_jax `.npz` checkpoints load without renaming; timm names
are mapped onto this scheme in `tokensparse.convert`.

Modules are written with `setup` (not `@compact`) so method models can call their parts one
at a time: `block.attn.qkv(y)`, `block.mlp(y)`, `block.norm1(x)`.

Extension points (generic, in the spirit of Flax's `attention_fn` and timm's `block_fn`; no
method is named here):
  * `Attention(x, bias=, weights_fn=, qkv_fn=, with_info=)`: an additive logit bias
    broadcast to [B, H, N, M]; a replacement for the softmax (logits -> weights); a transform
    of the projected q, k, v; and, with `with_info`, the q/k/v and weights it used.
  * `MlpBlock(x, hidden_fn=)`: a transform of the hidden activations after GELU.
  * `EncoderBlock.attend(x, ...)` and `EncoderBlock.feed_forward(x, ...)`: the two residual
    halves of a block, so a method can act on the tokens between them.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokensparse import functional as F

Dtype = Any
WeightsFn = Callable[[jax.Array], jax.Array]            # logits [B, H, N, M] -> weights
QkvFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]
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

  def qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x: [B, N, D] -> q, k, v each [B, N, H, d]."""
    return self.query(x), self.key(x), self.value(x)

  def __call__(self, x: jax.Array, deterministic: bool = True, *,
               bias: jax.Array | None = None, weights_fn: WeightsFn | None = None,
               qkv_fn: QkvFn | None = None, with_info: bool = False):
    """x: [B, N, D] -> [B, N, D] (and, `with_info`, {'q', 'k', 'v': [B, N, H, d],
    'weights': [B, H, N, N]}).

    `qkv_fn(q, k, v) -> (q, k, v)` transforms the projections; `bias` is added to the scaled
    logits [B, H, N, N]; `weights_fn(logits) -> weights` replaces the float32 softmax."""
    q, k, v = self.qkv(x)
    if qkv_fn is not None:
      q, k, v = qkv_fn(q, k, v)
    if bias is None and weights_fn is None:
      w = F.attention_weights(q, k, self.softmax_scale)
    else:
      logits = F.attention_logits(q, k, self.softmax_scale)
      if bias is not None:
        logits = logits + bias.astype(logits.dtype)
      w = (weights_fn or F.softmax)(logits).astype(q.dtype)
    out = self.out(F.attend(self.dropout(w, deterministic=deterministic), v))
    return (out, {'q': q, 'k': k, 'v': v, 'weights': w}) if with_info else out


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
               hidden_fn: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
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
  dtype: Dtype = jnp.float32

  def setup(self):
    self.LayerNorm_0 = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype)
    self.MultiHeadDotProductAttention_1 = Attention(
        self.width, self.num_heads, self.head_dim, self.attn_scale, self.attn_dropout, self.dtype)
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

  def attend(self, x: jax.Array, deterministic: bool = True, *, with_info: bool = False,
             **attn_hooks):
    """The attention half: x + Attn(LN(x)), [B, N, D] -> [B, N, D] (and the attention's info
    with `with_info`). `attn_hooks`: `bias`, `weights_fn`, `qkv_fn` (see Attention)."""
    out = self.attn(self.norm1(x), deterministic, with_info=with_info, **attn_hooks)
    branch, info = out if with_info else (out, None)
    x = self.residual(x, branch, deterministic)
    return (x, info) if with_info else x

  def feed_forward(self, x: jax.Array, deterministic: bool = True,
                   hidden_fn: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """The MLP half: x + MLP(LN(x)), [B, N, D] -> [B, N, D]."""
    return self.residual(x, self.mlp(self.norm2(x), deterministic, hidden_fn), deterministic)

  def __call__(self, x: jax.Array, deterministic: bool = True, *,
               hidden_fn: Callable[[jax.Array], jax.Array] | None = None,
               **attn_hooks) -> jax.Array:
    """x: [B, N, D] -> [B, N, D]; hooks as in `attend` and `feed_forward`."""
    return self.feed_forward(self.attend(x, deterministic, **attn_hooks), deterministic,
                             hidden_fn)
