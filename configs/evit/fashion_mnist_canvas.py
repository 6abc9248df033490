"""EViT fine-tuned from the dense canvas ViT on Fashion-MNIST items on a 56x56 canvas.

    python train.py --config configs/evit/fashion_mnist_canvas.py:keep_rate=0.7 --workdir runs/evit07_fashion_mnist

Off the shelf: `python -m tokensparse.evaluate --workdir runs/vit_fashion_mnist_canvas --method
evit:keep_rate=0.7`. This config fine-tunes for one epoch with the canvas model's recipe. The
reorganising blocks default to the paper's 4th, 7th and 10th of 12 scaled to the 6 blocks
(1, 3, 4); each keeps ceil(keep_rate * n) of its n patch tokens and fuses the rest into one.
Arguments: `keep_rate=R` (default 0.7), `layers=1/3/4`, `runlocal`.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('keep_rate', 'layers', 'runlocal'))
  c = configs.from_file('vit/fashion_mnist_canvas.py', 'runlocal' if 'runlocal' in options else '')
  with c.unlocked():
    configs.use_method(c, 'evit', keep_rate=float(options.get('keep_rate', 0.7)))
    if 'layers' in options:
      c.model.evit.layers = tuple(int(v) for v in options['layers'].split('/'))
    c.init_from.path = 'runs/vit_fashion_mnist_canvas'
    c.num_epochs = 1
  return c.lock()
