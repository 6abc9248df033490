"""The default small ViT fine-tuned on Fashion-MNIST items placed on a 56x56 canvas.

    python train.py --config configs/vit/fashion_mnist_canvas.py --workdir runs/vit_fashion_mnist_canvas

Each 28x28 item sits at a random position on a black 56x56 canvas (cluttered-MNIST style): with
patch 7 that is 64 patch tokens of which about 16-25 hold the item, so dropping tokens can pay.
It starts from the default run's checkpoint (`runs/vit_fashion_mnist`, position embedding
resampled from 4x4 to 8x8) and is the dense teacher of configs/dynamic_vit/fashion_mnist_canvas.py.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  c = configs.from_file('vit/fashion_mnist.py', arg)
  with c.unlocked():
    c.model.image_size = 56
    c.data.canvas_size = 56
    c.data.flip = True
    c.num_epochs = 2
    c.warmup_epochs = 0.1
    c.optimizer.lr = 1e-3
    c.init_from.path = 'runs/vit_fashion_mnist'
  return c
