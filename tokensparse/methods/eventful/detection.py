"""The Eventful Transformer on a trained ViTDet-style detector (tokensparse.detection): the same
weights with an EventfulViT backbone, run over clips frame by frame (`run_clip`: windowed blocks
gated token-wise, global blocks with the sparse query-key and delta attention-value updates),
and a command line that evaluates it on test clips against the dense detector:

    python -m tokensparse.methods.eventful.detection --workdir runs/vitdet --capacity 24
    python -m tokensparse.methods.eventful.detection --workdir runs/vitdet --threshold 8

prints the dense and Eventful mAP50 / mAP over every frame of the test clips, the MACs per
frame of each (Eventful: averaged over all frames, the dense first frame of each clip
included) and the measured speed-up per frame after the first at batch 1 on this machine (the
backbone, pyramid and head; same-round ratios). `--json PATH` also writes the figures.
The Eventful run uses the work directory's weights off the shelf (no retraining): the gates
choose the `capacity` tokens (of N) whose inputs moved most since they were last computed,
or, with `--threshold`, those whose error exceeds it. A command-line tool that lives with its
method: it reads work directories (tokensparse.detection.train) and nothing in the library
imports it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import detection
from tokensparse.detection import fcos, metrics
from tokensparse.detection.model import Detector, detector_macs
from tokensparse.fields import fail
from tokensparse.methods.eventful import flops
from tokensparse.methods.eventful.model import VARIANTS, EventfulViT, scan_steps


def eventful_detector(config, capacity: int | None = None, variant: str | None = None,
                      threshold: float | None = None) -> Detector:
  """The detector of a detection config with an EventfulViT backbone; capacity, variant and
  threshold default to config.eventful's (ValueError names a bad one)."""
  kw = detection.validate(config)
  e = config.get('eventful') or {}
  capacity = e.get('capacity', 0) if capacity is None else capacity
  variant = variant or e.get('variant', 'full')
  threshold = e.get('threshold') if threshold is None else threshold
  n = (kw['image_size'] // kw['patch_size']) ** 2
  if variant not in VARIANTS:
    fail('eventful.variant', variant, f'expected one of {VARIANTS}')
  if not isinstance(capacity, int) or not 0 <= capacity <= n:
    fail('eventful.capacity', capacity, f'must be in [1, N={n}] (0 means N)')
  if threshold is not None and threshold < 0:
    fail('eventful.threshold', threshold, 'must be >= 0')
  return detection.build(config, EventfulViT(**kw, capacity=capacity, variant=variant,
                                             threshold=threshold))


def eventful_detector_macs(model: Detector, tokens: int | None = None,
                           channels: int = 3) -> dict:
  """`detector_macs` of a frame after the first with `tokens` (default: the capacity)
  recomputed per gate (tokensparse.methods.eventful.flops)."""
  return detector_macs(model, channels, flops.eventful_macs(model.backbone, tokens, channels))


def run_clip(model: Detector, variables: dict, clips: jax.Array, budget=None, threshold=None
             ) -> tuple[dict, jax.Array]:
  """A detector with an EventfulViT backbone on clips [B, T, H, W, C]: frame 0 dense, the
  others through the gates (`lax.scan`), the pyramid and head on every frame -> (head outputs
  with a time axis [B, T, ...], updated-token maps [B, T, depth, N]). `budget` / `threshold`
  as in `EventfulViT.step` (scalars or per-frame [T - 1])."""
  bvars = {'params': variables['params']['backbone']}
  feats, updated = scan_steps(model.backbone, bvars, clips, budget, threshold, features=True)
  b, t = feats.shape[:2]
  out = model.apply(variables, feats.reshape(b * t, *feats.shape[2:]),
                    method=Detector.head_outputs)
  out = {k: v.reshape(b, t, *v.shape[1:]) for k, v in out.items()}
  return out, updated


def _decode(model: Detector, config):
  points = jnp.asarray(model.cells()[0])
  d = config.detector
  return lambda out: fcos.decode(out, points, max_candidates=d.max_candidates,
                                 max_detections=d.max_detections,
                                 score_threshold=d.score_threshold, iou=d.nms_iou)


def clip_detections(model: Detector, variables, config, clips: np.ndarray, budget=None,
                    threshold=None, batch: int = 8) -> tuple[dict, np.ndarray | None]:
  """Detections on every frame of uint8 clips [n, T, H, W, C] -> ({'boxes' [n, T, D, 4],
  'scores', 'classes', 'valid'}, updated-token maps [n, T, depth, N] or None for a dense
  model). An Eventful backbone runs each clip frame by frame (`run_clip`)."""
  decode = _decode(model, config)
  eventful = isinstance(model.backbone, EventfulViT)
  norm = lambda c: detection.normalize(c, config.data.mean, config.data.std)

  @jax.jit
  def run(v, c):
    if eventful:
      out, updated = run_clip(model, v, norm(c), budget, threshold)
    else:
      b, t = c.shape[:2]
      out = model.apply(v, norm(c).reshape(b * t, *c.shape[2:]))
      out = {k: x.reshape(b, t, *x.shape[1:]) for k, x in out.items()}
      updated = jnp.zeros((b, t, 0, 0), bool)
    b, t = c.shape[:2]
    flat = {k: x.reshape(b * t, *x.shape[2:]) for k, x in out.items()}
    dets = decode(flat)
    return {k: x.reshape(b, t, *x.shape[1:]) for k, x in dets.items()}, updated

  dets, updated = [], []
  for s in range(0, len(clips), batch):
    d, u = jax.device_get(run(variables, clips[s:s + batch]))
    dets.append(d)
    updated.append(u)
  dets = {k: np.concatenate([d[k] for d in dets]) for k in dets[0]}
  return dets, (np.concatenate(updated) if eventful else None)


def macs_per_frame(dense: Detector, eventful: Detector, updated: np.ndarray | None,
                   frames: int, channels: int, part: str = 'total') -> float:
  """Eventful MACs per frame averaged over a clip: the dense first frame, then each later
  frame at its capacity, or (threshold) at the mean tokens its qkv gates recomputed. `part`:
  'total', or 'backbone' (what the paper counts and the gates change)."""
  first = detector_macs(dense, channels)[part]
  if updated is None:
    later = eventful_detector_macs(eventful, None, channels)[part]
  else:
    m = float(updated[:, 1:].sum(-1).mean())
    a = eventful_detector_macs(eventful, 0, channels)[part]
    b = eventful_detector_macs(eventful, 1, channels)[part] - a
    later = a + b * m
  return (first + (frames - 1) * later) / frames


def speed_ratio(dense: Detector, eventful: Detector, variables, frames: np.ndarray, config,
                rounds: int = 5) -> float:
  """Median same-round ratio of dense to Eventful time per frame (after the first), batch 1,
  backbone + pyramid + head, jitted (the Eventful step donates its state)."""
  x = detection.normalize(frames[None], config.data.mean, config.data.std)   # [1, T, ...]
  bvars = {'params': variables['params']['backbone']}
  net = eventful.backbone
  dense_fn = jax.jit(lambda v, f: dense.apply(v, f))
  head = jax.jit(lambda v, feats: eventful.apply(v, feats, method=Detector.head_outputs))
  init = jax.jit(lambda v, f: net.apply(v, f, method=EventfulViT.init_features))
  step = jax.jit(lambda v, s, f: net.apply(v, s, f, method=EventfulViT.step_features),
                 donate_argnums=(1,))
  state, _ = init(bvars, x[:, 0])
  jax.block_until_ready(dense_fn(variables, x[:, 1]))
  state, feats = step(bvars, state, x[:, 1])
  jax.block_until_ready(head(variables, feats))
  ratios = []
  for r in range(rounds):
    f = x[:, 1 + (r + 1) % (x.shape[1] - 1)]
    t0 = time.perf_counter()
    jax.block_until_ready(dense_fn(variables, f))
    t1 = time.perf_counter()
    state, feats = step(bvars, state, f)
    jax.block_until_ready(head(variables, feats))
    ratios.append((t1 - t0) / (time.perf_counter() - t1))
  return float(np.median(ratios))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--workdir', required=True, help='a trained detection work directory')
  p.add_argument('--capacity', type=int, default=None,
                 help='tokens recomputed per gate and frame (default: config.eventful)')
  p.add_argument('--variant', default=None, help='tokenwise, sparse_qk or full (default: full)')
  p.add_argument('--threshold', type=float, default=None,
                 help='threshold policy: recompute tokens whose error exceeds this')
  p.add_argument('--clips', type=int, default=200, help='test clips to evaluate')
  p.add_argument('--json', default='', help='also write the figures to this file')
  args = p.parse_args(argv)
  from tokensparse.detection import train  # pylint: disable=g-import-not-at-top
  try:
    config, dense, variables = train.load(args.workdir)
    n = dense.backbone.num_patches
    capacity = args.capacity
    if args.threshold is not None and args.capacity is None:
      capacity = 0
    if capacity is not None and not 0 <= capacity <= n:
      raise ValueError(f'--capacity {capacity}: must be in [1, N={n}] (0 means N)')
    if args.threshold is not None and args.threshold < 0:
      raise ValueError(f'--threshold {args.threshold}: must be >= 0')
    eventful = eventful_detector(config, capacity, args.variant, args.threshold)
    clips = train.load_data(config, 'test', args.clips)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  k, frames, channels = dense.num_classes, clips['video'].shape[1], clips['video'].shape[-1]
  t0 = time.time()
  dense_dets, _ = clip_detections(dense, variables, config, clips['video'])
  ev_dets, updated = clip_detections(eventful, variables, config, clips['video'])
  d, e = metrics.score_clips(dense_dets, clips, k), metrics.score_clips(ev_dets, clips, k)
  dense_macs = detector_macs(dense, channels)['total']
  used = updated if args.threshold is not None else None
  ev_macs = macs_per_frame(dense, eventful, used, frames, channels)
  dense_bb = detector_macs(dense, channels)['backbone']
  ev_bb = macs_per_frame(dense, eventful, used, frames, channels, 'backbone')
  ratio = speed_ratio(dense, eventful, variables, clips['video'][0], config)
  policy = f'threshold {args.threshold}' if args.threshold is not None else \
      f'r = {eventful.backbone.m} of {n}'
  out = {'clips': len(clips['video']), 'frames': frames, 'policy': policy,
         'dense': {'mAP50': d['mAP50'], 'mAP': d['mAP'], 'macs_per_frame': dense_macs,
                   'backbone_macs_per_frame': dense_bb},
         'eventful': {'mAP50': e['mAP50'], 'mAP': e['mAP'], 'macs_per_frame': ev_macs,
                      'backbone_macs_per_frame': ev_bb,
                      'variant': eventful.backbone.variant,
                      'tokens_per_gate': float(updated[:, 1:].sum(-1).mean())},
         'speedup_per_frame': ratio}
  print(f'{len(clips["video"])} test clips of {frames} frames ({time.time() - t0:.0f}s)\n'
        f'dense:    mAP50 {100 * d["mAP50"]:.1f}  mAP {100 * d["mAP"]:.1f}  '
        f'{dense_macs / 1e6:.0f} MMACs per frame (backbone {dense_bb / 1e6:.0f})\n'
        f'Eventful ({policy}, {eventful.backbone.variant}): mAP50 {100 * e["mAP50"]:.1f}  '
        f'mAP {100 * e["mAP"]:.1f}  {ev_macs / 1e6:.0f} MMACs per frame (backbone '
        f'{ev_bb / 1e6:.0f}: {dense_bb / ev_bb:.2f}x fewer; '
        f'{out["eventful"]["tokens_per_gate"]:.1f} tokens per gate after the first frame)\n'
        f'speed-up per frame after the first, batch 1, this machine: {ratio:.2f}x')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
