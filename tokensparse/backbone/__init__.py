"""The one backbone: ViT / DeiT (vit.py) built from shared layers (layers.py).

`backbone_kwargs(model_config)` turns the backbone fields of a config (`variant` or width/
depth/..., patch_size, image_size, num_classes, classifier, num_frames, ...) into ViT keyword
arguments; every method model takes these plus its own fields. `validate(model_config)` names
the first backbone field that cannot work. Nothing here knows about any method.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from tokensparse.backbone.vit import VARIANTS, ViT, check_head, parse_variant, per_layer  # noqa: F401
from tokensparse.fields import fail

# The config fields of the backbone are the ViT module's own (dtype arrives as a name).
FIELDS = tuple(f.name for f in dataclasses.fields(ViT) if f.name not in ('parent', 'name', 'dtype'))
REQUIRED = ('num_classes', 'image_size', 'patch_size', 'width', 'depth', 'num_heads', 'mlp_dim')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def backbone_kwargs(model_config: Any) -> dict[str, Any]:
  """ViT keyword arguments from a model config: the variant first, explicit fields override."""
  cfg = dict(model_config)
  kwargs = parse_variant(cfg['variant']) if cfg.get('variant') else {}
  for name in FIELDS:
    if cfg.get(name) is not None:
      kwargs[name] = cfg[name]
  for name in ('mlp_dim', 'head_dim', 'global_blocks'):  # per-layer lists from configs
    if isinstance(kwargs.get(name), list):
      kwargs[name] = tuple(kwargs[name])
  dtype = cfg.get('dtype', 'float32')
  if dtype not in DTYPES:
    raise ValueError(f'model.dtype={dtype!r}: expected one of {sorted(DTYPES)}')
  kwargs['dtype'] = DTYPES[dtype]
  missing = [f for f in REQUIRED if f not in kwargs]
  if missing:
    raise ValueError(f'model config lacks {", ".join("model." + m for m in missing)} '
                     '(set model.variant, e.g. "S/16", or the fields themselves)')
  return kwargs


def num_patches(kw: dict[str, Any]) -> int:
  """Patch tokens per image (per frame) of backbone kwargs."""
  return (kw['image_size'] // kw['patch_size']) ** 2


def num_prefix(kw: dict[str, Any]) -> int:
  """Tokens before the patches: the class token (none with classifier='gap') + distillation."""
  return (kw.get('classifier', 'token') == 'token') + int(bool(kw.get('distilled')))


def dummy_input(model_config: Any, channels: int = 3) -> np.ndarray:
  """A zero input of batch 1 in the shape the model takes: [1, H, W, C], or [1, T, H, W, C]
  for a video model (`model.num_frames = T`)."""
  size, frames = model_config.get('image_size'), model_config.get('num_frames') or 0
  return np.zeros((1,) + ((frames,) if frames else ()) + (size, size, channels), np.float32)


def validate(m: Any) -> dict[str, Any]:
  """Raise ValueError naming the first backbone field of `m` (config.model) that cannot work;
  return the backbone kwargs."""
  kw = backbone_kwargs(m)  # names a bad model.variant or model.dtype
  for field in ('num_classes', 'image_size', 'patch_size', 'width', 'depth', 'num_heads'):
    if not isinstance(kw[field], int) or kw[field] <= 0:
      fail(f'model.{field}', kw[field], 'must be a positive integer')
  if kw['image_size'] % kw['patch_size']:
    fail('model.image_size', kw['image_size'],
          f'not divisible by model.patch_size={kw["patch_size"]}')
  for field in ('mlp_dim', 'head_dim'):
    value = kw.get(field)
    if isinstance(value, (list, tuple)) and len(value) != kw['depth']:
      fail(f'model.{field}', m[field], f'needs one entry per block (model.depth={kw["depth"]})')
  if kw.get('head_dim') is None and kw['width'] % kw['num_heads']:
    fail('model.num_heads', kw['num_heads'], f'does not divide model.width={kw["width"]}')
  for field in ('dropout', 'attn_dropout', 'droppath'):
    if not 0.0 <= m.get(field, 0.0) < 1.0:
      fail(f'model.{field}', m[field], 'must be in [0, 1)')
  check_head(m.get('classifier', 'token'), m.get('distilled', False))
  frames = m.get('num_frames', 0)
  if not isinstance(frames, int) or frames < 0:
    fail('model.num_frames', frames, 'must be 0 (images) or the frames per clip')
  video, tubelet = m.get('video', 'joint'), m.get('tubelet', 1)
  temporal = m.get('temporal_depth', 0)
  if video not in ('joint', 'factorised', 'frames'):
    fail('model.video', video, "expected 'joint', 'factorised' or 'frames'")
  if not isinstance(temporal, int) or temporal < 0:
    fail('model.temporal_depth', temporal, 'must be a non-negative number of blocks')
  if not isinstance(tubelet, int) or tubelet < 1:
    fail('model.tubelet', tubelet, 'must be a positive number of frames')
  if video == 'factorised' and temporal < 1:
    fail('model.temporal_depth', temporal, "model.video='factorised' needs temporal blocks")
  if video != 'factorised' and temporal:
    fail('model.temporal_depth', temporal, f"temporal blocks need model.video='factorised', "
         f'not {video!r}')
  if video == 'joint' and tubelet != 1:
    fail('model.tubelet', tubelet, "tubelets need model.video='factorised' or 'frames'")
  if video != 'joint':
    if not frames:
      fail('model.video', video, 'a video model needs model.num_frames (frames per clip)')
    if frames % tubelet:
      fail('model.num_frames', frames, f'not divisible by model.tubelet={tubelet}')
    if m.get('distilled'):
      fail('model.distilled', True, f'model.video={video!r} has no distillation token')
  check_vitdet(kw)
  return kw


def check_vitdet(kw: dict[str, Any]) -> None:
  """Raise ValueError naming the first ViTDet option (windows, relative positions, resized
  absolute positions) of backbone kwargs `kw` that cannot work."""
  window, rel = kw.get('window_size', 0), kw.get('rel_pos', False)
  if not isinstance(window, int) or window < 0:
    fail('model.window_size', window, 'must be 0 (global attention) or a window side in tokens')
  bad = [b for b in kw.get('global_blocks', ()) if not 0 <= b < kw['depth']]
  if bad:
    fail('model.global_blocks', list(kw['global_blocks']),
         f'block {bad[0]} is not in [0, model.depth={kw["depth"]})')
  if kw.get('rel_pos_resize', 'linear') not in ('linear', 'bicubic'):
    fail('model.rel_pos_resize', kw['rel_pos_resize'],
         "expected 'linear' (detectron2's resize) or 'bicubic' (the whole-matrix resize)")
  for field in ('rel_pos_size', 'posemb_grid'):
    if not isinstance(kw.get(field, 0), int) or kw.get(field, 0) < 0:
      fail(f'model.{field}', kw[field], 'must be 0 (the token grid) or a size in tokens')
  if (window or rel) and num_prefix(kw):
    fail('model.classifier', kw.get('classifier', 'token'),
         "windows and relative positions need a model without prefix tokens "
         "(model.classifier='gap', as ViTDet)")
  if (window or rel) and kw.get('num_frames') and kw.get('video', 'joint') == 'joint':
    fail('model.window_size' if window else 'model.rel_pos', window or rel,
         "needs images, or clips with model.video='factorised' or 'frames'")
