"""ViTDet-style detector: the one backbone (with ViTDet's windows, relative positions and no
class token) -> simple feature pyramid -> a one-stage anchor-free head (FCOS-style: a class
tower and a box tower of 3x3 convs with GroupNorm, shared by the levels; per cell K class
logits, 4 distances and a centerness logit).

    images [B, H, W, C] -> backbone.features [B, gh, gw, D] -> pyramid -> head -> outputs
    {'logits' [B, P, K], 'ltrb' [B, P, 4] (pixels), 'centerness' [B, P]}, P cells of all levels

The backbone follows ViTDet; the head is much simpler than the Cascade Mask R-CNN of the papers.
The backbone is a submodule, so the same weights run with a method's backbone in its place
(the Eventful Transformer's, frame by frame: tokensparse/methods/eventful/detection.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokensparse.backbone.pyramid import SimpleFeaturePyramid
from tokensparse.backbone.vit import ViT
from tokensparse.detection import fcos
from tokensparse.flops import vit_macs


class Head(nn.Module):
  """The shared FCOS-style head on every pyramid level."""
  num_classes: int
  convs: int = 2
  prior: float = 0.01
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps: Sequence[jax.Array], strides: Sequence[int]) -> dict:
    c = maps[0].shape[-1]
    groups = min(32, c)
    conv = lambda name, f, **kw: nn.Conv(f, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                                        kernel_init=nn.initializers.normal(0.01), name=name, **kw)
    cls_tower = [(conv(f'cls_{i}', c), nn.GroupNorm(groups, dtype=self.dtype, name=f'cls_gn_{i}'))
                 for i in range(self.convs)]
    box_tower = [(conv(f'box_{i}', c), nn.GroupNorm(groups, dtype=self.dtype, name=f'box_gn_{i}'))
                 for i in range(self.convs)]
    bias = -np.log((1 - self.prior) / self.prior)
    cls_out = conv('cls_logits', self.num_classes, bias_init=nn.initializers.constant(bias))
    box_out = conv('box_ltrb', 4)
    ctr_out = conv('centerness', 1)
    scales = self.param('scales', nn.initializers.ones, (len(maps),))
    logits, ltrb, ctr = [], [], []
    for i, (x, s) in enumerate(zip(maps, strides)):
      b = x.shape[0]
      y = x
      for cv, gn in cls_tower:
        y = nn.relu(gn(cv(y)))
      z = x
      for cv, gn in box_tower:
        z = nn.relu(gn(cv(z)))
      logits.append(cls_out(y).reshape(b, -1, self.num_classes))
      ltrb.append((jnp.exp(jnp.clip(scales[i] * box_out(z), -10, 10)) * s).reshape(b, -1, 4))
      ctr.append(ctr_out(z).reshape(b, -1))
    cat = lambda xs: jnp.concatenate(xs, axis=1).astype(jnp.float32)
    return {'logits': cat(logits), 'ltrb': cat(ltrb), 'centerness': cat(ctr)}


class Detector(nn.Module):
  """backbone (a ViT without prefix tokens) -> SimpleFeaturePyramid -> Head."""
  backbone: ViT
  num_classes: int
  scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5)
  out_channels: int = 256
  head_convs: int = 2
  size_base: float = 8.0      # a level of stride s regresses boxes up to size_base * s (FCOS: 8)

  def setup(self):
    self.pyramid = SimpleFeaturePyramid(tuple(self.scale_factors), self.out_channels,
                                        self.backbone.patch_size, self.backbone.dtype)
    self.head = Head(self.num_classes, self.head_convs, dtype=self.backbone.dtype)

  @property
  def strides(self) -> tuple[int, ...]:
    return tuple(int(self.backbone.patch_size / s) for s in self.scale_factors)

  @property
  def level_shapes(self) -> tuple[tuple[int, int], ...]:
    """(h, w) of each pyramid map (max pooling floors odd sizes, as detectron2)."""
    g = self.backbone.grid
    return tuple((int(g[0] * s), int(g[1] * s)) for s in self.scale_factors)

  def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [P, 2], stride [P], size ranges [P, 2]) of every cell of the pyramid."""
    points, stride, level = fcos.locations(self.level_shapes, self.strides)
    return points, stride, fcos.size_ranges(self.strides, self.size_base)[level]

  def pyramid_features(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """images [B, H, W, C] -> the pyramid's maps (the part imported from ViTDet checkpoints)."""
    return self.pyramid(self.backbone.features(images, train))

  def head_outputs(self, features: jax.Array) -> dict:
    """The backbone's feature map [B, gh, gw, D] -> head outputs (module docstring)."""
    return self.head(self.pyramid(features), self.strides)

  def __call__(self, images: jax.Array, train: bool = False) -> dict:
    return self.head_outputs(self.backbone.features(images, train))


def detector_macs(model: Detector, channels: int = 3, backbone: dict | None = None) -> dict:
  """MACs of one frame by part ('backbone', 'pyramid', 'head', 'total'): the backbone's as
  `backbone` counts them (a method's counter; default the dense ViT's, tokensparse.flops),
  without its classifier head; the pyramid's and head's convolutions."""
  net = model.backbone
  part = backbone if backbone is not None else vit_macs(net, channels)
  backbone = part['total'] - part.get('head', 0)
  (gh, gw), d, c = net.grid, net.width, model.out_channels
  pyramid = head = 0
  for s, (h, w) in zip(model.scale_factors, model.level_shapes):
    if s == 4.0:
      pyramid += gh * gw * d * (d // 2) * 4 + 4 * gh * gw * (d // 2) * (d // 4) * 4
      mid = d // 4
    elif s == 2.0:
      pyramid += gh * gw * d * (d // 2) * 4
      mid = d // 2
    else:
      mid = d
    pyramid += h * w * (mid * c + 9 * c * c)
    head += h * w * 9 * c * (2 * model.head_convs * c + model.num_classes + 5)
  return {'backbone': backbone, 'pyramid': pyramid, 'head': head,
          'total': backbone + pyramid + head}
