"""DynamicViT/0.7 on DeiT-S, ImageNet-1k: the paper's recipe, for TPU/GPU users.

    python train.py --config configs/dynamicvit/deit_s_imagenet.py --workdir runs/dynamicvit_deit_s \
        --config.init_from.path=/ckpt/deit_small_patch16_224-cd65a155.pth \
        --config.data.data_dir=/data/tfds

Fine-tunes a dense DeiT-S checkpoint, which is also the frozen teacher: 30 epochs, AdamW lr 1e-3
at batch 1024, weight decay 0.05, 5 warm-up epochs then cosine to 1e-6; predictors at the full
learning rate, backbone at 0.01x and frozen during warm-up, class token and position embedding
frozen; loss = CE + 2.0 ratio + 0.5 KL + 0.5 token MSE (DeiT-B: ratio weight 5.0, via
`--config.dynamic_vit.ratio_weight=5.0 --config.model.variant=B/16`).
To evaluate or fine-tune an official DynamicViT checkpoint instead, point init_from.path at it and
pass `--config.init_from.skip='()'` so the predictors load too.
"""
import ml_collections

from tokensparse import configs


def get_config(arg: str = ''):
  c = configs.base()
  c.model.update(name='dynamic_vit', variant='S/16', num_classes=1000, image_size=224)
  c.model.keep_ratio = 0.7
  c.model.prune_layers = (3, 6, 9)
  c.model.gumbel_noise = True
  c.dynamic_vit = ml_collections.ConfigDict(dict(ratio_weight=2.0, distill_weight=0.5,
                                                 token_weight=0.5))
  c.data.update(name='imagenet2012', train_split='train', eval_split='validation',
                augment='inception_crop', flip=True, eval_crop_fraction=0.875,
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
  c.init_from.update(path='', skip=('predictor_',))
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.num_epochs = 30
  c.warmup_epochs = 5
  c.label_smoothing = 0.1
  c.optimizer.update(lr=1e-3, min_lr=1e-6, weight_decay=0.05, grad_clip_norm=0.0)
  c.optimizer.lr_groups = [('^predictor_', 1.0), ('^cls$|pos_embedding', 0.0),
                           ('.*', 0.01, 'warmup')]
  c.log_every_steps = 200
  c.eval_every_steps = 2500
  c.checkpoint_every_steps = 2500
  if 'runlocal' in arg:
    c.batch_size = c.eval_batch_size = 16
    c.total_steps = 20
  return c.lock()
