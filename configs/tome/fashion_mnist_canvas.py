"""ToMe fine-tuned from the dense canvas ViT on Fashion-MNIST items on a 56x56 canvas.

    python train.py --config configs/tome/fashion_mnist_canvas.py:r=6 --workdir runs/tome6_fashion_mnist

ToMe needs no training: `python -m tokensparse.evaluate --workdir runs/vit_fashion_mnist_canvas
--method tome:r=6` measures it off the shelf. This config fine-tunes the merged model for one
epoch with the canvas model's recipe (AdamW, lr 1e-3 -> cosine, warm-up 0.1 epoch): 65 tokens
enter block 0, r are merged in each of the 6 blocks (r <= 10 fits: the last block still has
enough tokens). Arguments: `r=N` (default 6), `inflect=-0.5` (ToMe's decreasing schedule),
`runlocal`.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('r', 'inflect', 'runlocal'))
  c = configs.from_file('vit/fashion_mnist_canvas.py', 'runlocal' if 'runlocal' in options else '')
  with c.unlocked():
    configs.use_method(c, 'tome', r=int(options.get('r', 6)),
                       inflect=float(options.get('inflect', 0.0)))
    c.init_from.path = 'runs/vit_fashion_mnist_canvas'
    c.num_epochs = 1
  return c.lock()
