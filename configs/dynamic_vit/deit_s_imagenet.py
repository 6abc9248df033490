"""DynamicViT/0.7 on DeiT-S, ImageNet-1k: the paper's recipe, for TPU/GPU users.

    python train.py --config configs/dynamic_vit/deit_s_imagenet.py --workdir runs/dynamicvit_deit_s \
        --config.init_from.path=/ckpt/deit_small_patch16_224-cd65a155.pth \
        --config.data.data_dir=/data/tfds

Fine-tunes a dense DeiT-S checkpoint, which is also the frozen teacher, on the data pipeline of
configs/vit/imagenet.py (DeiT's augmentations, inherited: RandAugment, random erasing,
Mixup/CutMix, label smoothing, repeated augmentation): 30 epochs, AdamW lr 1e-3 at batch 1024, weight decay 0.05, 5 warm-up
epochs then cosine to 1e-6; predictors at the full learning rate, backbone at 0.01x and frozen
during warm-up, class token and position embedding frozen; loss = CE + 2.0 ratio + 0.5 KL +
0.5 token MSE (DeiT-B: `--config.model.variant=B/16 --config.loss.dynamic_vit.ratio_weight=5.0`).
To evaluate or fine-tune an official DynamicViT checkpoint instead, point init_from.path at it
and pass `--config.init_from.skip='()'` so the predictors load too.
"""
from tokensparse import configs


def get_config(arg: str = ''):
  options = configs.parse_options(arg, known=('runlocal',))
  c = configs.from_file('vit/imagenet.py', 'S/16' + (',runlocal' if 'runlocal' in options else ''))
  with c.unlocked():
    configs.use_method(c, 'dynamic_vit', keep_ratio=0.7, prune_layers=(3, 6, 9),
                       gumbel_noise=True)
    c.model.droppath = 0.0
    c.loss.dynamic_vit.update(ratio_weight=2.0, distill_weight=0.5, token_weight=0.5)
    c.init_from.skip = ('predictor_',)
    if 'runlocal' not in options:
      c.num_epochs = 30
    c.optimizer.update(lr=1e-3, min_lr=1e-6)
    c.optimizer.lr_groups = [('^predictor_', 1.0), ('^cls$|pos_embedding', 0.0),
                             ('.*', 0.01, 'warmup')]
  return c.lock()
