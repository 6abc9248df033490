"""TokenLearner ViT-B/16 on ImageNet-1k (imagenet2012) for TPU/GPU, with Scenic's recipe.

    python train.py --config configs/token_learner/imagenet.py --workdir runs/tl_b16 \
        --config.data.data_dir=/data/tfds
    python train.py --config configs/token_learner/imagenet.py:S/16,tokens=16,at=0.75 ...

Model (Ryoo et al. 2021; Scenic's `im1k_token_learner_config`): ViT-B/16 with the mean-token
classifier (no class token), TokenLearner v1.1 with 8 tokens before block 6 (0.5 depth: 9.15 vs
17.56 GMACs at 224 px; Scenic's default is 16 tokens at 0.75 -> `tokens=16,at=0.75`),
stochastic depth 0.1, no dropout. Recipe of that config: 90 epochs, batch 4096, Adam with
decoupled weight decay 0.3, base lr 5e-3 (as shipped), 10k warm-up steps, global-norm clipping
1.0, inception crop + flip. Differences, stated: cosine decay to 1e-5 instead of linear, and a
softmax cross-entropy where Scenic trains with a sigmoid (multi-label) loss.
Append `runlocal` for a 20-step smoke test of the same model.
"""
from tokensparse import configs


def get_config(arg: str = 'B/16'):
  options = configs.parse_options(arg, known=('tokens', 'at', 'fuser', 'runlocal'), variant='B/16')
  c = configs.from_file('vit/imagenet.py', options['variant'])   # data pipeline, eval, logging
  with c.unlocked():
    configs.use_method(c, 'token_learner', num_tokens=int(options.get('tokens', 8)),
                       at=float(options.get('at', 0.5)), version='v1.1', reduce='sum',
                       bottleneck=64, fuser='fuser' in options)
    c.model.update(classifier='gap', droppath=0.1)
    c.data.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    c.batch_size = 4096
    c.num_epochs = 90
    c.warmup_steps = 10_000
    c.label_smoothing = 0.0
    c.optimizer.update(name='adamw', lr=5e-3, min_lr=1e-5, b1=0.9, b2=0.999, weight_decay=0.3,
                       grad_clip_norm=1.0)
    if 'runlocal' in options:
      c.batch_size = c.eval_batch_size = 16
      c.total_steps = 20
      c.warmup_steps = 2
      c.log_every_steps = 5
  return c.lock()
