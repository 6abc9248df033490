"""VTP on Fashion-MNIST: sparsity training from the default model, pruning, fine-tuning.

    python train.py --config configs/vtp/fashion_mnist.py --workdir runs/vtp_sparse_fashion_mnist
    python -m tokensparse.prune --workdir runs/vtp_sparse_fashion_mnist --rate 0.4 --out runs/vtp_pruned40_fashion_mnist
    python train.py --config configs/vtp/fashion_mnist.py:finetune,rate=0.4 --workdir runs/vtp_finetuned40_fashion_mnist

1. Sparsity training (default argument): the default run's model (runs/vit_fashion_mnist) with
   an importance score on every attention inner channel and MLP hidden channel (6 blocks x
   (128 + 256) = 2,304 scores), 2 epochs of CE + 1e-4 * sum |s| at lr 5e-4.
2. `tokensparse.prune` removes the given fraction of channels by one global threshold and writes
   a physically smaller ViT work directory (per-layer widths in its config).
3. `finetune,rate=R` trains that model 2 epochs without the penalty; it reads the per-layer
   widths from runs/vtp_pruned{100R}_fashion_mnist. `continue` instead trains the dense model
   4 more epochs with the same recipe: the baseline with the same extra training.
"""
import ml_collections

from tokensparse import configs


def get_config(arg: str = ''):
  c = configs.from_file('vit/fashion_mnist.py', 'runlocal' if 'runlocal' in arg else '')
  options = configs.parse_options(arg)
  with c.unlocked():
    c.num_epochs = 2
    c.warmup_epochs = 0.1
    c.optimizer.update(lr=5e-4, min_lr=1e-6)
    c.init_from.path = 'runs/vit_fashion_mnist'
    if 'finetune' in options:
      rate = float(options.get('rate', 0.4))
      pruned = f'runs/vtp_pruned{round(100 * rate)}_fashion_mnist'
      from tokensparse.train import checkpoint  # pylint: disable=g-import-not-at-top
      try:
        model = checkpoint.load_config(pruned)['model']
      except FileNotFoundError as e:
        raise FileNotFoundError(
            f'{pruned} has no pruned model; make it with `python -m tokensparse.prune '
            f'--workdir runs/vtp_sparse_fashion_mnist --rate {rate} --out {pruned}`') from e
      c.model.update(name='vit', head_dim=model['head_dim'], mlp_dim=model['mlp_dim'],
                     attn_scale=model['attn_scale'])
      c.init_from.path = pruned
    elif 'continue' in options:
      c.num_epochs = 4
    else:
      c.model.name = 'vtp'
      c.vtp = ml_collections.ConfigDict(dict(l1_weight=float(options.get('l1', 1e-4))))
  return c.lock()
