"""Eventful ViTDet: detection accuracy against compute (the Eventful paper's Figure 7 format) on
the trained detector, and time per frame of ViTDet-B at 672 and 1024 px on this CPU.

    python train.py --config configs/vitdet/fashion_mnist_detection.py --workdir runs/vitdet
    python benchmarks/vitdet.py accuracy     # about 10 min: every test clip, 13 policies
    python benchmarks/vitdet.py speed        # about 10 min: ViTDet-B backbone, batch 1

`accuracy` runs the 200 test clips (8 frames each) through the dense detector and through the
same weights as an Eventful Transformer off the shelf (variant 'full', and 'tokenwise' at one
r), at several r (tokens recomputed per gate and frame, of N = 144) and thresholds, scoring
every frame (COCO-style mAP50 and mAP). MACs per frame are averaged over all frames, the dense
first frame of each clip included (threshold policies: the tokens their qkv gates recomputed).
Writes the section 'vitdet_accuracy', docs/vitdet/accuracy.png (relative mAP50 loss against
compute saved) and docs/vitdet/clip.png (one clip: recomputed tokens and boxes per frame).

`speed`: the ViTDet-B backbone (detectron2's ViTDet-B: patch 16, width 768, 12 blocks, 14 x 14
windows, global blocks 2, 5, 8, 11, relative positions for a 64 x 64 grid, absolute positions
for 14 x 14) with random weights, at 672 and 1024 px, batch 1, fp32, jitted: the dense
backbone and the Eventful step (variant full, the paper's CPU r: 256 at 672 px, 512 at 1024
px; the step donates its state) in turn on the frames of a clip with a static background and a
moving square, rounds of one call each, the median of the same-round ratios. The paper times
the backbone (its Table 2: 2.47x on a CPU at 1024 px, with the attention-value product of
global blocks in bfloat16; here everything is fp32). Section 'vitdet_speed'.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from common import ROOT, device_description, git_revision, line_plot, table, write_section

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse.backbone.vit import ViT
from tokensparse.data.fashion_mnist import CLASS_NAMES
from tokensparse.detection import metrics
from tokensparse.detection import train as det_train
from tokensparse.detection.model import Detector, detector_macs
from tokensparse.methods.eventful import detection as det_eval
from tokensparse.methods.eventful.model import EventfulViT

DOCS = os.path.join(ROOT, 'docs', 'vitdet')


def accuracy(args):
  config, dense, variables = det_train.load(os.path.join(ROOT, args.workdir))
  clips = det_train.load_data(config, 'test', args.clips)
  n, k = dense.backbone.num_patches, dense.num_classes
  frames, channels = clips['video'].shape[1], clips['video'].shape[-1]
  dense_macs = detector_macs(dense, channels)['total']
  dense_bb = detector_macs(dense, channels)['backbone']
  start = time.time()
  dets, _ = det_eval.clip_detections(dense, variables, config, clips['video'])
  base = metrics.score_clips(dets, clips, k)
  print(f'dense: mAP50 {100 * base["mAP50"]:.1f} ({time.time() - start:.0f}s)', flush=True)
  policies = [('full', r, None) for r in args.capacities] + \
      [('tokenwise', args.capacities[len(args.capacities) // 2], None)] + \
      [('full', 0, h) for h in args.thresholds]
  rows, results, picture = [], [], None
  for variant, r, h in policies:
    model = det_eval.eventful_detector(config, r, variant, h)
    t0 = time.time()
    ev, updated = det_eval.clip_detections(model, variables, config, clips['video'])
    s = metrics.score_clips(ev, clips, k)
    used = updated if h is not None else None
    macs = det_eval.macs_per_frame(dense, model, used, frames, channels)
    bb = det_eval.macs_per_frame(dense, model, used, frames, channels, 'backbone')
    tokens = float(updated[:, 1:].sum(-1).mean())
    name = f'threshold {h:g}' if h is not None else f'r = {r}'
    saved = 1 - bb / dense_bb
    loss = (base['mAP50'] - s['mAP50']) / base['mAP50']
    results.append({'variant': variant, 'policy': name, 'capacity': r, 'threshold': h,
                    'tokens_per_gate': tokens, 'macs_per_frame': macs,
                    'backbone_macs_per_frame': bb, 'backbone_compute_saved': saved,
                    'mAP50': s['mAP50'], 'mAP': s['mAP'], 'relative_mAP50_loss': loss})
    rows.append([f'Eventful {variant}, {name}', f'{tokens:.1f}', f'{bb / 1e6:.0f}',
                 f'{100 * saved:.1f} %', f'{macs / 1e6:.0f}', f'{100 * s["mAP50"]:.1f}',
                 f'{100 * loss:+.1f} %', f'{100 * s["mAP"]:.1f}'])
    print(f'{variant} {name}: {tokens:.1f} tokens, backbone {bb / 1e6:.0f} MMACs, mAP50 '
          f'{100 * s["mAP50"]:.1f} ({time.time() - t0:.0f}s)', flush=True)
    if variant == 'full' and r == args.picture_capacity:
      picture = (ev, updated)
  rows.insert(0, ['dense', f'{n}', f'{dense_bb / 1e6:.0f}', '0 %', f'{dense_macs / 1e6:.0f}',
                  f'{100 * base["mAP50"]:.1f}', '—', f'{100 * base["mAP"]:.1f}'])
  os.makedirs(DOCS, exist_ok=True)
  with open(os.path.join(DOCS, 'accuracy.json'), 'w') as f:
    json.dump({'dense': {'mAP50': base['mAP50'], 'mAP': base['mAP'],
                         'macs_per_frame': dense_macs, 'backbone_macs_per_frame': dense_bb},
               'eventful': results, 'clips': len(clips['video']), 'frames': frames,
               'workdir': args.workdir}, f, indent=1)
  series = []
  for label, colour, pick in (('top-r, full', (200, 60, 40),
                               lambda x: x['threshold'] is None and x['variant'] == 'full'),
                              ('threshold, full', (40, 90, 200),
                               lambda x: x['threshold'] is not None)):
    pts = sorted((100 * x['backbone_compute_saved'], 100 * x['relative_mAP50_loss'])
                 for x in results if pick(x))
    series.append({'label': label, 'colour': colour, 'x': [p[0] for p in pts],
                   'y': [p[1] for p in pts]})
  tw = [x for x in results if x['variant'] == 'tokenwise']
  series.append({'label': 'top-r, token-wise', 'colour': (60, 160, 60),
                 'x': [100 * x['backbone_compute_saved'] for x in tw],
                 'y': [100 * x['relative_mAP50_loss'] for x in tw]})
  line_plot(os.path.join(DOCS, 'accuracy.png'), [{
      'title': f'Eventful ViTDet off the shelf, {len(clips["video"])} test clips',
      'xlabel': 'backbone compute saved per frame (%)', 'ylabel': 'relative mAP50 loss (%)',
      'series': series}])
  if picture is not None:
    draw_clip(os.path.join(DOCS, 'clip.png'), clips, picture, dets, args.picture_capacity, n,
              dense.backbone.patch_size)
  body = (
      '## Eventful ViTDet: detection accuracy against compute\n\n'
      f'`python benchmarks/vitdet.py accuracy` at {git_revision()}: the detector of '
      f'`{args.workdir}` (configs/vitdet/fashion_mnist_detection.py: a ViTDet-style backbone '
      'of 6 blocks, width 128, patch 8, 4 x 4 windows in blocks 0, 1, 3, 4, global blocks 2 and '
      '5, relative positions; pyramid at strides 4, 8, 16; an FCOS-style head), trained dense on '
      f'single frames, then run off the shelf on every frame of {len(clips["video"])} test '
      f'clips of Fashion-MNIST Detection Clips ({frames} frames of 96 x 96, N = {n} tokens). '
      'MACs per frame averaged over all frames, the dense first frame of each clip included: '
      "the backbone's (what the gates change, and what the paper counts; compute saved is "
      'against it) and the whole detector\'s (backbone, pyramid and head; the pyramid and '
      'head run dense on every frame). Tokens: recomputed per qkv gate and frame after the '
      'first (top-r picks r tokens even where fewer changed). '
      'Relative mAP50 loss: (dense - Eventful) / dense. The head is much simpler than the '
      "paper's Cascade Mask R-CNN; the backbone and the Eventful blocks follow the paper.\n\n"
      + table(['model', 'tokens', 'backbone MMACs', 'backbone compute saved',
               'detector MMACs', 'mAP50', 'relative mAP50 loss', 'mAP'], rows) +
      '\n\n![relative mAP50 loss against compute saved](docs/vitdet/accuracy.png)\n\n'
      f'![a test clip: tokens recomputed at r = {args.picture_capacity} (red) and boxes]'
      '(docs/vitdet/clip.png)\n')
  write_section('vitdet_accuracy', body)
  print(body)


def draw_clip(path, clips, picture, dense_dets, r, n, patch, clip_index=3, score=0.5):
  """One test clip: per frame the image, the tokens the first block's qkv gate recomputed
  (red; frame 0: all), the Eventful boxes (green, class and score) and the ground truth
  (white); a second row with the dense detector's boxes."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  ev, updated = picture
  video = clips['video'][clip_index]
  t_count, size = video.shape[0], video.shape[1]
  z = 2
  side = int(round(n ** 0.5))
  img = Image.new('RGB', (t_count * size * z, 2 * size * z + 40), 'white')
  d = ImageDraw.Draw(img)
  for row, dets in enumerate((ev, dense_dets)):
    for t in range(t_count):
      frame = Image.fromarray(video[t, :, :, 0]).convert('RGB').resize((size * z, size * z),
                                                                      Image.NEAREST)
      if row == 0:
        mask = np.asarray(updated[clip_index, t, 0]).reshape(side, side)
        over = np.array(frame).astype(np.float32)
        up = np.kron(mask, np.ones((patch * z, patch * z)))[..., None]
        over = over * (1 - 0.35 * up) + np.array([255, 0, 0]) * 0.35 * up
        frame = Image.fromarray(over.astype(np.uint8))
      fd = ImageDraw.Draw(frame)
      for b, c, v in zip(clips['boxes'][clip_index, t], clips['labels'][clip_index, t],
                         clips['valid'][clip_index, t]):
        if v:
          fd.rectangle([b[0] * z, b[1] * z, b[2] * z - 1, b[3] * z - 1], outline=(255, 255, 255))
      for b, c, s, v in zip(dets['boxes'][clip_index, t], dets['classes'][clip_index, t],
                            dets['scores'][clip_index, t], dets['valid'][clip_index, t]):
        if v and s >= score:
          fd.rectangle([b[0] * z, b[1] * z, b[2] * z - 1, b[3] * z - 1], outline=(0, 230, 0))
          fd.text((b[0] * z + 2, b[1] * z + 1), f'{CLASS_NAMES[c].split("/")[0]} {s:.2f}',
                  fill=(0, 230, 0))
      img.paste(frame, (t * size * z, row * (size * z + 20) + 20))
    d.text((4, row * (size * z + 20) + 4),
           f'Eventful r = {r} of {n}: tokens recomputed by block 0 (red), its boxes scoring >= '
           f'{score} (green), ground truth '
           '(white)' if row == 0 else
           f'dense detector: its boxes scoring >= {score} (green), ground truth (white)',
           fill=(0, 0, 0))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img.save(path)


def moving_square(frames: int, size: int) -> np.ndarray:
  """A static random background with a bright square (1/8 of the side) moving 16 px per frame
  to the right and 8 px down: [T, H, W, 3]."""
  rng = np.random.default_rng(0)
  clip = np.repeat(rng.normal(0, 1, (size, size, 3)).astype(np.float32)[None], frames, axis=0)
  for t in range(frames):
    y, x = size // 5 + 8 * t, size // 10 + 16 * t
    clip[t, y:y + size // 8, x:x + size // 8] += 3.0
  return clip


def vitdet_b(size: int, net=ViT, **extra) -> Detector:
  return Detector(net(num_classes=1, image_size=size, patch_size=16, width=768, depth=12,
                      num_heads=12, mlp_dim=3072, classifier='gap', window_size=14,
                      global_blocks=(2, 5, 8, 11), rel_pos=True, rel_pos_size=64, posemb_grid=14,
                      **extra), num_classes=30)


def speed(args):
  rows = []
  for spec in args.sizes:
    size, r = (int(v) for v in spec.split(':'))
    dense = vitdet_b(size)
    ev = vitdet_b(size, EventfulViT, capacity=r, variant='full')
    n = dense.backbone.num_patches
    clip = jnp.asarray(moving_square(args.rounds + 2, size))[:, None]        # [T, 1, H, W, 3]
    params = jax.jit(lambda x: dense.init(jax.random.PRNGKey(0), x,
                                          method=Detector.pyramid_features))(clip[0])
    bvars = {'params': params['params']['backbone']}
    dense_fn = jax.jit(lambda v, x: dense.backbone.apply(v, x, method=ViT.features))
    init = jax.jit(lambda v, x: ev.backbone.apply(v, x, method=EventfulViT.init_features))
    step = jax.jit(lambda v, s, x: ev.backbone.apply(v, s, x, method=EventfulViT.step_features),
                   donate_argnums=(1,))
    t0 = time.perf_counter()
    jax.block_until_ready(dense_fn(bvars, clip[0]))
    state, _ = init(bvars, clip[0])
    state, out = step(bvars, state, clip[1])
    jax.block_until_ready(out)
    print(f'{size} px: compiled and ran in {time.perf_counter() - t0:.0f}s', flush=True)
    state_bytes = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(state))
    td, te = [], []
    for i in range(args.rounds):
      x = clip[2 + i]
      t = time.perf_counter()
      jax.block_until_ready(dense_fn(bvars, x))
      td.append(time.perf_counter() - t)
      t = time.perf_counter()
      state, out = step(bvars, state, x)
      jax.block_until_ready(out)
      te.append(time.perf_counter() - t)
      print(f'  round {i + 1}: dense {td[-1]:.2f}s, Eventful r = {r} {te[-1]:.2f}s', flush=True)
    dm = detector_macs(dense)['backbone']
    em = det_eval.eventful_detector_macs(ev)['backbone']
    ratio = float(np.median(np.array(td) / np.array(te)))
    rows.append([f'{size} px (N = {n})', f'{dm / 1e9:.1f}', f'r = {r}', f'{em / 1e9:.1f}',
                 f'{dm / em:.2f}x', f'{np.median(td):.2f} s', f'{np.median(te):.2f} s',
                 f'**{ratio:.2f}x**', f'{ratio / (dm / em):.2f}',
                 f'{state_bytes / 2 ** 30:.2f} GiB'])
  body = (
      '## Eventful ViTDet-B: time per frame on this CPU\n\n'
      f'`python benchmarks/vitdet.py speed` at {git_revision()} on {device_description()}: '
      'the ViTDet-B backbone (patch 16, width 768, 12 blocks, 14 x 14 windows with global '
      'blocks 2, 5, 8, 11, relative positions) with random weights, batch 1 (on one host '
      'device: one single-threaded core, as the other batch-1 tables), fp32, jitted; '
      'dense and the Eventful step (variant full: windowed blocks token-wise, global blocks '
      'with the sparse query-key and delta attention-value updates; the paper\'s CPU r) in '
      f'turn, {args.rounds} rounds of one frame each, median of the same-round ratios. GMACs: '
      'the backbone per frame after the first (the paper counts 467 for dense ViTDet-B at '
      '1024 px). State: the Eventful state at batch 1. The paper measures 2.47x at 1024 px on '
      'a CPU (Table 2) with the global blocks\' attention-value product in bfloat16.\n\n'
      + table(['input', 'dense GMACs', 'Eventful', 'Eventful GMACs', 'MAC reduction',
               'dense time', 'Eventful time', 'speed-up', 'conversion', 'state'], rows) + '\n')
  write_section('vitdet_speed', body)
  print(body)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('part', choices=('accuracy', 'speed'))
  p.add_argument('--workdir', default='runs/vitdet')
  p.add_argument('--clips', type=int, default=200)
  p.add_argument('--capacities', type=int, nargs='+', default=[144, 72, 48, 36, 24, 16, 8])
  p.add_argument('--thresholds', type=float, nargs='+', default=[0.5, 2.0, 8.0, 16.0, 32.0])
  p.add_argument('--picture_capacity', type=int, default=24)
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--sizes', nargs='+', default=['672:256', '1024:512'],
                 help='speed: input size:r pairs (the paper\'s CPU settings by default)')
  args = p.parse_args()
  {'accuracy': accuracy, 'speed': speed}[args.part](args)


if __name__ == '__main__':
  main()
