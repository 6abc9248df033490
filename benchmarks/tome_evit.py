"""ToMe and EViT vs the dense model: GMACs and throughput in the same run.

    python benchmarks/tome_evit.py            # DeiT-S/16, 224 px, fp32: batch 32 and batch 1

Models: dense DeiT-S, ToMe r=8 and r=13 (proportional attention), EViT keep rate 0.7 at
blocks 3, 6, 9 (the paper's 4th, 7th, 10th) with the fused token. Inference mode, jitted;
batch 32 is mapped over all local devices, batch 1 runs on one device. Random weights and
random images: the token counts are static, so the cost does not depend on what is merged.
Measured in rounds: each round times the dense model and then every method back to back
(median of `--iters` calls each); a method's speed-up is the median over rounds of (dense
time / its time) in the same round, so the load of a shared machine hits both alike.
"speed-up / MAC ratio" divides the measured speed-up by dense MACs / method MACs: 1.0 means
the saved operations turn fully into time.
"""
import argparse

from common import device_description, git_revision, table, time_per_call, write_section

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import methods
import ml_collections


def model_config(name, variant, **fields):
  c = ml_collections.ConfigDict(dict(name=name, variant=variant, num_classes=1000,
                                     image_size=224, dtype='float32'))
  c[name] = methods.get(name).defaults()
  for key, value in fields.items():
    c[name][key] = value
  return c


def forward(model, batch):
  """A compiled forward pass: pmapped over the local devices when they divide the batch."""
  n = jax.local_device_count()
  if batch > 1 and batch % n == 0:
    f = jax.pmap(lambda v, x: model.apply(v, x)[0], in_axes=(None, 0))
    shape = (n, batch // n, 224, 224, 3)
  else:
    f = jax.jit(lambda v, x: model.apply(v, x)[0])
    shape = (batch, 224, 224, 3)
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  return lambda v: f(v, x)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variant', default='S/16')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--iters', type=int, default=3)
  args = parser.parse_args()
  settings = [('dense', model_config('vit', args.variant)),
              ('ToMe r=8', model_config('tome', args.variant, r=8)),
              ('ToMe r=13', model_config('tome', args.variant, r=13)),
              ('EViT 0.7', model_config('evit', args.variant, keep_rate=0.7, layers=(3, 6, 9)))]
  models = {name: methods.build(c) for name, c in settings}
  dense = models['dense']
  variables = jax.jit(dense.init)(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))
  macs = {name: methods.of(m).macs(m)['total'] / 1e9 for name, m in models.items()}
  print(f'{device_description()}: GMACs ' +
        ', '.join(f'{k} {v:.2f}' for k, v in macs.items()), flush=True)
  results = {}
  for batch in (32, 1):
    fns = {name: forward(m, batch) for name, m in models.items()}
    for fn in fns.values():
      jax.block_until_ready(fn(variables))                       # compile
    times = {name: [] for name in fns}
    for r in range(args.rounds):
      for name, fn in fns.items():
        times[name].append(time_per_call(fn, variables, warmup=1, iters=args.iters))
      print(f'batch {batch} round {r}: ' +
            ', '.join(f'{k} {batch / v[-1]:.1f} img/s' for k, v in times.items()), flush=True)
    dense_t = np.array(times['dense'])
    results[batch] = {name: (batch / float(np.median(t)),
                             float(np.median(dense_t / np.array(t)))) for name, t in times.items()}
  rows = []
  for name in models:
    mac_ratio = macs['dense'] / macs[name]
    row = [name, f'{macs[name]:.2f}', f'{mac_ratio:.2f}']
    for batch in (32, 1):
      ips, speedup = results[batch][name]
      row += [f'{ips:.1f}', f'{speedup:.2f}', f'{speedup / mac_ratio:.2f}']
    rows.append(row)
    print(row, flush=True)
  body = (f'## ToMe and EViT speed and FLOPs (DeiT-{args.variant}, 224 px, fp32, inference)\n\n'
          f'`python benchmarks/tome_evit.py` at {git_revision()} on {device_description()}: '
          f'median over {args.rounds} rounds of same-round ratios to the dense model (batch 32 '
          'pmapped over the host devices, batch 1 on one device). GMACs by each method\'s '
          'counter (ToMe includes the matching\'s similarity products).\n\n' +
          table(['model', 'GMACs', 'MAC ratio', 'img/s (b32)', 'speed-up (b32)',
                 'speed-up / MAC ratio (b32)', 'img/s (b1)', 'speed-up (b1)',
                 'speed-up / MAC ratio (b1)'], rows))
  write_section('tome_evit_speed', body)


if __name__ == '__main__':
  main()
