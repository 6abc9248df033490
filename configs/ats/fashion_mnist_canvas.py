"""ATS fine-tuned from the dense canvas ViT on Fashion-MNIST items on a 56x56 canvas.

    python train.py --config configs/ats/fashion_mnist_canvas.py:num_tokens=33 --workdir runs/ats33_fashion_mnist

Off the shelf: `python -m tokensparse.evaluate --workdir runs/vit_fashion_mnist_canvas --method
ats:num_tokens=33`. This config fine-tunes for one epoch with the canvas model's recipe. The
ATS blocks default to the official placement (blocks 3-11 of 12) scaled to the 6 blocks (1-5);
each keeps the class token and at most num_tokens - 1 sampled patch tokens of the 64.
Arguments: `num_tokens=K` (default 33), `layers=1/3/5`, `runlocal`.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('num_tokens', 'layers', 'runlocal'))
  c = configs.from_file('vit/fashion_mnist_canvas.py', 'runlocal' if 'runlocal' in options else '')
  with c.unlocked():
    configs.use_method(c, 'ats', num_tokens=int(options.get('num_tokens', 33)))
    if 'layers' in options:
      c.model.ats.layers = tuple(int(v) for v in options['layers'].split('/'))
    c.init_from.path = 'runs/vit_fashion_mnist_canvas'
    c.num_epochs = 1
  return c.lock()
