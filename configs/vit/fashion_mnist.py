"""A small ViT on Fashion-MNIST: the embedded default, about 10 minutes on a 2-core CPU.

    python train.py --config configs/vit/fashion_mnist.py --workdir runs/vit_fashion_mnist

Patch 4 on 28x28 images gives 49 tokens + cls; width 96, 4 blocks, 4 heads (190k parameters).
The `runlocal` variant (`--config configs/vit/fashion_mnist.py:runlocal`) runs 50 steps as a
smoke test.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  c = configs.base()
  c.model.update(num_classes=10, image_size=28, patch_size=4, width=96, depth=4, num_heads=4,
                 mlp_dim=192)
  c.data.update(name='fashion_mnist', augment='crop_flip', crop_padding=2, flip=True,
                mean=(0.2860,), std=(0.3530,))
  c.batch_size = 128
  c.num_epochs = 4
  c.warmup_epochs = 0.2
  c.label_smoothing = 0.1
  c.optimizer.update(lr=2e-3, min_lr=1e-5, weight_decay=0.05)
  c.log_every_steps = 100
  c.checkpoint_every_steps = 250
  if 'runlocal' in arg:
    c.total_steps = 50
    c.log_every_steps = 10
    c.checkpoint_every_steps = 25
  return c.lock()
