"""TokenLearner (8 tokens at half depth) on Fashion-MNIST items placed on a 56x56 canvas.

    python train.py --config configs/token_learner/fashion_mnist_canvas.py --workdir runs/tokenlearner_fashion_mnist

The same task, initialisation and recipe as the dense canvas model (configs/vit/
fashion_mnist_canvas.py: 2 epochs from the default run's checkpoint, lr 1e-3), so the two
differ only in the model: blocks 0-2 see the 64 patch tokens + cls, a TokenLearner v1.1 then
learns 8 tokens, blocks 3-5 see 8 + cls (0.57 of the dense MACs). The learner is new; every
other parameter comes from the 28x28 checkpoint (position embedding resampled to 8x8).

Arguments (comma-separated): `tokens=16`, `at=0.75`, `v1.0` (the paper's conv maps), `fuser`
(TokenFuser after every later block), `gap` (Scenic's mean-token classifier; then the class
token of the checkpoint is skipped and the position embedding starts afresh).
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('tokens', 'at', 'v1.0', 'fuser', 'gap', 'runlocal'))
  c = configs.from_file('vit/fashion_mnist_canvas.py', 'runlocal' if 'runlocal' in options else '')
  with c.unlocked():
    configs.use_method(c, 'token_learner', num_tokens=int(options.get('tokens', 8)),
                       at=float(options.get('at', 0.5)),
                       version='v1.0' if 'v1.0' in options else 'v1.1', reduce='sum',
                       bottleneck=64, fuser='fuser' in options)
    if 'gap' in options:
      c.model.classifier = 'gap'
      c.init_from.skip = ('cls', 'Transformer/posembed_input')
  return c.lock()
