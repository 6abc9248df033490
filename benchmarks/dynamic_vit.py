"""DynamicViT vs the dense model: GMACs and CPU/accelerator throughput in the same run.

    python benchmarks/dynamic_vit.py               # DeiT-S/0.7 at 224 px, batch 32 and batch 1
    python benchmarks/dynamic_vit.py --variant B/16

Inference mode (top-k gather, static token counts), jitted and mapped over all local devices
for batch 32; batch 1 runs on one device. Random weights: with static counts the cost does not
depend on which tokens are kept. Warm-up excluded, median of timed calls. Speed is reported as
a ratio to the dense model measured in the same process, since absolute times drift here.
"""
import argparse

from common import (device_description, git_revision, images_per_sec, table, time_per_call,
                    write_section)

import jax
import jax.numpy as jnp

from tokensparse import flops
from tokensparse.methods.dynamic_vit import flops as dv_flops
from tokensparse.methods.dynamic_vit.model import DynamicViT
from tokensparse.backbone.vit import ViT, parse_variant


def latency_ms(model, params, size, iters):
  f = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
  return 1e3 * time_per_call(f, params, jnp.zeros((1, size, size, 3)), iters=iters)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variant', default='S/16')
  parser.add_argument('--keep_ratio', type=float, default=0.7)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--iters', type=int, default=7)
  args = parser.parse_args()
  kw = dict(num_classes=1000, image_size=224, **parse_variant(args.variant))
  dense = ViT(**kw)
  sparse = DynamicViT(**kw, keep_ratio=args.keep_ratio)
  x = jnp.zeros((1, 224, 224, 3))
  p_sparse = jax.jit(lambda r: sparse.init({'params': r, 'gumbel': r}, x, train=True))(
      jax.random.PRNGKey(0))['params']
  p_dense = {k: v for k, v in p_sparse.items() if not k.startswith('predictor_')}
  g_dense = flops.vit_macs(dense)['total'] / 1e9
  g_sparse = dv_flops.dynamic_vit_macs(sparse)['total'] / 1e9
  print(f'{device_description()}: {args.variant} dense {g_dense:.2f} GMACs, '
        f'DynamicViT/{args.keep_ratio} {g_sparse:.2f} GMACs', flush=True)
  # Interleave the measurements so drift on a shared machine hits both alike.
  ips_d, ips_s, lat_d, lat_s = [], [], [], []
  for _ in range(2):
    ips_d.append(images_per_sec(dense, p_dense, args.batch, 224, args.iters))
    ips_s.append(images_per_sec(sparse, p_sparse, args.batch, 224, args.iters))
    lat_d.append(latency_ms(dense, p_dense, 224, args.iters))
    lat_s.append(latency_ms(sparse, p_sparse, 224, args.iters))
  ips_d, ips_s, lat_d, lat_s = max(ips_d), max(ips_s), min(lat_d), min(lat_s)
  rows = [[f'DeiT-{args.variant} dense', f'{g_dense:.2f}', f'{ips_d:.1f}', '1.00', f'{lat_d:.0f}',
           '1.00'],
          [f'DynamicViT/{args.keep_ratio} ({",".join(map(str, sparse.counts))} tokens)',
           f'{g_sparse:.2f}', f'{ips_s:.1f}', f'{ips_s / ips_d:.2f}', f'{lat_s:.0f}',
           f'{lat_d / lat_s:.2f}']]
  for r in rows:
    print(r, flush=True)
  body = (f'## DynamicViT speed and FLOPs ({args.variant}, 224 px, fp32, inference mode)\n\n'
          f'`python benchmarks/dynamic_vit.py --variant {args.variant}` at {git_revision()} on '
          f'{device_description()}.\n\n' +
          table(['model', 'GMACs', f'images/s (batch {args.batch})', 'speed-up',
                 'batch-1 latency (ms)', 'speed-up'], rows) +
          f'\n\nFLOPs ratio dense/DynamicViT: {g_dense / g_sparse:.2f}x (predictors included: '
          f'{dv_flops.dynamic_vit_macs(sparse)["predictors"] / 1e9:.2f} GMACs). Throughput is the '
          'better of two interleaved measurements of each model in the same process.')
  write_section(f'dynamic_vit_{args.variant.replace("/", "")}', body)


if __name__ == '__main__':
  main()
