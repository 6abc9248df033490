"""VTP: parameters and GMACs of DeiT-S/B pruned 20 % and 40 % by the counter, and the speed of
the 40 %-pruned DeiT-S against the unpruned model in the same run.

    python benchmarks/vtp.py

No ImageNet sparsity training happens here, so the scores are i.i.d. uniform: the global
threshold then cuts attention and MLP channels in about equal shares in every block (the
paper's learned scores cut unevenly, hence its 48.0 M at 40 %). "physical" is the model
`prune` builds (a layer's heads padded to its widest head, see tokensparse/methods/vtp/model.py, and
every width rounded up to a multiple of --align, default 16, for the matmul kernels);
"kept" counts only the kept channels. Speed: fp32, batch 32, 224 px, jitted and mapped over
all local devices, the better of two interleaved measurements.
"""
import argparse

from common import device_description, git_revision, images_per_sec, table, write_section

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import flops
from tokensparse.backbone.vit import ViT, parse_variant
from tokensparse.methods.vtp.model import VTPViT, keep_masks, prune


def count(params) -> int:
  return sum(int(np.size(x)) for x in jax.tree.leaves(params))


def kept_macs_params(kw, masks) -> tuple[float, int]:
  """MACs and parameters if every head could have its own width (kept channels only)."""
  depth, d = kw['depth'], kw['width']
  inner = [int(masks[f'attn_{i}'].sum()) for i in range(depth)]
  mlp = [int(masks[f'mlp_{i}'].sum()) for i in range(depth)]
  model = ViT(**{**kw, 'num_heads': 1, 'head_dim': tuple(inner), 'mlp_dim': tuple(mlp)})
  dense = ViT(**kw)
  params = count(jax.eval_shape(dense.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  params -= sum((d * 3 + 3 + d) * (d - a) + (2 * d + 1) * (kw['mlp_dim'] - m)
                for a, m in zip(inner, mlp))
  return flops.vit_macs(model)['total'], params


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--iters', type=int, default=5)
  parser.add_argument('--align', type=int, default=16, help='prune(..., align=): physical widths '
                      'rounded up to a multiple (zero channels)')
  args = parser.parse_args()
  x = jnp.zeros((1, 224, 224, 3))
  rows, speed_rows = [], []
  for variant in ('S/16', 'B/16'):
    kw = dict(num_classes=1000, image_size=224, **parse_variant(variant))
    variables = jax.jit(VTPViT(**kw).init)(jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(0)
    scores = jax.tree.map(lambda s: rng.uniform(0.0, 1.0, np.shape(s)), variables['scores'])
    dense_macs, dense_params = flops.vit_macs(ViT(**kw))['total'], count(variables['params'])
    rows.append([f'DeiT-{variant}', '0 %', f'{dense_params / 1e6:.1f} M', f'{dense_macs / 1e9:.2f}',
                 '', ''])
    for rate in (0.2, 0.4):
      params, fields = prune(variables['params'], scores, rate, align=args.align)
      small = ViT(**{**kw, 'head_dim': tuple(fields['head_dim']),
                     'mlp_dim': tuple(fields['mlp_dim']), 'attn_scale': fields['attn_scale']})
      macs = flops.vit_macs(small)['total']
      kept_macs, kept_params = kept_macs_params(kw, keep_masks(scores, rate))
      rows.append([f'DeiT-{variant}', f'{rate:.0%}', f'{count(params) / 1e6:.1f} M',
                   f'{macs / 1e9:.2f}', f'{kept_params / 1e6:.1f} M', f'{kept_macs / 1e9:.2f}'])
      print(rows[-1], flush=True)
      if variant == 'S/16' and rate == 0.4:
        ips_d, ips_p = [], []
        for _ in range(2):
          ips_d.append(images_per_sec(ViT(**kw), variables['params'], args.batch, 224, args.iters))
          ips_p.append(images_per_sec(small, params, args.batch, 224, args.iters))
        ips_d, ips_p = max(ips_d), max(ips_p)
        f_ratio, s_ratio = dense_macs / macs, ips_p / ips_d
        speed_rows.append([f'DeiT-{variant}, 40 % pruned', f'{dense_macs / 1e9:.2f}',
                           f'{macs / 1e9:.2f}', f'{f_ratio:.2f}x', f'{ips_d:.1f}', f'{ips_p:.1f}',
                           f'{s_ratio:.2f}x', f'{s_ratio / f_ratio:.2f}'])
        print(speed_rows[-1], flush=True)
  body = ('## VTP: parameters, FLOPs and speed of pruned DeiT\n\n'
          f'`python benchmarks/vtp.py --align {args.align}` at {git_revision()} on '
          f'{device_description()}. '
          'Uniform random scores (no ImageNet sparsity training here): see the script '
          'docstring. Paper, DeiT-B at 40 %: 86.4 M -> 48.0 M parameters, 17.6 -> 10.0 '
          'GFLOPs (its learned scores prune unevenly).\n\n' +
          table(['model', 'pruned', 'params (physical)', 'GMACs (physical)', 'params (kept)',
                 'GMACs (kept)'], rows) +
          f'\n\nThroughput at batch {args.batch}, 224 px, fp32, the same run:\n\n' +
          table(['model', 'dense GMACs', 'pruned GMACs', 'FLOPs speed-up', 'dense img/s',
                 'pruned img/s', 'speed-up', 'of FLOPs speed-up'], speed_rows))
  write_section('vtp', body)


if __name__ == '__main__':
  main()
