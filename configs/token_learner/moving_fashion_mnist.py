"""Video classification on Moving Fashion-MNIST clips: a dense ViViT-style model, or with `tl`
the same model with TokenLearner applied per frame.

    python train.py --config configs/token_learner/moving_fashion_mnist.py --workdir runs/video_dense
    python train.py --config configs/token_learner/moving_fashion_mnist.py:tl --workdir runs/video_tokenlearner

Clips: 8 frames of 42x42, one item moving over a black canvas (tokensparse/data/
moving_fashion_mnist.py, built offline on first use). Model: the small Fashion-MNIST ViT
(patch 7: 36 patch tokens per frame, width 128, 6 blocks) with per-frame patch tokens, a
shared spatial position embedding and a temporal embedding, attending over all 8 x 36 tokens
+ cls (ViViT's spatio-temporal model, as Scenic's TokenLearner video models). With `tl`, a
TokenLearner v1.1 before block 3 turns each frame's 36 tokens into 8, so blocks 3-5 see
8 x 8 + 1 tokens. Both start from the dense canvas model (configs/vit/fashion_mnist_canvas.py;
position embedding resampled 8x8 -> 6x6, temporal embedding zero) and train 2 epochs.
Arguments: `tl`, `tokens=16`, `at=0.75`, `fuser`, `runlocal` (a 20-step smoke test).
"""
from tokensparse import configs


def get_config(arg: str = ''):
  c = configs.from_file('vit/fashion_mnist.py')
  options = configs.parse_options(arg, known=('tl', 'tokens', 'at', 'fuser', 'runlocal'))
  with c.unlocked():
    c.model.update(image_size=42, num_frames=8)
    c.data.update(name='moving_fashion_mnist', augment='none', flip=True)
    c.batch_size = 32
    c.eval_batch_size = 250
    c.num_epochs = 2
    c.warmup_epochs = 0.1
    c.optimizer.lr = 1e-3
    c.log_every_steps = 50
    c.checkpoint_every_steps = 200
    c.init_from.path = 'runs/vit_fashion_mnist_canvas'
    if 'tl' in options:
      configs.use_method(c, 'token_learner', num_tokens=int(options.get('tokens', 8)),
                         at=float(options.get('at', 0.5)), version='v1.1', reduce='sum',
                         bottleneck=64, fuser='fuser' in options)
    if 'runlocal' in options:
      c.total_steps = 20
      c.log_every_steps = 5
  return c.lock()
