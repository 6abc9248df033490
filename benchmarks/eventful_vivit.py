"""Eventful ViViT: accuracy against MACs per clip, speed per clip on ViViT-B, budget control.

    python benchmarks/eventful_vivit.py accuracy   # the trained action models (below)
    python benchmarks/eventful_vivit.py speed      # ViViT-B/16x2, 224 px, 32 frames, batch 1
    python benchmarks/eventful_vivit.py control    # a MACs target changed within the clips

`accuracy` reads the work directories made by the README's commands:

    python train.py --config configs/vit/fashion_mnist_actions.py --workdir runs/vivit_actions
    python train.py --config configs/vit/fashion_mnist_actions.py:frames --workdir runs/frames_actions
    python -m tokensparse.methods.eventful.temporal \
        --config configs/eventful/fashion_mnist_actions_temporal.py:capacity=R --workdir runs/vivit_actions_rR
    (and :capacity=0,threshold=H for thresholds, into runs/vivit_actions_hH)

and runs every test clip of Fashion-MNIST actions through the dense ViViT, the per-frame
baseline and the Eventful ViViT (variant 'full') at several r (tokens recomputed per gate and
step) and thresholds, off the shelf and after temporal-only fine-tuning (the temporal tool's
figures, temporal.json, for the work directories that exist). MACs per clip: the first step
dense, the others as counted (under a threshold from the tokens each step's qkv gates
recomputed, averaged over the clips), the temporal encoder and head dense. Writes the section
'eventful_vivit_accuracy' and docs/eventful/vivit_accuracy.png (the paper's Figure 9 format).

`speed`: the official Kinetics-400 model's shape (configs/vit/vivit_kinetics400.py) with random
weights on a clip whose background is static and a square moves (as benchmarks/eventful.py),
whole clips timed dense and Eventful in turn over rounds, jitted (the Eventful steps run in
lax.scan); the ratio is the median over rounds of the same-round times. Section
'eventful_vivit_speed'.

`control`: the action test clips as streams of clips; a threshold controller
(`run_video_controlled`) holds a target of MACs per step that drops from 1/2 to 1/4 of a dense
step halfway through each clip, against the open-loop top-r schedule of the same targets
(`budget_for`) and constant targets. Section 'eventful_vivit_control' and
docs/eventful/vivit_control.png.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from common import (ROOT, device_description, git_revision, line_plot, table, write_section)

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tokensparse import configs, inference, methods
from tokensparse.data import fashion_mnist_actions
from tokensparse.methods.eventful import flops as ev_flops
from tokensparse.methods.eventful.model import (budget_for, macs_line, run_video,
                                               run_video_controlled)

DOCS = os.path.join(ROOT, 'docs', 'eventful')
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def eventful_model(config, **fields):
  c = ml_collections.ConfigDict(config.model.to_dict())
  c.name = 'eventful'
  c.eventful = methods.get('eventful').fields(c)
  c.eventful.update(fields)
  configs.validate_model(ml_collections.ConfigDict({'model': c}))
  return methods.build(c)


def clip_logits(fn, clips, batch=100):
  return np.concatenate([np.asarray(fn(clips[i:i + batch])) for i in range(0, len(clips), batch)])


def accuracy(args):
  dense = inference.load(os.path.join(ROOT, args.workdir))
  clips, labels = fashion_mnist_actions.load_clips(args.clips,
                                                   data_dir=dense.config.data.data_dir)
  channels = dense.channels
  dense_macs = methods.macs(dense.model, channels)['total']
  acc = lambda logits: float((logits.argmax(-1) == labels).mean())
  rows, points = [], {'top-r, off the shelf': [], 'threshold, off the shelf': [],
                      'top-r, temporal fine-tuned': [], 'threshold, temporal fine-tuned': []}
  dense_acc = acc(clip_logits(dense.predict, clips))
  rows.append(['dense ViViT', 'as trained', f'{100 * dense_acc:.2f} %', f'{dense_macs / 1e6:.1f}',
               '1.00'])
  # Threshold 0 recomputes every token that changed: the dense model's features, so its
  # temporal fine-tuning is the reference for every fine-tuned row (the extra training alone).
  reference = os.path.join(ROOT, f'{args.workdir}_h0', 'temporal.json')
  dense_tuned = None
  if os.path.exists(reference):
    dense_tuned = json.load(open(reference))['accuracy_fine_tuned']
    rows.append(['dense ViViT', 'temporal fine-tuned (reference)', f'{100 * dense_tuned:.2f} %',
                 f'{dense_macs / 1e6:.1f}', '1.00'])
  frames_dir = os.path.join(ROOT, args.frames)
  if os.path.isdir(frames_dir):
    frames = inference.load(frames_dir)
    f_acc = acc(clip_logits(frames.predict, clips))
    f_macs = methods.macs(frames.model, channels)['total']
    rows.append(['per-frame ViT, mean of logits (no order)', '—', f'{100 * f_acc:.2f} %',
                 f'{f_macs / 1e6:.1f}', f'{f_macs / dense_macs:.2f}'])
  n = dense.model.num_prefix + dense.model.num_patches

  def add_policy(label, series, macs, a, suffix):
    """The off-the-shelf row of a policy, and its temporal fine-tuned row where the temporal
    tool's run (<workdir><suffix>/temporal.json) exists; the same MACs per clip for both."""
    results = [('off the shelf', a)]
    tuned = os.path.join(ROOT, f'{args.workdir}{suffix}', 'temporal.json')
    if os.path.exists(tuned):
      results.append(('temporal fine-tuned', json.load(open(tuned))['accuracy_fine_tuned']))
    for encoder, accuracy in results:
      rows.append([label, encoder, f'{100 * accuracy:.2f} %', f'{macs / 1e6:.1f}',
                   f'{macs / dense_macs:.2f}'])
      points[f'{series}, {encoder}'].append((macs / 1e6, 100 * accuracy))

  for r in args.capacities:
    model = eventful_model(dense.config, capacity=r)
    run = jax.jit(lambda v, c, m=model: run_video(m, v, c)['logits'])
    a = acc(clip_logits(lambda c: run(dense.variables, dense.normalize(c)), clips))
    add_policy(f'Eventful, r = {r} of {n}', 'top-r', methods.macs(model, channels)['total'], a,
               f'_r{r}')
  for h in args.thresholds:
    model = eventful_model(dense.config, capacity=0, threshold=h)
    run = jax.jit(lambda v, c, m=model: run_video(m, v, c))
    outs = [run(dense.variables, dense.normalize(clips[i:i + 100]))
            for i in range(0, len(clips), 100)]
    logits = np.concatenate([np.asarray(o['logits']) for o in outs])
    updated = np.concatenate([np.asarray(o['updated']) for o in outs])    # [n, T', depth, N]
    counts = updated[:, 1:].sum(-1).mean(-1)                              # per clip and step
    first = ev_flops.eventful_clip_macs(model, n, channels)
    tail = first['total'] - first['first_step'] - first['later_steps']
    per_clip = first['first_step'] + tail + np.array([
        sum(ev_flops.eventful_macs(model, int(round(c)), channels)['total'] for c in clip)
        for clip in counts])
    add_policy(f'Eventful, threshold {h:g}', 'threshold', float(per_clip.mean()), acc(logits),
               f'_h{h:g}')
    print(rows[-1], flush=True)
  series = [{'label': 'dense ViViT', 'colour': (0, 0, 0), 'x': [dense_macs / 1e6],
             'y': [100 * dense_acc]}]
  if dense_tuned is not None:
    series.append({'label': 'dense ViViT, temporal fine-tuned', 'colour': (127, 127, 127),
                   'x': [dense_macs / 1e6], 'y': [100 * dense_tuned]})
  for i, (label, pts) in enumerate(points.items()):
    if pts:
      pts = sorted(pts)
      series.append({'label': label, 'colour': COLOURS[i], 'x': [p[0] for p in pts],
                     'y': [p[1] for p in pts], 'dashed': 'off the shelf' in label})
  plot = os.path.join(DOCS, 'vivit_accuracy.png')
  line_plot(plot, [{'title': 'Eventful ViViT on Fashion-MNIST actions (test clips)',
                    'xlabel': 'MMACs per clip', 'ylabel': 'clip accuracy %', 'series': series}])
  body = (
      '## Eventful ViViT: accuracy against MACs per clip\n\n'
      f'`python benchmarks/eventful_vivit.py accuracy` at {git_revision()}: the first '
      f'{len(clips)} test clips of Fashion-MNIST actions (16 frames, 42 px; six actions in '
      'time-reversed pairs), the small factorised ViViT of configs/vit/fashion_mnist_actions.py '
      f'({n} tokens per step, 8 steps), variant full. MACs per clip: first step dense, later '
      'steps as counted, temporal encoder and head dense. "temporal fine-tuned": only the '
      'temporal encoder and head retrained on the cached eventful features '
      '(`python -m tokensparse.methods.eventful.temporal`, 10 epochs); the dense model '
      'given the same 10 epochs (threshold 0: every changed token recomputed, the dense '
      'features) is the reference for those rows, since part of their gain is the extra '
      'training itself.\n\n'
      + table(['model', 'temporal encoder', 'clip accuracy', 'MMACs per clip', '/ dense'], rows)
      + '\n\n![accuracy against MACs per clip](docs/eventful/vivit_accuracy.png)\n')
  write_section('eventful_vivit_accuracy', body)
  print(body)


def moving_square_clip(frames: int, size: int) -> np.ndarray:
  """A static random background with a bright square moving 8 px per frame: [T, H, W, 3]."""
  rng = np.random.default_rng(0)
  clip = np.repeat(rng.normal(0, 1, (size, size, 3)).astype(np.float32)[None], frames, axis=0)
  for t in range(frames):
    y, x = 40 + 2 * t, 16 + 4 * t
    clip[t, y:y + 48, x:x + 48] += 3.0
  return clip


def speed(args):
  config = configs.from_file('vit/vivit_kinetics400.py')
  dense_model = methods.build(config.model)
  clip = jnp.asarray(moving_square_clip(config.model.num_frames, config.model.image_size)[None])
  variables = jax.jit(dense_model.init)(jax.random.PRNGKey(0), clip)
  n = dense_model.num_prefix + dense_model.num_patches
  runners = {'dense': jax.jit(lambda v, c: dense_model.apply(v, c)[0])}
  models = {}
  for r in args.speed_capacities:
    models[r] = eventful_model(config, capacity=r)
    runners[f'r = {r}'] = jax.jit(lambda v, c, m=models[r]: run_video(m, v, c)['logits'])
  for name, fn in runners.items():
    start = time.perf_counter()
    jax.block_until_ready(fn(variables, clip))
    print(f'{name}: compiled and ran in {time.perf_counter() - start:.1f}s', flush=True)
  times = {name: [] for name in runners}
  for rnd in range(args.rounds):
    for name, fn in runners.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(variables, clip))
      times[name].append(time.perf_counter() - start)
    print(f'round {rnd + 1}: ' + ', '.join(f'{k} {v[-1]:.2f}s' for k, v in times.items()),
          flush=True)
  dense_t = np.array(times['dense'])
  dense_macs = methods.macs(dense_model, 3)['total']
  state_bytes = lambda m: sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(
      jax.eval_shape(lambda v: m.apply(v, method=lambda mdl: mdl.empty_state(1)), variables)))
  rows = [['dense', f'{dense_macs / 1e9:.1f}', '1.00', f'{np.median(dense_t):.2f} s', '1.00x',
           '—']]
  for r, model in models.items():
    macs = methods.macs(model, 3)['total']
    t = np.array(times[f'r = {r}'])
    rows.append([f'Eventful r = {r} of {n}', f'{macs / 1e9:.1f}', f'{dense_macs / macs:.2f}',
                 f'{np.median(t):.2f} s', f'{np.median(dense_t / t):.2f}x',
                 f'{state_bytes(model) / 2 ** 20:.0f} MiB'])
  body = (
      '## Eventful ViViT-B: time per clip on this CPU\n\n'
      f'`python benchmarks/eventful_vivit.py speed` at {git_revision()} on '
      f'{device_description()}: ViViT-B/16x2 (factorised encoder: 12 spatial blocks of width '
      f'768 on 16 time steps of {n} tokens, 4 temporal blocks; 224 px, 32 frames), batch 1, '
      'fp32, random weights on a clip with a static background and a moving square; whole clips '
      f'jitted, dense and Eventful (variant full) in turn, {args.rounds} rounds, median of the '
      'same-round ratios. MACs per clip: the first step dense, the temporal encoder dense. '
      'State: the Eventful state of the spatial encoder (buffers, references, attention '
      'products) at batch 1.\n\n'
      + table(['model', 'GMACs per clip', 'MAC reduction', 'time per clip', 'speed-up',
               'state'], rows) + '\n')
  write_section('eventful_vivit_speed', body)
  print(body)


def control(args):
  dense = inference.load(os.path.join(ROOT, args.workdir))
  clips, labels = fashion_mnist_actions.load_clips(args.clips,
                                                   data_dir=dense.config.data.data_dir)
  model = eventful_model(dense.config, capacity=0)
  channels = dense.channels
  a, b = macs_line(model, channels)
  step_dense = a + b * model.num_tokens
  later = model.steps - 1
  half = later // 2
  schedules = {'1/2 of dense': np.full(later, 0.5), '1/4 of dense': np.full(later, 0.25),
               '1/2, then 1/4': np.r_[np.full(half, 0.5), np.full(later - half, 0.25)]}
  streams = args.streams
  per_stream = len(clips) // streams
  x = np.asarray(dense.normalize(clips[:streams * per_stream]))
  x = x.reshape(per_stream, streams, *x.shape[1:])          # clip k of every stream together
  y = labels[:streams * per_stream].reshape(per_stream, streams)
  results, traces = [], {}
  for name, fractions in schedules.items():
    target = jnp.asarray(fractions * step_dense)
    controlled = jax.jit(lambda v, c, h: run_video_controlled(model, v, c, target, h))
    budget = budget_for(model, target, channels)
    open_loop = jax.jit(lambda v, c: run_video(model, v, c, budget=budget))
    h = jnp.full((streams,), args.threshold)
    got = {'threshold controller': ([], [], []), 'top-r schedule': ([], [], [])}
    for k in range(per_stream):
      out = controlled(dense.variables, jnp.asarray(x[k]), h)
      h = out['next_threshold']
      if k:  # the first clip of each stream warms the controller up
        got['threshold controller'][0].append(np.asarray(out['macs']))
        got['threshold controller'][1].append(np.asarray(out['logits']).argmax(-1) == y[k])
      o = open_loop(dense.variables, jnp.asarray(x[k]))
      counts = np.asarray(o['updated'])[:, 1:].sum(-1).mean(-1)
      if k:
        got['top-r schedule'][0].append(a + b * counts)
        got['top-r schedule'][1].append(np.asarray(o['logits']).argmax(-1) == y[k])
    for policy, (macs, correct, _) in got.items():
      macs = np.concatenate(macs) / step_dense                    # [clips, steps]
      results.append([name, policy, f'{macs.mean():.3f}', f'{macs.mean(0).min():.2f}-'
                      f'{macs.mean(0).max():.2f}', f'{macs.std(0).mean():.3f}',
                      f'{100 * np.concatenate(correct).mean():.2f} %'])
      traces[(name, policy)] = (macs.mean(0), macs.std(0))
    print(results[-2:], flush=True)
  steps = list(range(1, later + 1))
  name = '1/2, then 1/4'
  series = [{'label': 'target', 'colour': (0, 0, 0), 'x': steps, 'y': list(schedules[name]),
             'dashed': True}]
  for i, policy in enumerate(('threshold controller', 'top-r schedule')):
    mean, std = traces[(name, policy)]
    series.append({'label': policy, 'colour': COLOURS[i], 'x': steps, 'y': list(mean),
                   'err': list(std)})
  line_plot(os.path.join(DOCS, 'vivit_control.png'), [{
      'title': 'MACs per step when the target drops mid-clip (mean, std over clips)',
      'xlabel': 'step of the clip (1 = first after the dense one)',
      'ylabel': 'MACs / dense step', 'series': series}])
  body = (
      '## Eventful ViViT: a MACs budget changed within the clip\n\n'
      f'`python benchmarks/eventful_vivit.py control` at {git_revision()}: the first '
      f'{streams * per_stream} action test clips as {streams} streams of {per_stream} clips; '
      'the target of MACs per step (after the dense first step) as a fraction of a dense step, '
      'for each step. "threshold controller": a threshold policy whose threshold is scaled after '
      'every step to hold the target on average (run_video_controlled; its state carries from '
      'clip to clip of a stream, the first clip of each stream warms it up and is left out); '
      '"top-r schedule": the top-r budget each target affords (budget_for), open loop. Both '
      'change per step inside one compiled function. Counted MACs from the tokens the qkv gates '
      'recomputed (with static shapes the jitted CPU time follows the capacity, not these '
      'counts).\n\n'
      + table(['target', 'policy', 'MACs per step / dense, mean', 'per-step means',
               'spread over clips', 'clip accuracy'], results)
      + '\n\n![MACs per step against the target](docs/eventful/vivit_control.png)\n')
  write_section('eventful_vivit_control', body)
  print(body)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('part', choices=('accuracy', 'speed', 'control'))
  parser.add_argument('--workdir', default='runs/vivit_actions')
  parser.add_argument('--frames', default='runs/frames_actions')
  parser.add_argument('--clips', type=int, default=1000)
  parser.add_argument('--capacities', type=int, nargs='+', default=[37, 28, 18, 9, 5, 3])
  parser.add_argument('--thresholds', type=float, nargs='+', default=[0.5, 1.0, 2.0, 4.0])
  parser.add_argument('--speed_capacities', type=int, nargs='+', default=[96, 48])
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--streams', type=int, default=100)
  parser.add_argument('--threshold', type=float, default=1.0, help="the controller's start")
  args = parser.parse_args()
  {'accuracy': accuracy, 'speed': speed, 'control': control}[args.part](args)


if __name__ == '__main__':
  main()
