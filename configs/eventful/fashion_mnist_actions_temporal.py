"""Temporal-only fine-tuning of the Eventful ViViT on Fashion-MNIST actions (the paper's recipe).

    python -m tokensparse.methods.eventful.temporal \
        --config configs/eventful/fashion_mnist_actions_temporal.py:capacity=12 \
        --workdir runs/vivit_actions_r12

Starts from the dense ViViT of configs/vit/fashion_mnist_actions.py (runs/vivit_actions), runs
its spatial encoder as an Eventful Transformer over every clip once (the policy: `capacity=R`
tokens recomputed per gate and step, `variant=...`, `threshold=H`), caches the step features,
then trains only the temporal encoder and head on them: 10 epochs, AdamW lr 3e-4 with a short
warm-up, batch 64. Arguments: capacity, variant, threshold, epochs.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('capacity', 'variant', 'threshold', 'epochs'))
  c = configs.from_file('vit/fashion_mnist_actions.py')
  with c.unlocked():
    configs.use_method(c, 'eventful', capacity=int(options.get('capacity', 12)),
                       variant=options.get('variant', 'full'))
    if 'threshold' in options:
      c.model.eventful.threshold = float(options['threshold'])
    c.init_from.path = 'runs/vivit_actions'
    c.init_from.skip = ()
    c.batch_size = 64
    c.num_epochs = float(options.get('epochs', 10))
    c.warmup_epochs = 0.5
    c.optimizer.update(lr=3e-4, min_lr=1e-6, weight_decay=0.05)
  return c.lock()
