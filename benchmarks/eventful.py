"""Eventful Transformer: time per frame against the dense per-frame model in the same run,
and the counted operations, on a static-background clip.

    python benchmarks/eventful.py                     # ViT-B/16, 224 px, batch 1, 16 frames

The clip: a fixed random background with a 48x48 bright square moving 8 px per frame (so a
quarter of the tokens or fewer change). Jitted `step` per frame (the state stays on the
device); the first frame, the dense `init_state`, is excluded; median over frames 1..T-1 of
two passes; the dense model is timed before and after the Eventful variants and the faster of
the two is used. Random weights: the work does not depend on them. Batch 1 runs on one
device.
"""
import argparse
import time

from common import device_description, git_revision, table, write_section

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import flops
from tokensparse.models.eventful import EventfulViT
from tokensparse.models.vit import ViT, parse_variant


def make_clip(frames: int, size: int = 224) -> jnp.ndarray:
  rng = np.random.default_rng(0)
  background = rng.normal(0, 1, (size, size, 3)).astype(np.float32)
  clip = np.repeat(background[None], frames, axis=0)
  for t in range(frames):
    y, x = 40 + 4 * t, 16 + 8 * t
    clip[t, y:y + 48, x:x + 48] += 3.0
  return jnp.asarray(clip[:, None])       # [T, 1, H, W, C]


def per_frame_ms(fn, frames) -> float:
  times = []
  for _ in range(2):
    for t in range(1, len(frames)):
      start = time.perf_counter()
      jax.block_until_ready(fn(t))
      times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variant', default='B/16')
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--only', default='', help='variant,r pairs to run, e.g. full:49')
  args = parser.parse_args()
  kw = dict(num_classes=1000, image_size=224, **parse_variant(args.variant))
  clip = make_clip(args.frames)
  dense = ViT(**kw)
  variables = jax.jit(dense.init)(jax.random.PRNGKey(0), clip[0])
  n = dense.num_prefix + dense.num_patches
  dense_fn = jax.jit(lambda f: dense.apply(variables, f)[0])
  jax.block_until_ready(dense_fn(clip[0]))
  dense_ms = per_frame_ms(lambda t: dense_fn(clip[t]), clip)
  dense_g = flops.vit_macs(dense)['total'] / 1e9
  print('dense', dense_ms, flush=True)
  rows = []
  for variant, r in (('full', n // 4), ('sparse_qk', n // 4), ('tokenwise', n // 4),
                     ('full', n // 2), ('full', n // 8)):
    model = EventfulViT(**kw, capacity=r, variant=variant)
    init = jax.jit(lambda f, m=model: m.apply(variables, f, method=EventfulViT.init_state))
    # The state is donated: XLA updates its buffers in place instead of copying them.
    step = jax.jit(lambda s, f, m=model: m.apply(variables, s, f, method=EventfulViT.step),
                   donate_argnums=(0,))
    state, _ = init(clip[0])
    state, _ = step(state, clip[1])                   # compile
    holder = {'state': state}

    def run(t, holder=holder, step=step):
      holder['state'], logits = step(holder['state'], clip[t])
      return logits
    ms = per_frame_ms(run, clip)
    g = flops.eventful_macs(model)['total'] / 1e9
    rows.append([f'Eventful {variant}, r = {r}', r, f'{g:.2f}', ms, dense_g / g])
    print(rows[-1], flush=True)
  # Dense again at the end: the better of the two, so drift on a shared machine does not
  # flatter the sparse variants.
  dense_ms = min(dense_ms, per_frame_ms(lambda t: dense_fn(clip[t]), clip))
  rows = [['dense ViT, every frame', n, f'{dense_g:.2f}', f'{dense_ms:.0f}', '1.00x', '1.00x']] + \
      [r[:3] + [f'{r[3]:.0f}', f'{dense_ms / r[3]:.2f}x', f'{r[4]:.2f}x'] for r in rows]
  body = (f'## Eventful Transformer speed ({args.variant}, 224 px, batch 1, {args.frames}-frame '
          'static-background clip, fp32)\n\n'
          f'`python benchmarks/eventful.py` at {git_revision()} on {device_description()} '
          '(batch 1: one single-threaded host device). Time per frame after the first (median), '
          'dense per-frame model measured in the same run; operations by '
          '`tokensparse.flops.eventful_macs` (gates included).\n\n' +
          table(['model', 'tokens recomputed per gate (N = %d)' % n, 'GMACs per frame',
                 'ms per frame', 'speed-up', 'fewer operations'], rows))
  write_section(f'eventful_{args.variant.replace("/", "")}', body)


if __name__ == '__main__':
  main()
