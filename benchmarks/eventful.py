"""Eventful Transformer: time per frame against the dense per-frame model in the same run,
and the counted operations, on a static-background clip.

    python benchmarks/eventful.py                     # ViT-B/16, 224 px, batch 1, 16 frames

The clip: a fixed random background with a 48x48 bright square moving 8 px per frame (so a
quarter of the tokens or fewer change). Jitted `step` per frame (the state stays on the
device and is donated, so XLA updates it in place); the first frame, the dense `init_state`,
is excluded. Frames are timed in pairs: for every frame the dense model and each Eventful
variant run back to back, so the load of a shared machine hits both alike; a model's time is
its median over frames and rounds, and its speed-up the median over frames of (dense time /
its time) on that frame. `--cores 1` pins the process to one core first (XLA then sizes its
thread pool to it). Random weights: the work does not depend on them. Batch 1 runs on one
device.
"""
import argparse
import os
import time

from common import device_description, git_revision, table, write_section

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import flops
from tokensparse.methods.eventful import flops as ev_flops
from tokensparse.methods.eventful.model import EventfulViT
from tokensparse.backbone.vit import ViT, parse_variant


def make_clip(frames: int, size: int = 224) -> jnp.ndarray:
  rng = np.random.default_rng(0)
  background = rng.normal(0, 1, (size, size, 3)).astype(np.float32)
  clip = np.repeat(background[None], frames, axis=0)
  for t in range(frames):
    y, x = 40 + 4 * t, 16 + 8 * t
    clip[t, y:y + 48, x:x + 48] += 3.0
  return jnp.asarray(clip[:, None])       # [T, 1, H, W, C]


def paired_frame_times(runners: dict, frames: int) -> dict[str, list[float]]:
  """Milliseconds of run.step(t) per runner for t = 1 .. frames - 1, the runners taking turns
  on each frame, after every run.reset() (untimed)."""
  for run in runners.values():
    run.reset()
  times = {name: [] for name in runners}
  for t in range(1, frames):
    for name, run in runners.items():
      start = time.perf_counter()
      jax.block_until_ready(run.step(t))
      times[name].append(1e3 * (time.perf_counter() - start))
  return times


class Dense:
  def __init__(self, model, variables, clip):
    self.fn = jax.jit(lambda f: model.apply(variables, f)[0])
    self.clip = clip
    jax.block_until_ready(self.fn(clip[0]))                          # compile

  def reset(self):
    pass

  def step(self, t):
    return self.fn(self.clip[t])


class Eventful:
  """The state is donated: XLA updates its buffers in place instead of copying them."""

  def __init__(self, model, variables, clip):
    self.init = jax.jit(lambda f: model.apply(variables, f, method=EventfulViT.init_state))
    self.fn = jax.jit(lambda s, f: model.apply(variables, s, f, method=EventfulViT.step),
                      donate_argnums=(0,))
    self.clip = clip
    self.reset()
    jax.block_until_ready(self.step(1))                              # compile

  def reset(self):  # every pass over the clip starts from its dense first frame
    self.state = jax.block_until_ready(self.init(self.clip[0])[0])

  def step(self, t):
    self.state, logits = self.fn(self.state, self.clip[t])
    return logits


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variant', default='B/16')
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--cores', type=int, default=0, help='pin to this many cores (0: all)')
  args = parser.parse_args()
  if args.cores:  # before the first JAX computation creates XLA's thread pool
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
  kw = dict(num_classes=1000, image_size=224, **parse_variant(args.variant))
  clip = make_clip(args.frames)
  dense = ViT(**kw)
  variables = jax.jit(dense.init)(jax.random.PRNGKey(0), clip[0])
  n = dense.num_prefix + dense.num_patches
  runners = {'dense': Dense(dense, variables, clip)}
  macs = {'dense': flops.vit_macs(dense)['total'] / 1e9}
  tokens = {'dense': n}
  for variant, r in (('full', n // 4), ('sparse_qk', n // 4), ('tokenwise', n // 4),
                     ('full', n // 2), ('full', n // 8)):
    model = EventfulViT(**kw, capacity=r, variant=variant)
    name = f'Eventful {variant}, r = {r}'
    runners[name] = Eventful(model, variables, clip)
    macs[name] = ev_flops.eventful_macs(model)['total'] / 1e9
    tokens[name] = r
  times = {name: [] for name in runners}
  ratios = {name: [] for name in runners}
  for round_ in range(args.rounds):
    got = paired_frame_times(runners, args.frames)
    for name in runners:
      times[name] += got[name]
      ratios[name] += list(np.divide(got['dense'], got[name]))
    print(f'round {round_ + 1}/{args.rounds}: ' + ', '.join(
        f'{name} {np.median(got[name]):.0f} ms' for name in runners), flush=True)
  rows = []
  for name in runners:
    ms = float(np.median(times[name]))
    label = 'dense ViT, every frame' if name == 'dense' else name
    rows.append([label, tokens[name], f'{macs[name]:.2f}', f'{ms:.0f}',
                 f'{np.median(ratios[name]):.2f}x', f'{macs["dense"] / macs[name]:.2f}x'])
  cores = len(os.sched_getaffinity(0))
  command = 'python benchmarks/eventful.py' + (f' --cores {args.cores}' if args.cores else '')
  body = (f'## Eventful Transformer speed ({args.variant}, 224 px, batch 1, {args.frames}-frame '
          f'static-background clip, fp32, {cores} CPU core{"s" * (cores > 1)})\n\n'
          f'`{command}` at {git_revision()} on {device_description()}, '
          f'{cores} in use (batch 1: one host device). Time per frame after the first: median '
          f'over the frames of {args.rounds} rounds, the models taking turns on each frame; '
          'speed-up: median over frames of dense / Eventful time on the same frame; operations '
          'by `tokensparse.methods.eventful.flops.eventful_macs` (gates included).\n\n' +
          table(['model', 'tokens recomputed per gate (N = %d)' % n, 'GMACs per frame',
                 'ms per frame', 'speed-up', 'fewer operations'], rows))
  suffix = f'_{args.cores}core' if args.cores else ''
  write_section(f'eventful_{args.variant.replace("/", "")}{suffix}', body)


if __name__ == '__main__':
  main()
