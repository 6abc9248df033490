"""Eventful Transformer accuracy on Moving Fashion-MNIST clips with no retraining: accuracy
against the number of recomputed tokens r for the three variants.

    python train.py --config configs/vit/fashion_mnist_canvas.py --workdir runs/vit_fashion_mnist_canvas
    python benchmarks/eventful_accuracy.py

The model is the dense canvas ViT (trained on single 56x56 canvas images, never on clips):
each 42x42 frame is placed at the centre of a black 56x56 canvas, so the item keeps its
28x28 size. Per-frame ViT + temporal model: the clip's prediction is the mean of the
per-frame logits. Every test clip (2,000 x 8 frames); the first frame of each clip is dense.
"""
import argparse

from common import device_description, git_revision, table, write_section

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import backbone, checkpoint, methods
from tokensparse.data import moving_fashion_mnist, pipeline
from tokensparse.methods.eventful import flops as ev_flops
from tokensparse.methods.eventful.model import EventfulViT, run_clip


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='runs/vit_fashion_mnist_canvas')
  parser.add_argument('--clips', type=int, default=2000)
  parser.add_argument('--batch', type=int, default=200)
  args = parser.parse_args()
  config, variables, _ = checkpoint.load_variables(args.workdir)
  params = variables['params']
  kw = backbone.backbone_kwargs(config.model)
  clips, labels = moving_fashion_mnist.load_clips(kw['image_size'], args.clips,
                                                  data_dir=config.data.data_dir)
  clips = pipeline.normalize(clips, config.data.mean, config.data.std)
  n_dev = jax.local_device_count()
  dense = methods.build(config.model)
  n = dense.num_prefix + dense.num_patches
  rows, dense_acc = [], None
  settings = [('full', n)] + [(v, r) for r in (n // 2, n // 4, n // 8)
                              for v in ('tokenwise', 'sparse_qk', 'full')]
  for variant, r in settings:
    model = EventfulViT(**kw, capacity=r, variant=variant)
    fn = jax.pmap(lambda c, m=model: run_clip(m, {'params': params}, c)[0])
    correct = 0
    for i in range(0, len(clips), args.batch):
      c = clips[i:i + args.batch]
      logits = fn(jnp.asarray(c.reshape(n_dev, -1, *c.shape[1:])))
      pred = np.asarray(logits.reshape(-1, *logits.shape[2:]).mean(axis=1)).argmax(-1)
      correct += int((pred == labels[i:i + args.batch]).sum())
    acc = 100 * correct / len(clips)
    dense_acc = acc if dense_acc is None else dense_acc
    macs = ev_flops.eventful_macs(model, channels=1)['total'] / 1e6
    rows.append([variant if r < n else 'dense (r = N)', f'{r} ({r / n:.2f} N)', f'{acc:.2f} %',
                 f'{acc - dense_acc:+.2f}', f'{macs:.1f}'])
    print(rows[-1], flush=True)
  body = ('## Eventful Transformer accuracy: Moving Fashion-MNIST, no retraining\n\n'
          f'`python benchmarks/eventful_accuracy.py` at {git_revision()} on '
          f'{device_description()}: the dense canvas ViT (`runs/vit_fashion_mnist_canvas`, '
          f'never trained on clips) on all {len(clips)} test clips of 8 frames; clip prediction '
          '= mean of the per-frame logits; r tokens recomputed per gate and frame (N = '
          f'{n}); MMACs per frame after the first, by `tokensparse.methods.eventful.flops.eventful_macs`.\n\n' +
          table(['variant', 'r', 'clip accuracy', 'vs dense', 'MMACs per frame'], rows))
  write_section('eventful_accuracy', body)


if __name__ == '__main__':
  main()
