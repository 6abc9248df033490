"""DynamicViT accuracy on Fashion-MNIST items on a 56x56 canvas, against its dense teacher and
the paper's two ablation baselines at the same budget.

    python train.py --config configs/vit/fashion_mnist_canvas.py --workdir runs/vit_fashion_mnist_canvas
    python train.py --config configs/dynamicvit/fashion_mnist.py --workdir runs/dynamicvit_fashion_mnist
    python train.py --config configs/dynamicvit/fashion_mnist.py:static --workdir runs/dynamicvit_static_fashion_mnist
    python train.py --config configs/dynamicvit/fashion_mnist.py:pool --workdir runs/dynamicvit_pool_fashion_mnist
    python train.py --config configs/dynamicvit/fashion_mnist.py:pool,full_backbone --workdir runs/dynamicvit_pool_fullbackbone_fashion_mnist
    python benchmarks/dynamic_vit_accuracy.py

Reads each work directory's final evaluation (all 10,000 test images) and writes the
'dynamic_vit_fashion_mnist' section of BENCHMARKS.md.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from common import ROOT, device_description, git_revision, table, write_section  # noqa: E402

import ml_collections  # noqa: E402

from tokensparse import flops, models  # noqa: E402
from tokensparse.train import checkpoint  # noqa: E402

RUNS = [('dense teacher (ViT, 64+1 tokens)', 'runs/vit_fashion_mnist_canvas'),
        ('DynamicViT/0.7 (44, 31, 21 tokens)', 'runs/dynamicvit_fashion_mnist'),
        ('static selection, same budget', 'runs/dynamicvit_static_fashion_mnist'),
        ('2x2 pooling before block 3', 'runs/dynamicvit_pool_fashion_mnist'),
        ('2x2 pooling, backbone at full lr', 'runs/dynamicvit_pool_fullbackbone_fashion_mnist')]


def macs(config) -> float:
  model = models.build(config.model)
  name = config.model.name
  if name == 'dynamic_vit':
    c = flops.dynamic_vit_macs(model, channels=1)
    return c['total'] - (c['predictors'] if config.model.get('selector') == 'static' else 0)
  if name == 'pooled_vit':
    n, p = model.num_patches, model.num_prefix
    tokens = [p + (n if i < model.pool_layer else n // 4) for i in range(model.depth)]
    return flops.vit_macs(model, 1, tokens)['total']
  return flops.vit_macs(model, 1)['total']


def main():
  rows, dense_acc, dense_macs = [], None, None
  for label, workdir in RUNS:
    path = os.path.join(ROOT, workdir)
    if not os.path.exists(os.path.join(path, 'metrics.jsonl')):
      print(f'skipping {label}: no {workdir}/metrics.jsonl')
      continue
    final = [json.loads(l) for l in open(os.path.join(path, 'metrics.jsonl'))
             if '"eval"' in l][-1]
    config = ml_collections.ConfigDict(checkpoint.load_config(path))
    m, acc = macs(config) / 1e6, 100 * final['accuracy']
    if dense_acc is None:
      dense_acc, dense_macs = acc, m
    rows.append([label, f'{acc:.2f} %', f'{acc - dense_acc:+.2f}', f'{m:.1f}',
                 f'{m / dense_macs:.2f}', int(final['count'])])
    print(rows[-1])
  body = ('## DynamicViT accuracy: Fashion-MNIST on a 56x56 canvas\n\n'
          f'Commands in `benchmarks/dynamic_vit_accuracy.py` (its docstring), at {git_revision()} '
          f'on {device_description()}. Each 28x28 item sits at a random position on a black '
          '56x56 canvas (fixed per test image), patch 7: 64 patch tokens, most of them '
          'background. Students fine-tune 1 epoch from the dense teacher with the same recipe '
          '(new parameters at lr 1e-3, backbone at 0.01x and frozen for the first quarter epoch, '
          'class token and position embedding frozen), except the last row. The teacher itself '
          'had only 2 epochs on the canvas, so a student whose backbone trains at the full rate '
          'keeps learning the task and can overtake it (last row).\n\n' + table(['model', 'test accuracy', 'vs teacher', 'MMACs', 'of dense',
                          'test images'], rows))
  write_section('dynamic_vit_fashion_mnist', body)


if __name__ == '__main__':
  main()
