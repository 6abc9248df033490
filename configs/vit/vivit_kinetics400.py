"""ViViT-B/16x2, factorised encoder, as the official Eventful code's Kinetics-400 model
(configs/models/vivit_b_kinetics400.yml there), for TPU/GPU users with the data and weights.

    python -m tokensparse.evaluate --workdir runs/vivit_b ...   (after importing, see below)

Model: 32 frames (sampled at temporal stride 2) of 224 px, tubelets 2 x 16 x 16 (16 time steps
of 14 x 14 tokens + cls), a spatial ViT-B (12 blocks, width 768, 12 heads, MLP 3072) and 4
temporal blocks, 400 classes; inputs normalised with mean 0.45 / std 0.225. Weights in the
official code's layout (its scripts/convert/vivit.py output) load with
`inference.load('vivit_b.pth', config=get_config())` or `init_from.path`
(tokensparse.convert recognises the layout). As Eventful (the paper's setting):
`--method eventful:capacity=...`. The official evaluation averages softmax outputs over 3
spatial x 4 temporal views; tokensparse evaluates one centred view. `data.name` must name a
prepared TFDS video dataset (none is built offline here); the speed benchmark
(benchmarks/eventful_vivit.py) uses this model on random clips.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  configs.parse_options(arg, known=())
  c = configs.base()
  c.model.update(variant='B/16', num_classes=400, image_size=224, num_frames=32, tubelet=2,
                 video='factorised', temporal_depth=4)
  c.data.update(name='kinetics400', augment='none', flip=False, mean=(0.45, 0.45, 0.45),
                std=(0.225, 0.225, 0.225))
  c.batch_size = 64
  c.eval_batch_size = 64
  return c.lock()
