"""ViTDet-style detector on Fashion-MNIST Detection Clips (96 x 96 frames, 10 classes), trained
dense from scratch on single frames in about 30 minutes on a 2-core CPU:

    python train.py --config configs/vitdet/fashion_mnist_detection.py --workdir runs/vitdet

The backbone has ViTDet's structure at a small size: patch 8 (a 12 x 12 token grid), width 128,
6 blocks, windowed attention (4 x 4 windows) in blocks 0, 1, 3, 4 and global attention in 2, 5,
decomposed relative positions, no class token; the pyramid keeps scales 2, 1, 0.5 (strides 4,
8, 16) at 64 channels. `:tiny` is the test-sized variant (48 px frames, a few steps).
"""
import ml_collections


def get_config(arg: str = ''):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist_detection', config='default', data_dir='', source_dir='',
      mean=0.2, std=0.3, eval_clips=50, flip=True))
  c.model = ml_collections.ConfigDict(dict(
      num_classes=10, image_size=96, patch_size=8, width=128, depth=6, num_heads=4,
      mlp_dim=512, classifier='gap', window_size=4, global_blocks=[2, 5], rel_pos=True,
      dtype='float32'))
  c.detector = ml_collections.ConfigDict(dict(
      scale_factors=[2.0, 1.0, 0.5], out_channels=64, head_convs=2, size_base=4.0,
      center_radius=1.5, score_threshold=0.05, nms_iou=0.6, max_candidates=100,
      max_detections=50))
  c.eventful = ml_collections.ConfigDict(dict(capacity=36, variant='full', threshold=None))
  c.eventful.threshold = ml_collections.config_dict.placeholder(float)
  c.batch_size = 32
  c.num_steps = 2400
  c.warmup_steps = 100
  c.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', lr=1e-3, min_lr=1e-5, b1=0.9, b2=0.999, weight_decay=0.05,
      grad_clip_norm=1.0))
  c.log_every_steps = 50
  c.eval_every_steps = 800
  c.checkpoint_every_steps = 300
  if arg == 'tiny':
    c.data.config = 'tiny'
    c.data.eval_clips = 4
    c.model.update(image_size=48, width=32, depth=3, num_heads=2, mlp_dim=64, global_blocks=[2])
    c.detector.update(out_channels=16)
    c.eventful.capacity = 9
    c.batch_size = 4
    c.num_steps = 6
    c.warmup_steps = 2
    c.log_every_steps = 3
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 3
  elif arg:
    raise ValueError(f"config argument {arg!r}: expected '' or 'tiny'")
  return c
