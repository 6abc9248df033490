"""TokenLearner vs the dense model: GMACs by the analytic counter and CPU/accelerator
throughput measured in the same run.

    python benchmarks/token_learner.py                 # S/16 and B/16, 224 px, batch 32

TokenLearner v1.1 with 8 tokens before block 6 of 12 (0.5 depth), class token kept as in the
dense DeiT. Jitted, mapped over all local devices, warm-up excluded, the better of two
interleaved measurements of each model; random weights (the cost does not depend on them).
Also lists GMACs for the paper's 384 px setting and Scenic's default (16 tokens at 0.75).
"""
import argparse

from common import device_description, git_revision, images_per_sec, table, write_section

import jax
import jax.numpy as jnp

from tokensparse import flops
from tokensparse.methods.token_learner import flops as tl_flops
from tokensparse.methods.token_learner.model import TokenLearnerViT
from tokensparse.backbone.vit import ViT, parse_variant


def gmacs_row(variant, size, tokens, at, classifier='token'):
  kw = dict(num_classes=1000, image_size=size, classifier=classifier, **parse_variant(variant))
  dense = flops.vit_macs(ViT(**kw))['total'] / 1e9
  tl = tl_flops.token_learner_macs(TokenLearnerViT(
      **kw, num_learned_tokens=tokens, learner_layer=int(at * kw['depth'])))['total'] / 1e9
  label = f'{variant} {size} px, {tokens} tokens at {at}' + (', gap' if classifier == 'gap' else '')
  return [label, f'{dense:.2f}', f'{tl:.2f}',
          f'{tl / dense:.3f}']


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variants', default='S/16,B/16')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--iters', type=int, default=5)
  args = parser.parse_args()
  flops_rows = [gmacs_row(v, 224, 8, 0.5) for v in ('Ti/16', 'S/16', 'B/16')]
  flops_rows += [gmacs_row('B/16', 384, 8, 0.5, 'gap'), gmacs_row('B/16', 224, 16, 0.75, 'gap')]
  speed_rows = []
  for variant in args.variants.split(','):
    kw = dict(num_classes=1000, image_size=224, **parse_variant(variant))
    dense, tl = ViT(**kw), TokenLearnerViT(**kw, num_learned_tokens=8, learner_layer=6)
    x = jnp.zeros((1, 224, 224, 3))
    p_tl = jax.jit(lambda r, m=tl: m.init(r, x))(jax.random.PRNGKey(0))['params']
    p_dense = {k: v for k, v in p_tl.items() if k != 'token_learner'}
    g_dense = flops.vit_macs(dense)['total'] / 1e9
    g_tl = tl_flops.token_learner_macs(tl)['total'] / 1e9
    ips_d, ips_t = [], []
    for _ in range(2):  # interleaved, so drift on a shared machine hits both alike
      ips_d.append(images_per_sec(dense, p_dense, args.batch, 224, args.iters))
      ips_t.append(images_per_sec(tl, p_tl, args.batch, 224, args.iters))
    ips_d, ips_t = max(ips_d), max(ips_t)
    flop_speedup, speedup = g_dense / g_tl, ips_t / ips_d
    speed_rows.append([variant, f'{g_dense:.2f}', f'{g_tl:.2f}', f'{flop_speedup:.2f}x',
                       f'{ips_d:.1f}', f'{ips_t:.1f}', f'{speedup:.2f}x',
                       f'{speedup / flop_speedup:.2f}'])
    print(speed_rows[-1], flush=True)
  body = ('## TokenLearner FLOPs and speed (8 tokens at 0.5 depth, fp32, inference)\n\n'
          f'`python benchmarks/token_learner.py` at {git_revision()} on {device_description()}.'
          '\n\nGMACs by `tokensparse.flops` (learner included; class token kept unless '
          'noted "gap"):\n\n' +
          table(['setting', 'dense GMACs', 'TokenLearner GMACs', 'ratio'],
                flops_rows) +
          '\n\n"gap": Scenic\'s mean-token classifier (no class token). Paper, B/16 at 384 px: 55.6 -> 28.7 GMACs.\n\n'
          f'Throughput at batch {args.batch}, 224 px, the same run:\n\n' +
          table(['model', 'dense GMACs', 'TL GMACs', 'FLOPs speed-up', 'dense img/s', 'TL img/s',
                 'speed-up', 'of FLOPs speed-up'], speed_rows))
  write_section('token_learner', body)


if __name__ == '__main__':
  main()
