"""Config defaults shared by every experiment, and validation that names the bad field.

Experiment files in `configs/<method>/<dataset>.py` start from `base()`, set what differs and
return `config.lock()`, so a mistyped field fails instead of silently doing nothing.
"""
from __future__ import annotations

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from tokensparse.models.vit import VARIANTS


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_epochs = 1.0
  c.total_steps = 0          # > 0 overrides num_epochs
  c.warmup_epochs = 0.0
  c.warmup_steps = 0         # > 0 overrides warmup_epochs
  c.label_smoothing = 0.0
  c.log_every_steps = 100
  c.eval_every_steps = 0     # 0: evaluate at the end only
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3

  c.optimizer = ml_collections.ConfigDict(dict(
      name='adamw', lr=1e-3, min_lr=1e-6, b1=0.9, b2=0.999, weight_decay=0.05,
      grad_clip_norm=1.0, momentum=0.9,
      # [(regex over 'a/b/c' parameter paths, lr multiplier[, freeze_steps]), ...]
      lr_groups=[]))

  c.model = ml_collections.ConfigDict(dict(
      name='vit',
      variant=config_dict.placeholder(str),     # 'Ti/16', 'S/16', 'B/16', 'L/16'; or fields:
      num_classes=config_dict.placeholder(int),
      image_size=224,
      patch_size=config_dict.placeholder(int),
      width=config_dict.placeholder(int),
      depth=config_dict.placeholder(int),
      num_heads=config_dict.placeholder(int),
      mlp_dim=config_dict.placeholder(object),   # int, or one int per block
      head_dim=config_dict.placeholder(object),  # default width // num_heads
      attn_scale=config_dict.placeholder(float),
      distilled=False, classifier='token', num_frames=0, dropout=0.0, attn_dropout=0.0, droppath=0.0, dtype='float32'))

  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', source_dir='', train_split='train', eval_split='test',
      augment='crop_flip', crop_padding=4, flip=True, eval_crop_fraction=1.0, to_rgb=False,
      canvas_size=0,  # > 0: place each image at a random position on a zero canvas this big
      mean=(0.5,), std=(0.5,)))

  c.init_from = ml_collections.ConfigDict(dict(path='', skip=()))
  return c


CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def from_file(path: str, arg: str = ''):
  """get_config(arg) of another experiment file, e.g. from_file('vit/fashion_mnist.py'); the
  path is relative to the repository's configs/ folder. Configs build on each other this way."""
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(path)[0].replace('/', '_'), os.path.join(CONFIGS_DIR, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def parse_options(arg: str) -> dict:
  """'tl,tokens=16,at=0.75' -> {'tl': True, 'tokens': '16', 'at': '0.75'}."""
  return dict(a.split('=', 1) if '=' in a else (a, True) for a in (arg or '').split(',') if a)


def _fail(field: str, value, why: str):
  raise ValueError(f'{field}={value!r}: {why}')


def validate(config) -> None:
  """Raise ValueError naming the first field whose value cannot work."""
  m = config.model
  if m.get('variant') is not None:
    name, _, patch = m.variant.partition('/')
    if name not in VARIANTS or not patch.isdigit():
      _fail('model.variant', m.variant, f'expected one of {sorted(VARIANTS)} + "/patch", e.g. "S/16"')
  from tokensparse import models  # pylint: disable=g-import-not-at-top
  kw = models.backbone_kwargs(m)
  for field in ('num_classes', 'image_size', 'patch_size', 'width', 'depth', 'num_heads'):
    if not isinstance(kw[field], int) or kw[field] <= 0:
      _fail(f'model.{field}', kw[field], 'must be a positive integer')
  if kw['image_size'] % kw['patch_size']:
    _fail('model.image_size', kw['image_size'],
          f'not divisible by model.patch_size={kw["patch_size"]}')
  for field in ('mlp_dim', 'head_dim'):
    value = kw.get(field)
    if isinstance(value, (list, tuple)) and len(value) != kw['depth']:
      _fail(f'model.{field}', m[field], f'needs one entry per block (model.depth={kw["depth"]})')
  if kw.get('head_dim') is None and kw['width'] % kw['num_heads']:
    _fail('model.num_heads', kw['num_heads'], f'does not divide model.width={kw["width"]}')
  for field in ('dropout', 'attn_dropout', 'droppath'):
    if not 0.0 <= m.get(field, 0.0) < 1.0:
      _fail(f'model.{field}', m[field], 'must be in [0, 1)')

  if m.get('classifier', 'token') not in ('token', 'gap'):
    _fail('model.classifier', m.classifier, "expected 'token' or 'gap'")
  if m.get('distilled') and m.get('classifier', 'token') != 'token':
    _fail('model.distilled', m.distilled, "a distillation token needs model.classifier='token'")
  if not isinstance(m.get('num_frames', 0), int) or m.get('num_frames', 0) < 0:
    _fail('model.num_frames', m.num_frames, 'must be 0 (images) or the frames per clip')
  if m.get('name') == 'dynamic_vit':
    _validate_dynamic_vit(m, kw)
  if m.get('name') == 'token_learner':
    _validate_token_learner(m, kw)
  if m.get('name') == 'vtp' and not config.get('vtp', {}).get('l1_weight', -1) >= 0:
    _fail('vtp.l1_weight', config.get('vtp', {}).get('l1_weight'),
          'must be set and >= 0 (the paper: 1e-4)')
  if m.get('name') == 'pooled_vit':
    grid = kw['image_size'] // kw['patch_size']
    if grid % 2:
      _fail('model.image_size', kw['image_size'], f'2x2 pooling needs an even patch grid, not {grid}')
    if not 0 <= m.pool_layer < kw['depth']:
      _fail('model.pool_layer', m.pool_layer, f'must be a block index in [0, {kw["depth"] - 1}]')

  if config.batch_size <= 0:
    _fail('batch_size', config.batch_size, 'must be positive')
  if config.get('total_steps', 0) <= 0 and config.num_epochs <= 0:
    _fail('num_epochs', config.num_epochs, 'must be positive (or set total_steps)')
  if not 0.0 <= config.label_smoothing < 1.0:
    _fail('label_smoothing', config.label_smoothing, 'must be in [0, 1)')
  if config.log_every_steps <= 0:
    _fail('log_every_steps', config.log_every_steps, 'must be positive')
  if config.optimizer.lr <= 0:
    _fail('optimizer.lr', config.optimizer.lr, 'must be positive')
  for i, group in enumerate(config.optimizer.get('lr_groups') or []):
    if not 2 <= len(group) <= 3 or not isinstance(group[0], str):
      _fail(f'optimizer.lr_groups[{i}]', group, 'expected (regex, multiplier[, freeze_steps])')

  d = config.data
  if len(d.mean) != len(d.std):
    _fail('data.std', d.std, f'needs as many entries as data.mean={d.mean}')
  if any(s <= 0 for s in d.std):
    _fail('data.std', d.std, 'entries must be positive')


def _validate_dynamic_vit(m, kw) -> None:
  from tokensparse.models.dynamic_vit import keep_counts  # pylint: disable=g-import-not-at-top
  if not 0.0 < m.keep_ratio <= 1.0:
    _fail('model.keep_ratio', m.keep_ratio, 'must be in (0, 1]')
  layers = list(m.prune_layers)
  if not layers or layers != sorted(set(layers)) or layers[0] < 1 or layers[-1] >= kw['depth']:
    _fail('model.prune_layers', tuple(layers),
          f'must be increasing block indices in [1, {kw["depth"] - 1}] (model.depth={kw["depth"]})')
  n = (kw['image_size'] // kw['patch_size']) ** 2
  counts = keep_counts(n, m.keep_ratio, len(layers))
  if min(counts) < 1:
    _fail('model.keep_ratio', m.keep_ratio,
          f'keeps {counts} of {n} patch tokens; every stage must keep at least one')


def _validate_token_learner(m, kw) -> None:
  from tokensparse.models import learner_layer  # pylint: disable=g-import-not-at-top
  tl = m.token_learner
  if not 0.0 < tl.at < 1.0:
    _fail('model.token_learner.at', tl.at, 'must be a fraction of the depth in (0, 1)')
  layer = learner_layer(tl.at, kw['depth'])
  if not 0 < layer < kw['depth']:
    _fail('model.token_learner.at', tl.at,
          f'puts the learner before block {layer}; needs 1..{kw["depth"] - 1} '
          f'(model.depth={kw["depth"]})')
  n = (kw['image_size'] // kw['patch_size']) ** 2
  if not isinstance(tl.num_tokens, int) or not 0 < tl.num_tokens <= n:
    _fail('model.token_learner.num_tokens', tl.num_tokens,
          f'must be a positive integer no larger than the {n} patch positions per image')
  if tl.get('version', 'v1.1') not in ('v1.0', 'v1.1'):
    _fail('model.token_learner.version', tl.version, "expected 'v1.0' or 'v1.1'")
  if tl.get('reduce', 'sum') not in ('sum', 'mean'):
    _fail('model.token_learner.reduce', tl.reduce, "expected 'sum' or 'mean'")
