"""A one-stage anchor-free detector's pure functions (FCOS, Tian et al. 2019, simplified):
the locations of the pyramid's cells, training targets, losses, decoding and NMS. Static
shapes throughout: ground truth comes padded to G boxes per image with a `valid` mask, and
detections leave as a fixed number per image with their own mask.

Boxes are [x0, y0, x1, y1] in pixels. P is the number of cells over all pyramid levels
(level by level, row-major), K the number of classes.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INF = 1e8


def locations(shapes: Sequence[tuple[int, int]], strides: Sequence[int]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cell centres of every level: (points [P, 2] as (x, y) pixels, stride [P], level [P])."""
  points, stride, level = [], [], []
  for i, ((h, w), s) in enumerate(zip(shapes, strides)):
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    points.append(np.stack([xs.ravel(), ys.ravel()], -1) * s + s // 2)
    stride.append(np.full(h * w, s))
    level.append(np.full(h * w, i))
  return (np.concatenate(points).astype(np.float32), np.concatenate(stride).astype(np.float32),
          np.concatenate(level))


def size_ranges(strides: Sequence[int], base: float = 8.0) -> np.ndarray:
  """[L, 2] object-size range each level answers for: the largest box side a level regresses
  lies in (base * s / 2, base * s] for its stride s (FCOS's 64/128/256/512 at strides 8-64
  when base = 8); the first level starts at 0 and the last is open."""
  r = np.array([[base * s / 2, base * s] for s in strides], np.float32)
  r[0, 0], r[-1, 1] = 0.0, INF
  return r


def targets(points, stride, ranges, boxes, labels, valid, radius: float = 1.5):
  """FCOS targets of one image. points [P, 2], stride [P], ranges [P, 2] (the cell's level
  range), boxes [G, 4], labels [G] int, valid [G] bool -> (class [P] int, -1 where background;
  box [P, 4] (the matched box); centerness [P]). A cell is positive for a box when it lies
  inside the box and within `radius` strides of its centre (centre sampling), and the box's
  largest side distance fits the cell's level range; among several boxes, the smallest wins."""
  x, y = points[:, 0:1], points[:, 1:2]                                   # [P, 1]
  l, t = x - boxes[None, :, 0], y - boxes[None, :, 1]
  r, b = boxes[None, :, 2] - x, boxes[None, :, 3] - y                     # [P, G]
  ltrb = jnp.stack([l, t, r, b], -1)                                      # [P, G, 4]
  inside = ltrb.min(-1) > 0
  cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
  reach = radius * stride[:, None]
  central = (jnp.abs(x - cx[None]) < reach) & (jnp.abs(y - cy[None]) < reach)
  extent = ltrb.max(-1)
  fits = (extent > ranges[:, 0:1]) & (extent <= ranges[:, 1:2])
  ok = inside & central & fits & valid[None]
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  cost = jnp.where(ok, area[None], INF)
  match = jnp.argmin(cost, axis=1)                                        # [P]
  positive = jnp.take_along_axis(ok, match[:, None], 1)[:, 0]
  cls = jnp.where(positive, labels[match], -1)
  m = jnp.take_along_axis(ltrb, match[:, None, None], 1)[:, 0]            # [P, 4]
  lr, tb = m[:, [0, 2]], m[:, [1, 3]]
  ctr = jnp.sqrt(jnp.clip(lr.min(-1) / jnp.maximum(lr.max(-1), 1e-6), 0) *
                 jnp.clip(tb.min(-1) / jnp.maximum(tb.max(-1), 1e-6), 0))
  return cls, boxes[match], jnp.where(positive, ctr, 0.0)


def to_boxes(points: jax.Array, ltrb: jax.Array) -> jax.Array:
  """Distances [..., P, 4] (left, top, right, bottom) from points [P, 2] -> boxes [..., P, 4]."""
  x, y = points[:, 0], points[:, 1]
  return jnp.stack([x - ltrb[..., 0], y - ltrb[..., 1], x + ltrb[..., 2], y + ltrb[..., 3]], -1)


def box_area(b: jax.Array) -> jax.Array:
  return jnp.clip(b[..., 2] - b[..., 0], 0) * jnp.clip(b[..., 3] - b[..., 1], 0)


def giou(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Element-wise IoU and generalised IoU of boxes a, b [..., 4] -> ([...], [...])."""
  lt, rb = jnp.maximum(a[..., :2], b[..., :2]), jnp.minimum(a[..., 2:], b[..., 2:])
  inter = jnp.prod(jnp.clip(rb - lt, 0), -1)
  union = box_area(a) + box_area(b) - inter
  iou = inter / jnp.maximum(union, 1e-6)
  hull = jnp.prod(jnp.clip(jnp.maximum(a[..., 2:], b[..., 2:]) -
                           jnp.minimum(a[..., :2], b[..., :2]), 0), -1)
  return iou, iou - (hull - union) / jnp.maximum(hull, 1e-6)


def pairwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """IoU of every pair: a [N, 4], b [M, 4] -> [N, M]."""
  return giou(a[:, None], b[None])[0]


def focal_loss(logits: jax.Array, cls: jax.Array, alpha: float = 0.25,
               gamma: float = 2.0) -> jax.Array:
  """Sigmoid focal loss (Lin et al. 2017) summed over classes: logits [..., K], cls [...]
  (-1: background) -> [...]."""
  k = logits.shape[-1]
  y = jax.nn.one_hot(cls, k, dtype=jnp.float32)                         # -1 -> all zeros
  x = logits.astype(jnp.float32)
  p = jax.nn.sigmoid(x)
  ce = jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
  p_t = p * y + (1 - p) * (1 - y)
  a_t = alpha * y + (1 - alpha) * (1 - y)
  return (a_t * ce * (1 - p_t) ** gamma).sum(-1)


def losses(outputs: dict, points, stride, ranges, batch: dict, radius: float = 1.5) -> dict:
  """FCOS losses of a batch. outputs: 'logits' [B, P, K], 'ltrb' [B, P, 4] (pixels),
  'centerness' [B, P] (logits); batch: 'boxes' [B, G, 4], 'labels' [B, G], 'valid' [B, G]
  -> {'cls', 'box', 'centerness'}: the focal loss summed over cells and divided by the
  positives, GIoU loss weighted by the centerness targets, and the centerness BCE."""
  cls, gt, ctr = jax.vmap(lambda b, l, v: targets(points, stride, ranges, b, l, v, radius))(
      batch['boxes'], batch['labels'], batch['valid'])
  pos = cls >= 0
  num_pos = jnp.maximum(pos.sum(), 1.0)
  cls_loss = focal_loss(outputs['logits'], cls).sum() / num_pos
  pred = to_boxes(points, outputs['ltrb'].astype(jnp.float32))
  _, g = giou(pred, gt)
  w = jnp.where(pos, ctr, 0.0)
  box_loss = ((1 - g) * w).sum() / jnp.maximum(w.sum(), 1e-6)
  c = outputs['centerness'].astype(jnp.float32)
  bce = jnp.maximum(c, 0) - c * ctr + jnp.log1p(jnp.exp(-jnp.abs(c)))
  ctr_loss = jnp.where(pos, bce, 0.0).sum() / num_pos
  return {'cls': cls_loss, 'box': box_loss, 'centerness': ctr_loss}


def nms(boxes: jax.Array, scores: jax.Array, classes: jax.Array, iou: float
        ) -> jax.Array:
  """Greedy per-class non-maximum suppression of one image's candidates, sorted by score
  (highest first): boxes [M, 4], scores [M], classes [M] -> keep [M] bool. A candidate is
  dropped when a kept one of the same class, earlier in the order, overlaps it by more than
  `iou`. Static shapes: M steps of a fori_loop over an [M, M] overlap matrix."""
  m = boxes.shape[0]
  overlap = (pairwise_iou(boxes, boxes) > iou) & (classes[:, None] == classes[None])

  def body(i, keep):
    earlier = jnp.arange(m) < i
    suppressed = jnp.any(overlap[i] & keep & earlier)
    return keep.at[i].set(keep[i] & ~suppressed)

  return lax.fori_loop(0, m, body, scores > 0)


def decode(outputs: dict, points, *, max_candidates: int = 100, max_detections: int = 50,
           score_threshold: float = 0.05, iou: float = 0.6) -> dict:
  """Detections of a batch: the top `max_candidates` (cell, class) scores sqrt(sigmoid(class)
  * sigmoid(centerness)) above `score_threshold`, NMS per class, the best `max_detections`
  -> {'boxes' [B, D, 4], 'scores' [B, D], 'classes' [B, D], 'valid' [B, D]}, best first."""

  def one(logits, ltrb, centerness):
    k = logits.shape[-1]
    s = jnp.sqrt(jax.nn.sigmoid(logits.astype(jnp.float32)) *
                 jax.nn.sigmoid(centerness.astype(jnp.float32))[:, None])
    top, flat = lax.top_k(s.reshape(-1), max_candidates)
    cell, cls = flat // k, flat % k
    boxes = to_boxes(points, ltrb.astype(jnp.float32))[cell]
    top = jnp.where(top > score_threshold, top, 0.0)
    keep = nms(boxes, top, cls, iou)
    order = jnp.argsort(jnp.where(keep, -top, 1.0))[:max_detections]     # kept first, by score
    return {'boxes': boxes[order], 'scores': top[order], 'classes': cls[order],
            'valid': keep[order]}

  return jax.vmap(one)(outputs['logits'], outputs['ltrb'], outputs['centerness'])
