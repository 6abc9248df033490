"""DynamicViT (Rao et al., NeurIPS 2021): learned, hierarchical token dropping on the backbone.

Before each pruning block a small predictor scores the patch tokens still kept (local feature +
mask-weighted global feature). Keep ratios are cumulative against the original patch count:
stage s keeps int(N * keep_ratio ** (s + 1)) tokens (0.7: 137, 96, 67 of 196). The class token
is never dropped.

* train=True: a hard straight-through Gumbel-softmax keep decision is multiplied into the
  running mask (a dropped token stays dropped); all tokens stay in the sequence and attention
  hides dropped keys (`functional.softmax_with_policy`), so shapes never change.
* train=False: the top-k scoring tokens are gathered (class token first, then in score order)
  and the rest are removed; k is a Python int per stage, so shapes are static under jit.

aux: 'keep_probs' (per stage, [B, n_s]), 'masks' (train: per stage keep mask over the original
patch positions, [B, N]), 'kept_indices' (inference: per stage original positions of the kept
tokens, [B, k_s]), 'final_mask' and 'tokens'.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokensparse import functional as F
from tokensparse.backbone import layers
from tokensparse.backbone.vit import ViT
from tokensparse.methods.dynamic_vit import ops

PREDICTOR_LN_EPS = 1e-5  # the predictor uses PyTorch's default LayerNorm epsilon


def keep_counts(num_patches: int, keep_ratio: float, stages: int) -> tuple[int, ...]:
  """Tokens kept after each stage: int(N * rho^(s+1)), truncated as the reference code does."""
  return tuple(int(num_patches * keep_ratio ** (s + 1)) for s in range(stages))


class TokenScorer(nn.Module):
  """Keep/drop scores for tokens: LN -> Dense(C) -> GELU -> [local half | masked-mean global
  half] -> Dense(C/2) -> GELU -> Dense(C/4) -> GELU -> Dense(2) -> log-softmax (column 0 = keep)."""
  width: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    dense = lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=layers.dense_init())
    self.in_norm = nn.LayerNorm(epsilon=PREDICTOR_LN_EPS, dtype=self.dtype)
    self.in_dense = dense(self.width)
    self.out_0, self.out_1, self.out_2 = dense(self.width // 2), dense(self.width // 4), dense(2)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: [B, n, C] patch tokens, mask: [B, n] (1 = still kept) -> log-probs [B, n, 2]."""
    x = layers.gelu(self.in_dense(self.in_norm(x)))
    half = self.width // 2
    local, glob = x[..., :half], ops.masked_mean(x[..., half:], mask)
    x = jnp.concatenate([local, jnp.broadcast_to(glob, local.shape)], axis=-1)
    x = layers.gelu(self.out_1(layers.gelu(self.out_0(x))))
    return jax.nn.log_softmax(self.out_2(x).astype(jnp.float32), axis=-1)


class DynamicViT(ViT):
  """The backbone plus one `TokenScorer` before each block in `prune_layers` (see module doc).

  selector='static' replaces the predictors by one learned logit per patch position and stage:
  the same keep budget, but input-independent (the paper's static-selection baseline).
  """
  keep_ratio: float = 0.7
  prune_layers: Sequence[int] = (3, 6, 9)
  gumbel_noise: bool = True  # False: deterministic argmax decisions in training mode
  selector: str = 'predictor'  # or 'static'

  @property
  def counts(self) -> tuple[int, ...]:
    return keep_counts(self.num_patches, self.keep_ratio, len(self.prune_layers))

  def setup(self):
    super().setup()
    for s in range(len(self.prune_layers)):
      if self.selector == 'static':
        setattr(self, f'static_scores_{s}', self.param(
            f'static_scores_{s}', nn.initializers.zeros, (self.num_patches,)))
      else:
        setattr(self, f'predictor_{s}', TokenScorer(self.width, self.dtype))

  def scores(self, s: int, x: jax.Array, mask: jax.Array, positions: jax.Array) -> jax.Array:
    """Keep/drop log-probabilities [B, n, 2] for the n patch tokens x [B, n, C] at stage s."""
    if self.selector == 'static':
      logit = getattr(self, f'static_scores_{s}')[positions]          # [B, n]
      return jnp.stack([jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit)], axis=-1)
    return getattr(self, f'predictor_{s}')(x, mask)

  def __call__(self, images: jax.Array, train: bool = False, masks=None):
    """images [B, H, W, C] -> (logits [B, classes], aux). `masks` (optional, train mode): one
    fixed keep mask [B, N] per stage used instead of the predictors' decisions."""
    x = self.embed(images, not train)
    b, p, n = x.shape[0], self.num_prefix, self.num_patches
    aux = {'keep_probs': [], 'masks': [], 'kept_indices': []}
    carry = {'mask': jnp.ones((b, n), jnp.float32),       # over the patch tokens now present
             'positions': jnp.broadcast_to(jnp.arange(n), (b, n)),  # their original positions
             'policy': jnp.ones((b, p + n), jnp.float32) if train else None}

    def between(i, x, c):
      if i not in self.prune_layers:
        return x, c
      s = list(self.prune_layers).index(i)
      log_probs = self.scores(s, x[:, p:], c['mask'], c['positions'])
      aux['keep_probs'].append(jnp.exp(log_probs[..., 0]))
      if train:
        if masks is not None:
          decision = masks[s]
        elif self.gumbel_noise:
          decision = ops.gumbel_keep_decision(log_probs, self.make_rng('gumbel'))
        else:
          decision = (log_probs[..., 0] >= log_probs[..., 1]).astype(jnp.float32)
        mask = decision * c['mask']
        aux['masks'].append(mask)
        return x, {**c, 'mask': mask,
                   'policy': jnp.concatenate([jnp.ones((b, p), jnp.float32), mask], axis=1)}
      keep = ops.top_k_keep(log_probs[..., 0], self.counts[s])
      x = jnp.concatenate([x[:, :p], F.gather_tokens(x[:, p:], keep)], axis=1)
      positions = F.gather_tokens(c['positions'], keep)
      aux['kept_indices'].append(positions)
      return x, {**c, 'mask': F.gather_tokens(c['mask'], keep), 'positions': positions}

    def attention_fn(i, c):  # training: dropped tokens stay in the sequence, hidden as keys
      if c['policy'] is None:
        return None
      return functools.partial(F.dot_product_attention, softmax_fn=functools.partial(
          ops.softmax_with_policy, policy=c['policy']))

    x, carry = self.run_blocks(x, not train, carry, between=between, attention_fn=attention_fn)
    aux['final_mask'] = carry['mask']
    return self.finish(x, aux)


class PooledViT(ViT):
  """Structural baseline: 2x2 average pooling of the patch-token grid before `pool_layer`
  (the class token passes through), so later blocks see a quarter of the patch tokens."""
  pool_layer: int = 6

  def __call__(self, images: jax.Array, train: bool = False):
    p, (gh, gw) = self.num_prefix, self.grid

    def pool(i, x, carry):
      if i == self.pool_layer:
        b, _, d = x.shape
        grid = x[:, p:].reshape(b, gh // 2, 2, gw // 2, 2, d).mean(axis=(2, 4))
        x = jnp.concatenate([x[:, :p], grid.reshape(b, -1, d)], axis=1)
      return x, carry

    x, _ = self.run_blocks(self.embed(images, not train), not train, between=pool)
    return self.finish(x)
