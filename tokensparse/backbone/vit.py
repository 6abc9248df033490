"""ViT / DeiT: the one backbone every tokensparse method extends.

    images [B, H, W, C] -> patch conv -> (+cls, +dist) -> +position embedding
      -> depth x pre-LN EncoderBlock -> encoder_norm -> head(cls) -> logits [B, classes]

`classifier='gap'` drops the class token and classifies the mean token (Scenic/TokenLearner).
`num_frames=T > 0` makes it a ViViT-style video classifier (spatio-temporal attention):
clips [B, T, H, W, C] -> per-frame patch tokens + spatial position embedding (shared by the
frames) + `temporal_embedding` [1, T, D] -> the same blocks over all T*N tokens at once;
tokens are ordered frame by frame, so `x[:, p:].reshape(B, T, N, D)` recovers the frames.

`video='factorised'` (with num_frames and `temporal_depth=L`) makes it ViViT's factorised
encoder (Arnab et al. 2021, model 2), the video model of the Eventful paper:
    clips [B, T, H, W, C] -> tubelet embedding (a t x p x p conv, `tubelet=t`) -> T' = T/t
    time steps of N tokens -> per step: +cls, +position embedding, the spatial blocks (the
    `Transformer` of an image ViT, names and all), encoder_norm, the step's cls (or mean)
    -> [B, T', D] -> +temporal cls, +temporal position embedding -> L temporal blocks
    (`TemporalTransformer`) -> norm -> head(cls) -> logits.
The time steps are folded into the batch of the spatial part ([B*T', 1+N, D]), so `embed` ->
`run_blocks` -> `finish` and every method built on them act on the spatial encoder per step;
`finish` runs the temporal encoder (`temporal`). `video='frames'` is the same without a
temporal encoder: the head classifies every step and the logits are averaged (late fusion, the
per-frame baseline, which cannot see the order of the frames).

ViTDet options (Li et al. 2022; detectron2's `ViT`, the detection backbone of the Eventful
paper): `window_size=w` makes every block not in `global_blocks` attend inside w x w windows
of the token grid (padded); `rel_pos=True` gives every block decomposed relative position
tables (windowed blocks: w positions; global blocks: `rel_pos_size`, default the grid;
resized per `rel_pos_resize`); `posemb_grid=s` stores the absolute position embedding for an
s x s grid and resizes it bicubically to the model's grid. `features(images)` returns the
last block's tokens as a map [B, gh, gw, D] (no final norm, as detectron2), the input of
the simple feature pyramid (backbone/pyramid.py).

`ViT.__call__` returns `(logits, aux)`; aux holds `tokens` (final normed tokens [B, T, D]),
`pre_logits` ([B, D]) and, with `capture_blocks=True`, `blocks` (each block's output).
Method models (tokensparse/methods/) subclass ViT and write only what differs:
`embed` -> `run_blocks` with their callbacks (`between` blocks, `after_attention` inside a
block, and per block the `attention_fn` / `hidden_fn` of layers.py) -> `finish` (final norm ->
head -> aux -> float32 logits).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokensparse import functional as F
from tokensparse.backbone import layers

# name -> (width, depth, num_heads, mlp_dim); the patch size comes as '/16' in a variant string.
VARIANTS = {
    'Ti': (192, 12, 3, 768),
    'S': (384, 12, 6, 1536),
    'B': (768, 12, 12, 3072),
    'L': (1024, 24, 16, 4096),
}


def parse_variant(variant: str) -> dict[str, int]:
  """'S/16' -> dict(width=384, depth=12, num_heads=6, mlp_dim=1536, patch_size=16)."""
  name, _, patch = variant.partition('/')
  if name not in VARIANTS or not patch.isdigit():
    raise ValueError(f'model.variant={variant!r}: expected one of '
                     f'{sorted(VARIANTS)} followed by /patch, e.g. "S/16"')
  width, depth, heads, mlp = VARIANTS[name]
  return dict(width=width, depth=depth, num_heads=heads, mlp_dim=mlp, patch_size=int(patch))


def check_head(classifier: str, distilled: bool) -> None:
  """Raise ValueError naming model.classifier / model.distilled where they cannot work."""
  if classifier not in ('token', 'gap'):
    raise ValueError(f"model.classifier={classifier!r}: expected 'token' or 'gap'")
  if distilled and classifier != 'token':
    raise ValueError(f"model.distilled={distilled!r}: a distillation token needs "
                     "model.classifier='token'")


def per_layer(value: int | Sequence[int] | None, i: int):
  """A width that is either one int for all layers or a sequence with one entry per layer."""
  if value is None or isinstance(value, int):
    return value
  return int(value[i])


class AddPositionEmbs(nn.Module):
  """Holds the learned position embedding `pos_embedding` [1, T, D] (read by `ViT.embed`)."""
  num_tokens: int
  width: int

  def setup(self):
    self.pos_embedding = self.param('pos_embedding', nn.initializers.normal(stddev=0.02),
                                    (1, self.num_tokens, self.width))


class Encoder(nn.Module):
  """Position embedding, the blocks (`encoderblock_i`) and `encoder_norm`."""
  num_tokens: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int | Sequence[int]
  head_dim: int | Sequence[int] | None = None
  attn_scale: float | None = None
  dropout: float = 0.0
  attn_dropout: float = 0.0
  droppath: float = 0.0
  grid: tuple[int, int] = (0, 0)     # the token grid (ViTDet options need it)
  window_size: int = 0
  global_blocks: tuple[int, ...] = ()
  rel_pos: bool = False
  rel_pos_size: int = 0
  rel_pos_resize: str = 'linear'
  dtype: Any = jnp.float32

  def setup(self):
    self.posembed_input = AddPositionEmbs(self.num_tokens, self.width)
    for i in range(self.depth):
      # Stochastic depth grows linearly with depth, as in DeiT/timm.
      rate = self.droppath * i / max(self.depth - 1, 1)
      window = self.window_size if i not in self.global_blocks else 0
      rel = (window or self.rel_pos_size or self.grid[0]) if self.rel_pos else 0
      setattr(self, f'encoderblock_{i}', layers.EncoderBlock(
          width=self.width, num_heads=self.num_heads, mlp_dim=per_layer(self.mlp_dim, i),
          head_dim=per_layer(self.head_dim, i), attn_scale=self.attn_scale,
          dropout=self.dropout, attn_dropout=self.attn_dropout, droppath=rate,
          window_size=window, grid=tuple(self.grid), rel_pos_size=rel,
          rel_pos_resize=self.rel_pos_resize, dtype=self.dtype))
    self.encoder_norm = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype)

  @property
  def blocks(self) -> tuple[layers.EncoderBlock, ...]:
    return tuple(getattr(self, f'encoderblock_{i}') for i in range(self.depth))


class ViT(nn.Module):
  """Vision Transformer / DeiT classifier. See the module docstring for the data flow."""
  num_classes: int
  image_size: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int | Sequence[int]
  head_dim: int | Sequence[int] | None = None
  attn_scale: float | None = None
  distilled: bool = False
  classifier: str = 'token'   # 'token' (class token) or 'gap' (mean of the final tokens)
  num_frames: int = 0         # 0: images [B, H, W, C]; T > 0: clips [B, T, H, W, C]
  video: str = 'joint'        # clips: 'joint' attention, 'factorised' encoder, or 'frames'
  tubelet: int = 1            # frames per tubelet ('factorised' and 'frames')
  temporal_depth: int = 0     # temporal blocks of a factorised encoder
  window_size: int = 0        # ViTDet: windowed attention (0: every block global)
  global_blocks: tuple[int, ...] = ()   # blocks that stay global when window_size > 0
  rel_pos: bool = False       # decomposed relative position biases in every block
  rel_pos_size: int = 0       # positions per axis of the global blocks' tables (0: the grid)
  rel_pos_resize: str = 'linear'        # 'linear' (detectron2) or 'bicubic' (official Eventful)
  posemb_grid: int = 0        # side of the stored absolute position grid (0: the model's grid)
  dropout: float = 0.0
  attn_dropout: float = 0.0
  droppath: float = 0.0
  dtype: Any = jnp.float32

  @property
  def grid(self) -> tuple[int, int]:
    return (self.image_size // self.patch_size,) * 2

  @property
  def num_patches(self) -> int:
    return self.grid[0] * self.grid[1]

  @property
  def num_prefix(self) -> int:
    """Tokens before the patches: cls (none with classifier='gap'), plus the distillation
    token for distilled DeiT."""
    return (self.classifier == 'token') + int(self.distilled)

  @property
  def factorised(self) -> bool:
    """A video model whose spatial encoder runs on each time step alone ('factorised' and
    'frames')."""
    return bool(self.num_frames) and self.video in ('factorised', 'frames')

  @property
  def frames(self) -> int:
    """Time steps inside one token sequence: 1 for images and for a factorised model."""
    return 1 if self.factorised else max(self.num_frames, 1)

  @property
  def steps(self) -> int:
    """Token sequences per input: the T' tubelet steps of a factorised model, else 1."""
    return self.num_frames // self.tubelet if self.factorised else 1

  def setup(self):
    check_head(self.classifier, self.distilled)
    p = self.patch_size
    window = (self.tubelet, p, p) if self.factorised else (p, p)
    self.embedding = nn.Conv(self.width, window, strides=window, padding='VALID',
                             dtype=self.dtype)
    if self.classifier == 'token':
      self.cls = self.param('cls', nn.initializers.truncated_normal(0.02), (1, 1, self.width))
    if self.factorised and self.temporal_depth:
      if self.classifier == 'token':
        self.temporal_cls = self.param('temporal_cls', nn.initializers.zeros, (1, 1, self.width))
      self.TemporalTransformer = Encoder(
          num_tokens=self.num_prefix + self.steps, width=self.width, depth=self.temporal_depth,
          num_heads=self.num_heads, mlp_dim=per_layer(self.mlp_dim, self.depth - 1),
          head_dim=per_layer(self.head_dim, self.depth - 1), attn_scale=self.attn_scale,
          dropout=self.dropout, attn_dropout=self.attn_dropout, droppath=self.droppath,
          dtype=self.dtype)
    elif self.num_frames and not self.factorised:
      # Zero-initialised, so an image checkpoint starts as the same model on every frame.
      self.temporal_embedding = self.param('temporal_embedding', nn.initializers.zeros,
                                           (1, self.num_frames, self.width))
    if self.distilled:
      self.dist = self.param('dist', nn.initializers.truncated_normal(0.02), (1, 1, self.width))
    self.Transformer = Encoder(
        num_tokens=self.num_prefix + (self.posemb_grid ** 2 or self.num_patches),
        width=self.width, depth=self.depth, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        head_dim=self.head_dim, attn_scale=self.attn_scale, dropout=self.dropout,
        attn_dropout=self.attn_dropout, droppath=self.droppath, grid=self.grid,
        window_size=self.window_size, global_blocks=tuple(self.global_blocks),
        rel_pos=self.rel_pos, rel_pos_size=self.rel_pos_size,
        rel_pos_resize=self.rel_pos_resize, dtype=self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=layers.dense_init())
    if self.distilled:
      self.head_dist = nn.Dense(self.num_classes, dtype=self.dtype,
                                kernel_init=layers.dense_init())
    self.embed_dropout = nn.Dropout(self.dropout)

  @property
  def blocks(self) -> tuple[layers.EncoderBlock, ...]:
    return self.Transformer.blocks

  def check_images(self, images: jax.Array, frames: int | None = None) -> None:
    """Raise ValueError unless `images` have this model's input shape (`frames` overrides the
    frames a clip has: one tubelet step of a factorised model, say)."""
    s = self.image_size
    if self.num_frames:
      t = frames or self.num_frames
      ok = images.ndim == 5 and tuple(images.shape[1:4]) == (t, s, s)
      expected = f'[batch, {t}, {s}, {s}, channels] (model.num_frames=' \
                 f'{self.num_frames}, model.image_size={s})'
    else:
      ok = images.ndim == 4 and tuple(images.shape[1:3]) == (s, s)
      expected = f'[batch, {s}, {s}, channels] (model.image_size={s})'
    if not ok:
      raise ValueError(f'{"clips" if self.num_frames else "images"} have shape '
                       f'{tuple(images.shape)}; this model expects {expected}')

  def embed(self, images: jax.Array, deterministic: bool = True,
            frames: int | None = None) -> jax.Array:
    """images [B, H, W, C] (clips [B, T, H, W, C]) -> tokens [B, num_prefix + T*N, D],
    position embeddings added. Factorised: clips of `frames` (default num_frames) frames ->
    [B*T', num_prefix + N, D], time steps folded into the batch."""
    self.check_images(images, frames)
    if self.factorised:
      x = self.embedding(images.astype(self.dtype))              # [B, T', gh, gw, D]
      b = x.shape[0] * x.shape[1]
    else:
      b = images.shape[0]
      x = self.embedding(images.reshape(-1, *images.shape[-3:]).astype(self.dtype))
    x = x.reshape(b, self.frames, self.num_patches, self.width)
    posemb = self.Transformer.posembed_input.pos_embedding.astype(x.dtype)
    p = self.num_prefix
    if self.posemb_grid and (self.posemb_grid,) * 2 != self.grid:
      posemb = jnp.concatenate([posemb[:, :p], F.grid_posemb(posemb[:, p:], self.grid)], 1)
    x = x + posemb[:, None, p:]
    if self.num_frames and not self.factorised:
      x = x + self.temporal_embedding.astype(x.dtype)[:, :, None]
    x = x.reshape(b, -1, self.width)
    prefix = [jnp.broadcast_to(self.cls, (b, 1, self.width))] if self.classifier == 'token' else []
    if self.distilled:
      prefix.append(jnp.broadcast_to(self.dist, (b, 1, self.width)))
    if prefix:
      x = jnp.concatenate([jnp.concatenate(prefix, axis=1).astype(x.dtype) + posemb[:, :p], x],
                          axis=1)
    return self.embed_dropout(x, deterministic=deterministic)

  def pool(self, tokens: jax.Array) -> jax.Array:
    """Normed tokens [B, T, D] -> the class token's (or the mean token) [B, D]."""
    return tokens[:, 0] if self.classifier == 'token' else tokens.mean(axis=1)

  def classify(self, tokens: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Normed tokens [B, T, D] -> logits [B, classes] and the head's aux entries."""
    pre_logits = self.pool(tokens)
    logits = self.head(pre_logits)
    aux = {'pre_logits': pre_logits}
    if self.distilled:
      # DeiT: average of the class head and the distillation head at inference.
      aux['logits_cls'] = logits
      aux['logits_dist'] = self.head_dist(tokens[:, 1])
      logits = (logits + aux['logits_dist']) / 2
    return logits, aux

  def finish(self, x: jax.Array, aux: dict[str, Any] | None = None
             ) -> tuple[jax.Array, dict[str, Any]]:
    """The forward tail every model shares: final tokens [B, T, D] -> encoder_norm -> head ->
    (float32 logits [B, classes], aux updated with the head's entries and the normed 'tokens')."""
    tokens = self.Transformer.encoder_norm(x)
    if self.factorised:
      features = self.pool(tokens)
      logits, head_aux = self.temporal(features.reshape(-1, self.steps, self.width))
    else:
      logits, head_aux = self.classify(tokens)
    aux = dict(aux or {})
    aux.update(head_aux, tokens=tokens)
    return logits.astype(jnp.float32), aux

  def temporal(self, features: jax.Array, deterministic: bool = True
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A factorised model's temporal encoder and head: per-step features [B, T', D] (the
    spatial encoder's pooled outputs) -> (logits [B, classes], {'pre_logits', 'step_features'}).
    video='frames': the head on every step, logits averaged ('pre_logits' per step)."""
    if not self.temporal_depth:
      return self.head(features).astype(jnp.float32).mean(axis=1), {
          'pre_logits': features, 'step_features': features}
    b = features.shape[0]
    encoder = self.TemporalTransformer
    posemb = encoder.posembed_input.pos_embedding.astype(features.dtype)
    p = self.num_prefix
    x = features + posemb[:, p:]
    if self.classifier == 'token':
      cls = jnp.broadcast_to(self.temporal_cls, (b, 1, self.width)).astype(x.dtype)
      x = jnp.concatenate([cls + posemb[:, :p], x], axis=1)
    for block in encoder.blocks:
      x = block(x, deterministic)
    pre_logits = self.pool(encoder.encoder_norm(x))
    return self.head(pre_logits).astype(jnp.float32), {'pre_logits': pre_logits,
                                                       'step_features': features}

  def run_blocks(self, x: jax.Array, deterministic: bool = True, carry: Any = None, *,
                 between: Callable | None = None, after_attention: Callable | None = None,
                 attention_fn: Callable | None = None, hidden_fn: Callable | None = None):
    """Every block on the tokens x [B, T, D]; a method passes only the callbacks it needs:

        between(i, x, carry) -> (x, carry)           before block i; i = depth after the last
        after_attention(i, x, info, carry) -> (x, carry)   between block i's two halves, with
                                                     the attention's info (q, k, v, weights)
        attention_fn(i, carry) -> attention function of block i, or None (the default)
        hidden_fn(i, carry) -> MLP hidden transform of block i, or None

    `carry` is whatever the method threads through (masks, sizes, positions); the token count
    may change anywhere. Returns (x, carry)."""
    for i, block in enumerate(self.blocks):
      if between is not None:
        x, carry = between(i, x, carry)
      fn = attention_fn(i, carry) if attention_fn is not None else None
      x, info = block.attend(x, deterministic, fn)
      if after_attention is not None:
        x, carry = after_attention(i, x, info, carry)
      x = block.feed_forward(x, deterministic,
                             hidden_fn(i, carry) if hidden_fn is not None else None)
    if between is not None:
      x, carry = between(self.depth, x, carry)
    return x, carry

  def features(self, images: jax.Array, train: bool = False) -> jax.Array:
    """images [B, H, W, C] -> the last block's tokens as a map [B, gh, gw, D] (no final norm:
    the input of a feature pyramid). The model must have no prefix tokens."""
    x, _ = self.run_blocks(self.embed(images, not train), not train)
    return x.reshape(x.shape[0], *self.grid, self.width)

  def __call__(self, images: jax.Array, train: bool = False,
               capture_blocks: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    def capture(i, x, outs):
      return x, outs + [x] if i else outs

    x, outs = self.run_blocks(self.embed(images, not train), not train, [],
                              between=capture if capture_blocks else None)
    return self.finish(x, {'blocks': outs} if capture_blocks else {})
