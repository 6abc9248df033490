"""VTP on Fashion-MNIST: sparsity training from the default model, pruning, fine-tuning.

    python train.py --config configs/vtp/fashion_mnist.py --workdir runs/vtp_sparse_fashion_mnist
    python -m tokensparse.methods.vtp.prune --workdir runs/vtp_sparse_fashion_mnist --rate 0.4 --out runs/vtp_pruned40_fashion_mnist
    python train.py --config configs/vtp/fashion_mnist.py:finetune,rate=0.4 --workdir runs/vtp_finetuned40_fashion_mnist

1. Sparsity training (default argument): the default run's model (runs/vit_fashion_mnist) with
   an importance score on every attention inner channel and MLP hidden channel (6 blocks x
   (128 + 256) = 2,304 scores), 2 epochs of CE + 1e-4 * sum |s| at lr 5e-4.
2. `tokensparse.methods.vtp.prune` removes the given fraction of channels by one global threshold and writes
   a physically smaller ViT work directory (per-layer widths in its config).
3. `finetune,rate=R` trains that model 2 epochs without the penalty; it reads the per-layer
   widths from runs/vtp_pruned{100R}_fashion_mnist. `continue` instead trains the dense model
   4 more epochs with the same recipe: the baseline with the same extra training.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('finetune', 'rate', 'continue', 'l1', 'runlocal'))
  c = configs.from_file('vit/fashion_mnist.py', 'runlocal' if 'runlocal' in options else '')
  with c.unlocked():
    c.num_epochs = 2
    c.warmup_epochs = 0.1
    c.optimizer.update(lr=5e-4, min_lr=1e-6)
    c.init_from.path = 'runs/vit_fashion_mnist'
    if 'finetune' in options:
      rate = float(options.get('rate', 0.4))
      # The pruned model's per-layer widths come from its work directory (made by
      # `python -m tokensparse.methods.vtp.prune ... --out runs/vtp_pruned40_fashion_mnist`).
      c.model.name = 'vit'
      c.init_from.path = f'runs/vtp_pruned{round(100 * rate)}_fashion_mnist'
      c.init_from.model_fields = ('head_dim', 'mlp_dim', 'attn_scale')
    elif 'continue' in options:
      c.num_epochs = 4
    else:
      configs.use_method(c, 'vtp')
      c.loss.vtp.l1_weight = float(options.get('l1', 1e-4))
  return c.lock()
