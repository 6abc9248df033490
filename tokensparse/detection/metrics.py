"""COCO-style box mAP, written after pycocotools' COCOeval (bbox, area 'all', at most
`max_dets` detections per image and class): greedy matching per image and class in score order (a
detection takes the unmatched ground-truth box it overlaps most, at IoU >= the threshold),
precision made monotone and read at 101 recall points, averaged over classes that have
ground truth. `mAP` averages IoU thresholds 0.50:0.05:0.95, `mAP50` is IoU 0.5. Checked against
pycocotools in tests/test_detection.py.

Boxes are [x0, y0, x1, y1] (x1, y1 exclusive: width = x1 - x0, as COCO's [x, y, w, h]).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALLS = np.linspace(0.0, 1.0, 101)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of boxes a [N, 4] and b [M, 4] -> [N, M] (float64)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), -1)
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  union = area(a)[:, None] + area(b)[None] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _match(ious: np.ndarray, threshold: float) -> np.ndarray:
  """Greedy matching of detections (rows, in score order) to ground truth (columns) ->
  matched [D] bool."""
  d, g = ious.shape
  taken = np.zeros(g, bool)
  matched = np.zeros(d, bool)
  for i in range(d):
    best, m = min(threshold, 1 - 1e-10), -1
    for j in range(g):
      if taken[j] or ious[i, j] < best:
        continue
      best, m = ious[i, j], j
    if m >= 0:
      taken[m], matched[i] = True, True
  return matched


def average_precision(scores: np.ndarray, matched: np.ndarray, num_gt: int) -> float:
  """COCO's 101-point interpolated AP of detections with `scores` and match flags."""
  order = np.argsort(-scores, kind='mergesort')
  tp = np.cumsum(matched[order])
  fp = np.cumsum(~matched[order])
  recall = tp / num_gt
  precision = tp / (tp + fp + np.spacing(1))
  precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
  idx = np.searchsorted(recall, RECALLS, side='left')
  q = np.zeros(len(RECALLS))
  ok = idx < len(precision)
  q[ok] = precision[idx[ok]]
  return float(q.mean())


def evaluate(detections: Sequence[dict], ground_truth: Sequence[dict], num_classes: int,
             max_dets: int = 100) -> dict:
  """detections[i]: {'boxes' [D, 4], 'scores' [D], 'classes' [D]} of image i (valid ones
  only); ground_truth[i]: {'boxes' [G, 4], 'classes' [G]} -> {'mAP', 'mAP50', 'mAP75',
  'AP50_per_class' (nan where a class has no ground truth)}."""
  ap = np.full((len(THRESHOLDS), num_classes), np.nan)
  for c in range(num_classes):
    num_gt = sum(int((g['classes'] == c).sum()) for g in ground_truth)
    if num_gt == 0:
      continue
    scores, matched = [], [[] for _ in THRESHOLDS]
    for det, gt in zip(detections, ground_truth):
      keep = np.flatnonzero(det['classes'] == c)
      s = det['scores'][keep]
      order = np.argsort(-s, kind='mergesort')[:max_dets]       # per image and class, as COCO
      boxes = det['boxes'][keep][order]
      gt_boxes = gt['boxes'][gt['classes'] == c]
      ious = iou_matrix(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else \
          np.zeros((len(boxes), len(gt_boxes)))
      scores.append(s[order])
      for t, thr in enumerate(THRESHOLDS):
        matched[t].append(_match(ious, thr))
    scores = np.concatenate(scores) if scores else np.zeros(0)
    for t in range(len(THRESHOLDS)):
      ap[t, c] = average_precision(scores, np.concatenate(matched[t]).astype(bool), num_gt)
  has = ~np.isnan(ap[0])
  mean = lambda a: float(np.mean(a[has])) if has.any() else float('nan')
  return {'mAP': mean(ap.mean(0)) if has.any() else float('nan'), 'mAP50': mean(ap[0]),
          'mAP75': mean(ap[5]), 'AP50_per_class': ap[0].tolist()}


def score_clips(dets: dict, clips: dict, num_classes: int) -> dict:
  """`evaluate` over every frame of clips: dets {'boxes' [n, T, D, 4], 'scores', 'classes',
  'valid'}, clips {'boxes' [n, T, G, 4], 'labels', 'valid'}."""
  det, gt = [], []
  n, t = clips['valid'].shape[:2]
  for i in range(n):
    for j in range(t):
      v = dets['valid'][i, j]
      det.append({k: dets[k][i, j][v] for k in ('boxes', 'scores', 'classes')})
      g = clips['valid'][i, j]
      gt.append({'boxes': clips['boxes'][i, j][g], 'classes': clips['labels'][i, j][g]})
  return evaluate(det, gt, num_classes)
