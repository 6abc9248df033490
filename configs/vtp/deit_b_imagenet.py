"""VTP on DeiT-B/16, ImageNet-1k (imagenet2012), for TPU/GPU.

    # 1. sparsity training from the official DeiT-B weights
    python train.py --config configs/vtp/deit_b_imagenet.py --workdir runs/vtp_deit_b_sparse \
        --config.init_from.path=deit_base_patch16_224-b5f2ef4d.pth --config.data.data_dir=/data/tfds
    # 2. prune 40 % of the channels
    python -m tokensparse.methods.vtp.prune --workdir runs/vtp_deit_b_sparse --rate 0.4 --out runs/vtp_deit_b_pruned40
    # 3. fine-tune the pruned model
    python train.py --config configs/vtp/deit_b_imagenet.py:finetune,pruned=runs/vtp_deit_b_pruned40 \
        --workdir runs/vtp_deit_b_finetuned40 --config.data.data_dir=/data/tfds

DeiT's recipe (configs/vit/imagenet.py:B/16: AdamW, batch 1024, stochastic depth 0.1, and DeiT's
augmentations: bicubic inception crop + flip, RandAugment rand-m9-mstd0.5-inc1, random erasing
0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, repeated augmentation 3) with lambda = 1e-4 on the scores during sparsity training and
no penalty during fine-tuning. The epoch counts (30 + 30) and the fine-tuning lr (1e-4) are this
config's choice: the reference notes give the method, not the schedule. Paper: 20 % pruned
-0.5 points, 40 % pruned 81.8 -> 80.7 % (86.4 -> 48.0 M parameters, 17.6 -> 10.0 GFLOPs).
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('finetune', 'pruned', 'runlocal'))
  c = configs.from_file('vit/imagenet.py', 'B/16,runlocal' if 'runlocal' in options else 'B/16')
  with c.unlocked():
    c.num_epochs = 30
    c.warmup_epochs = 1
    if 'finetune' in options:
      if 'pruned' not in options:
        raise ValueError('finetune needs pruned=<work directory written by tokensparse.prune>')
      c.model.name = 'vit'
      c.init_from.path = options['pruned']
      c.init_from.model_fields = ('head_dim', 'mlp_dim', 'attn_scale')  # the pruned widths
      c.optimizer.lr = 1e-4
    else:
      configs.use_method(c, 'vtp')
      c.loss.vtp.l1_weight = 1e-4
  return c.lock()
