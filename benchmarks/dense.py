"""Dense ViT/DeiT throughput and FLOPs: the baseline every method is compared with.

    python benchmarks/dense.py            # DeiT-Ti/S/B at 224 px, batch 32
    python benchmarks/dense.py --quick    # Ti and S only

Forward passes are jitted and mapped over all local devices (on CPU: one per core), random
weights (speed does not depend on them), warm-up excluded, median of 5 timed batches.
"""
import argparse

from common import (device_description, git_revision, images_per_sec, matmul_gflops, table,
                    write_section)

import jax
import jax.numpy as jnp

from tokensparse import flops
from tokensparse.backbone import vit


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--batch', type=int, default=32)
  args = parser.parse_args()
  variants = ['Ti/16', 'S/16'] if args.quick else ['Ti/16', 'S/16', 'B/16']
  roof = matmul_gflops()
  print(f'{device_description()}; fp32 matmul roofline {roof:.0f} GFLOP/s', flush=True)
  rows = []
  for v in variants:
    model = vit.ViT(num_classes=1000, image_size=224, **vit.parse_variant(v))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))['params']
    gmacs = flops.vit_macs(model)['total'] / 1e9
    n_params = sum(x.size for x in jax.tree.leaves(params)) / 1e6
    ips = images_per_sec(model, params, args.batch, 224)
    bound = roof / (2 * gmacs)
    rows.append([f'DeiT-{v}', f'{n_params:.1f} M', f'{gmacs:.2f}', f'{ips:.1f}',
                 f'{100 * ips / bound:.0f} %'])
    print(rows[-1], flush=True)
  body = (f'## Dense ViT/DeiT baseline (224 px, batch {args.batch}, fp32)\n\n'
          f'`python benchmarks/dense.py` at {git_revision()} on {device_description()}; '
          f'fp32 matmul roofline measured in the same run: {roof:.0f} GFLOP/s.\n\n' +
          table(['model', 'params', 'GMACs', 'images/s', 'of roofline'], rows) +
          '\n\nGMACs by `tokensparse.flops` (matrix products only, the papers\' convention; '
          'reference: Ti 1.25, S 4.60, B 17.56). "Of roofline" compares 2 x GMACs x images/s '
          'with the matmul rate.')
  write_section('dense', body)


if __name__ == '__main__':
  main()
