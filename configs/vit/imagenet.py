"""DeiT recipe on ImageNet-1k (imagenet2012) for TPU/GPU: DeiT-S/16 by default, or B/16.

    python train.py --config configs/vit/imagenet.py:S/16 --workdir runs/deit_s \
        --config.data.data_dir=/data/tfds
    python train.py --config configs/vit/imagenet.py:B/16 --workdir runs/deit_b ...

The TFDS dataset must be prepared once in array_record format (see README). Recipe of Touvron
et al. 2021: 300 epochs, batch 1024, AdamW lr 5e-4 x batch/512, weight decay 0.05, 5 warm-up
epochs then cosine to 1e-5, stochastic depth 0.1, ImageNet mean/std, 87.5 % centre crop at
evaluation, and DeiT's augmentations (tokensparse.data.augment): bicubic inception crop + flip,
RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0 switched with
probability 0.5, label smoothing 0.1 (in the mixed soft targets), repeated augmentation 3.
Each is a data field: e.g. `--config.data.mixup=0 --config.data.cutmix=0` turns mixing off.
Append `,runlocal` to the argument for a 20-step smoke test of the same model.
"""
from tokensparse import configs


def get_config(arg: str = 'S/16'):
  options = configs.parse_options(arg, known=('runlocal',), variant='S/16')
  variant = options['variant']
  c = configs.base()
  c.model.update(variant=variant, num_classes=1000, image_size=224,
                 droppath=0.1 if variant.startswith(('S', 'B', 'L')) else 0.0)
  c.data.update(name='imagenet2012', train_split='train', eval_split='validation',
                augment='inception_crop', flip=True, eval_crop_fraction=0.875,
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation='bicubic',
                rand_augment='rand-m9-mstd0.5-inc1', random_erase=0.25, mixup=0.8, cutmix=1.0,
                mix_switch_prob=0.5, repeated_aug=3, threads=0)
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.num_epochs = 300
  c.warmup_epochs = 5
  c.label_smoothing = 0.1
  c.optimizer.update(lr=5e-4 * c.batch_size / 512, min_lr=1e-5, weight_decay=0.05,
                     grad_clip_norm=0.0)
  c.log_every_steps = 200
  c.eval_every_steps = 2500
  c.checkpoint_every_steps = 2500
  if 'runlocal' in options:
    c.batch_size = c.eval_batch_size = 16
    c.total_steps = 20
    c.log_every_steps = 5
  return c.lock()
