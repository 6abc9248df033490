"""TokenLearner and TokenFuser (Ryoo et al., NeurIPS 2021) on the shared backbone, in the
semantics of the Scenic project's `token_learner` model.

* `TokenLearner` turns the N patch tokens of one image (or one frame) into S learned tokens:
  LN -> per-position logits for S maps -> weights -> weighted sums of the *un-normalised* inputs.
  'v1.1' (Scenic's default): MLP D -> 64 -> S, softmax over positions.
  'v1.0' (the paper's): three 3x3 convs to S channels with GELU, one more 3x3 conv, sigmoid;
  Scenic sums over positions where the paper says average (`reduce='sum'|'mean'`).
* `TokenFuser` maps S tokens back to the N positions: LN -> Dense over the token axis
  (zero-initialised) -> LN, times sigmoid mixing weights computed from the original tokens;
  the caller adds it to the original as a residual, so it is the identity at initialisation.
* `TokenLearnerViT(ViT)`: blocks before `learner_layer` see all tokens; then
  - fuser=False: one TokenLearner, and the later blocks see S tokens (T*S for clips);
  - fuser=True: every later block runs learner -> block -> fuser + residual on the patch tokens.
  Prefix tokens (the class token, with classifier='token') bypass learner and fuser. For clips
  (`num_frames=T`) the learner runs per time step: [B, T*N, D] -> [B*T, N, D] -> [B, T*S, D].

The ViT's parameter names are unchanged, so a dense checkpoint initialises everything but the
learner/fuser modules. aux['learner_weights']: the first learner's weights [B*T, S, N].
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokensparse import functional as F
from tokensparse.backbone import layers
from tokensparse.backbone.vit import ViT
from tokensparse.methods.token_learner import ops


class MaskingMlp(nn.Module):
  """Dense(bottleneck) -> GELU -> dropout -> Dense(out) (Scenic's `token_masking` MlpBlock;
  tanh-approximate GELU, as flax's default that Scenic uses)."""
  bottleneck: int
  out: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    x = nn.gelu(nn.Dense(self.bottleneck, dtype=self.dtype, name='Dense_0')(x))
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    return nn.Dense(self.out, dtype=self.dtype, name='Dense_1')(x)


class TokenLearner(nn.Module):
  """N tokens [B, N, D] -> S learned tokens [B, S, D] and their weights [B, S, N]."""
  num_tokens: int
  version: str = 'v1.1'
  bottleneck: int = 64
  reduce: str = 'sum'        # v1.0 pooling: Scenic sums, the paper averages
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, grid: tuple[int, int] | None = None,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    """x: [B, N, D]; `grid` (h, w) with h*w = N is needed by v1.0's convolutions."""
    y = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm')(x)
    if self.version == 'v1.1':
      logits = MaskingMlp(self.bottleneck, self.num_tokens, self.dropout, self.dtype,
                          name='token_masking')(y, deterministic)
      reduce = 'sum'
    elif self.version == 'v1.0':
      b, n, d = x.shape
      if grid is None or grid[0] * grid[1] != n:
        raise ValueError(f'TokenLearner v1.0 needs the token grid: got {grid} for {n} tokens')
      y = y.reshape(b, grid[0], grid[1], d)
      for i in range(4):
        y = nn.Conv(self.num_tokens, (3, 3), padding='SAME', use_bias=False, dtype=self.dtype,
                    name=f'Conv_{i}')(y)
        y = nn.gelu(y) if i < 3 else y
      logits = y.reshape(b, n, self.num_tokens)
      reduce = self.reduce
    else:
      raise ValueError(f"token_learner.version={self.version!r}: expected 'v1.0' or 'v1.1'")
    weights = ops.learned_token_weights(logits, self.version)
    return ops.pool_tokens(weights, x, reduce), weights


class TokenFuser(nn.Module):
  """S processed tokens [B, S, D] + the original N tokens [B, N, D] -> an update [B, N, D]
  that is exactly zero at initialisation (add it to the original)."""
  bottleneck: int = 64
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, original: jax.Array,
               deterministic: bool = True) -> jax.Array:
    s = tokens.shape[1]
    y = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='mix_norm1')(tokens)
    y = nn.Dense(s, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 name='token_mix')(jnp.swapaxes(y, 1, 2))        # mixes the S tokens
    y = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='mix_norm2')(
        jnp.swapaxes(y, 1, 2))
    m = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm')(original)
    mix = jax.nn.sigmoid(MaskingMlp(self.bottleneck, s, self.dropout, self.dtype,
                                    name='token_masking')(m, deterministic))
    out = ops.fuse_tokens(y, mix)
    return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class TokenLearnerViT(ViT):
  """The backbone with TokenLearner before block `learner_layer` (see the module docstring)."""
  num_learned_tokens: int = 8
  learner_layer: int = 6
  learner_version: str = 'v1.1'
  learner_reduce: str = 'sum'
  learner_bottleneck: int = 64
  fuser: bool = False

  def setup(self):
    super().setup()
    if not 0 <= self.learner_layer < self.depth:
      raise ValueError(f'learner_layer={self.learner_layer} is not a block index of a '
                       f'{self.depth}-block model')
    learner = lambda: TokenLearner(self.num_learned_tokens, self.learner_version,
                                   self.learner_bottleneck, self.learner_reduce, self.dropout,
                                   self.dtype)
    if self.fuser:
      for i in range(self.learner_layer, self.depth):
        setattr(self, f'token_learner_{i}', learner())
        setattr(self, f'token_fuser_{i}', TokenFuser(self.learner_bottleneck, self.dropout,
                                                     self.dtype))
    else:
      self.token_learner = learner()

  def learn(self, module: TokenLearner, x: jax.Array, deterministic: bool):
    """[B, p + T*N, D] -> [B, p + T*S, D], learner applied per frame; and its weights."""
    p, t = self.num_prefix, self.frames
    tokens, weights = module(F.split_frames(x[:, p:], t), self.grid, deterministic)
    return jnp.concatenate([x[:, :p], F.merge_frames(tokens, t)], axis=1), weights

  def __call__(self, images: jax.Array, train: bool = False):
    deterministic = not train
    p, t, start = self.num_prefix, self.frames, self.learner_layer

    def between(i, x, carry):
      """Learn tokens before block `learner_layer`; with the fuser, before every later block
      too, and fuse each such block's output back into all positions after it."""
      residual, weights = carry
      if self.fuser and i > start:  # fuse the output of block i - 1 into the saved positions
        update = getattr(self, f'token_fuser_{i - 1}')(
            F.split_frames(x[:, p:], t), F.split_frames(residual[:, p:], t), deterministic)
        x = jnp.concatenate([x[:, :p], residual[:, p:] + F.merge_frames(update, t)], axis=1)
      if i == self.depth or i < start or (i > start and not self.fuser):
        return x, (residual, weights)
      module = getattr(self, f'token_learner_{i}') if self.fuser else self.token_learner
      y, w = self.learn(module, x, deterministic)
      return y, (x, w if weights is None else weights)

    x, (_, weights) = self.run_blocks(self.embed(images, deterministic), deterministic,
                                      (None, None), between=between)
    return self.finish(x, {'learner_weights': weights})
