"""A factorised ViViT (the Eventful paper's video model, small) on Fashion-MNIST actions.

    python train.py --config configs/vit/fashion_mnist_actions.py --workdir runs/vivit_actions
    python train.py --config configs/vit/fashion_mnist_actions.py:frames --workdir runs/frames_actions

Clips: 16 frames of 42x42, one item moving; the label is how it moves (left, right, up, down,
enters, leaves: time-reversed pairs, tokensparse/data/fashion_mnist_actions.py). Model: the
canvas ViT as the spatial encoder (patch 7, width 128, 6 blocks, 4 heads) on tubelets of
2 x 7 x 7 (8 time steps of 36 tokens + cls), then 2 temporal blocks over the steps' class
tokens (the 12 : 4 of ViViT-B, scaled). It starts from the canvas model
(configs/vit/fashion_mnist_canvas.py): its patch kernel in the middle frame of each tubelet
(ViViT's central-frame initialisation), its position embedding resampled 8x8 -> 6x6, its head
left out (6 classes here, not 10); the temporal encoder starts fresh. No flips: a mirrored clip
of 'left' is 'right'.

`frames`: the per-frame baseline on the same data and recipe: the spatial encoder on every
frame alone (tubelet 1), the head on each, logits averaged (model.video='frames'); it cannot
see the order of the frames. `runlocal`: a 10-step smoke test.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('frames', 'runlocal'))
  c = configs.from_file('vit/fashion_mnist.py')
  with c.unlocked():
    c.model.update(num_classes=6, image_size=42, num_frames=16)
    if 'frames' in options:
      c.model.update(video='frames', tubelet=1, temporal_depth=0)
    else:
      c.model.update(video='factorised', tubelet=2, temporal_depth=2)
    c.data.update(name='fashion_mnist_actions', augment='none', flip=False)
    c.batch_size = 32
    c.eval_batch_size = 100
    c.num_epochs = 4
    c.warmup_epochs = 0.2
    c.label_smoothing = 0.0
    c.optimizer.update(lr=1e-3, min_lr=1e-5, weight_decay=0.05)
    c.log_every_steps = 50
    c.checkpoint_every_steps = 200
    c.init_from.path = 'runs/vit_fashion_mnist_canvas'
    c.init_from.skip = ('head',)
    if 'runlocal' in options:
      c.total_steps = 10
      c.log_every_steps = 5
  return c.lock()
