"""ViTDet's simple feature pyramid (Li et al. 2022; detectron2's `SimpleFeaturePyramid`): the
plain backbone's last feature map [B, gh, gw, D] (stride p, the patch size) -> one map per
scale factor, each with `out_channels` channels:

    scale 4:   ConvT 2x2/2 (D -> D/2) -> LN -> GELU -> ConvT 2x2/2 (-> D/4)   stride p/4
    scale 2:   ConvT 2x2/2 (D -> D/2)                                       stride p/2
    scale 1:   (nothing)                                                    stride p
    scale 0.5: max pool 2x2/2                                               stride 2p
  then per scale: Conv 1x1 (no bias) -> LN -> Conv 3x3 (no bias) -> LN.

LayerNorms act over channels with eps 1e-6, as detectron2's. Submodules are named after the
scale's stride (`simfp_2` is stride 4 for patch 16, as detectron2's `simfp_2`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokensparse.backbone import layers

SCALES = (4.0, 2.0, 1.0, 0.5)


class ConvTranspose2x2(nn.Module):
  """PyTorch's ConvTranspose2d(kernel_size=2, stride=2): every input pixel becomes a 2 x 2
  block, out[2i + a, 2j + b] = x[i, j] @ kernel[a, b] + bias. [B, H, W, C] -> [B, 2H, 2W, F]."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (2, 2, x.shape[-1],
                                                                   self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    b, h, w, _ = x.shape
    y = jnp.einsum('bhwc,ijcf->bhiwjf', x.astype(self.dtype), kernel.astype(self.dtype))
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class PyramidLevel(nn.Module):
  """One scale of the pyramid (see the module docstring)."""
  scale: float
  out_channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    ln = lambda name: nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name=name)
    if self.scale == 4.0:
      x = ConvTranspose2x2(d // 2, self.dtype, name='up_0')(x)
      x = layers.gelu(ln('up_norm')(x))
      x = ConvTranspose2x2(d // 4, self.dtype, name='up_1')(x)
    elif self.scale == 2.0:
      x = ConvTranspose2x2(d // 2, self.dtype, name='up_0')(x)
    elif self.scale == 0.5:
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.Conv(self.out_channels, (1, 1), use_bias=False, dtype=self.dtype, name='lateral')(x)
    x = ln('lateral_norm')(x)
    x = nn.Conv(self.out_channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                dtype=self.dtype, name='output')(x)
    return ln('output_norm')(x)


class SimpleFeaturePyramid(nn.Module):
  """features [B, gh, gw, D] -> a tuple of maps, one per scale factor, [B, s*gh, s*gw, C]."""
  scale_factors: Sequence[float] = SCALES
  out_channels: int = 256
  patch_size: int = 16
  dtype: Any = jnp.float32

  def setup(self):
    for s in self.scale_factors:
      if s not in SCALES:
        raise ValueError(f'pyramid scale factor {s}: expected one of {SCALES}')
    self.levels = [PyramidLevel(float(s), self.out_channels, self.dtype,
                                name=f'simfp_{level_index(self.patch_size, s)}')
                   for s in self.scale_factors]

  @property
  def strides(self) -> tuple[int, ...]:
    """Pixels per cell of each output map."""
    return tuple(int(self.patch_size / s) for s in self.scale_factors)

  def __call__(self, features: jax.Array) -> tuple[jax.Array, ...]:
    return tuple(level(features) for level in self.levels)


def level_index(patch_size: int, scale: float) -> int:
  """log2 of a level's stride (detectron2's stage name: stride 4 -> 'simfp_2')."""
  return int(math.log2(patch_size / scale))
