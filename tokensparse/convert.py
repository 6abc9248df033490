"""Import of pretrained ViT/DeiT checkpoints into tokensparse Flax parameters.

Formats:
  * timm / DeiT state dicts: `.pth`/`.pt`/`.bin` (PyTorch zip pickles, read here without
    PyTorch; DeiT's `{'model': ...}` wrapper is unwrapped) and `.safetensors`;
  * the official Eventful Transformer code's factorised ViViT (`spatial_model.*`,
    `temporal_model.*`, `embedding.conv`, `classifier`), recognised by its names;
  * vit_jax / AugReg `.npz` (names already match this library's scheme).

Public entry points: `from_timm(state_dict, config)`, `from_vit_jax(arrays, config)` and
`load_checkpoint(path, config)`. Each returns `(params, info)` where `info` reports the format
and the input normalisation (mean/std) that the checkpoint expects. Any difference between the
checkpoint and the model built from `config` raises `CheckpointMismatch` listing every missing
key, unexpected key and shape mismatch at once.
"""
from __future__ import annotations

import pickle
import zipfile
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import traverse_util

from tokensparse import functional as F
from tokensparse import backbone, methods

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
VIVIT_MEAN, VIVIT_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)  # the Eventful ViViT configs


# The temporal embedding of a video model (model.num_frames > 0): zero, so an image checkpoint
# starts as the same model on every frame.
OPTIONAL = (('temporal_embedding',),)


class CheckpointMismatch(ValueError):
  """The checkpoint does not fit the configured model; the message lists every difference."""


# ----------------------------------------------------------------------------- torch reader
class _Stub:
  """Stands in for any pickled class that is not a tensor (argparse.Namespace, optimizers...)."""

  def __init__(self, *args, **kwargs):
    self.args = args

  def __setstate__(self, state):
    self.state = state

  def __call__(self, *args, **kwargs):
    return _Stub(*args)


_TORCH_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': 'bfloat16', 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


def _rebuild_tensor(storage, offset, size, stride, *unused):
  if not size:
    return storage[offset].copy()
  itemsize = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=[s * itemsize for s in stride]).copy()


def _rebuild_parameter(data, *unused):
  return data


def read_torch(path: str) -> dict[str, Any]:
  """Load a PyTorch zip checkpoint (torch >= 1.6 `torch.save`) as numpy arrays, without torch.

  Only tensors are materialised; other pickled objects become inert stubs, so no code from
  the file is executed.
  """
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path}: not a PyTorch zip checkpoint (saved by torch < 1.6?); '
                     're-save it with a current torch.save or convert it to .safetensors')
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = next(n for n in names if n.endswith('data.pkl'))
    root = pkl[:-len('data.pkl')]

    def load_storage(kind, key, numel):
      dtype = _TORCH_DTYPES.get(kind)
      if dtype is None:
        raise ValueError(f'{path}: unsupported tensor storage {kind}')
      if dtype == 'bfloat16':
        import ml_dtypes  # pylint: disable=g-import-not-at-top
        dtype = ml_dtypes.bfloat16
      return np.frombuffer(zf.read(f'{root}data/{key}'), dtype=dtype)

    class Unpickler(pickle.Unpickler):

      def find_class(self, module, name):
        if module == 'collections' and name == 'OrderedDict':
          return dict
        if module == 'torch._utils' and name in ('_rebuild_tensor_v2', '_rebuild_tensor'):
          return _rebuild_tensor
        if module == 'torch._utils' and name == '_rebuild_parameter':
          return _rebuild_parameter
        if module == 'torch' and name in _TORCH_DTYPES:
          return name
        return _Stub

      def persistent_load(self, pid):
        _, kind, key, _, numel = pid
        kind = kind if isinstance(kind, str) else getattr(kind, '__name__', str(kind))
        return load_storage(kind, key, numel)

    with zf.open(pkl) as f:
      return Unpickler(f).load()


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A flat {name: array} state dict from .pth/.pt/.bin or .safetensors, unwrapped."""
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    sd = load_file(path)
  else:
    sd = read_torch(path)
  for wrapper in ('model', 'state_dict', 'model_ema'):
    if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
      sd = sd[wrapper]
      break
  if not isinstance(sd, dict):
    raise ValueError(f'{path}: expected a state dict, found {type(sd).__name__}')
  return {k.removeprefix('module.'): v for k, v in sd.items() if isinstance(v, np.ndarray)}


def _to_numpy(v) -> np.ndarray:
  """numpy view of an array or torch tensor (bf16/fp16 widened to float32)."""
  if hasattr(v, 'detach'):  # a torch tensor handed over directly
    v = v.detach().float().numpy() if v.is_floating_point() else v.numpy()
  v = np.asarray(v)
  return v.astype(np.float32) if v.dtype.kind in 'fV' else v


# ----------------------------------------------------------------------------- mapping
def _template(model_config) -> tuple[Any, dict[tuple[str, ...], tuple[int, ...]]]:
  module = methods.build(model_config)
  shapes = jax.eval_shape(module.init, jax.random.key(0), backbone.dummy_input(model_config, 3))
  flat = traverse_util.flatten_dict(shapes['params'])
  return module, {k: tuple(v.shape) for k, v in flat.items()}


def _model_config(config):
  return config.model if hasattr(config, 'model') else config


def _assemble(source: Mapping[str, np.ndarray],
              rules: list[tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]],
              config, fmt: str, norm: tuple, skip: tuple[str, ...],
              target: tuple[Any, dict] | None = None,
              ignore: tuple[str, ...] = ()) -> tuple[dict, dict]:
  """Apply (source key, flax path, transform) rules, check against the model, return params.

  `skip` lists flax path prefixes (e.g. 'head') left out of the import: the caller keeps
  fresh values for them (new class count when fine-tuning). `target` = (backbone module,
  {path: shape}) replaces the model built from `config`; source keys starting with one of
  `ignore` are left out without complaint (a detector's own head).
  """
  module, template = target or _template(_model_config(config))
  skipped = lambda path: any('/'.join(path).startswith(s) for s in skip)
  params, used, mismatched, problems = {}, set(), set(), []
  for src, dst, fn in rules:
    if src not in source:
      continue
    used.add(src)
    if dst not in template or skipped(dst):
      continue
    value = np.asarray(fn(source[src]), np.float32)
    if target is None and dst == ('Transformer', 'posembed_input', 'pos_embedding') and \
        value.shape != template[dst] and value.shape[-1] == template[dst][-1]:
      value = np.asarray(F.resample_posemb(value, module.num_prefix, module.grid))
    if dst == ('embedding', 'kernel') and value.ndim + 1 == len(template[dst]):
      value = np.asarray(F.inflate_kernel(value, template[dst][0]))   # image -> tubelet
    if value.shape != template[dst]:
      problems.append(f'shape mismatch {src} -> {"/".join(dst)}: checkpoint '
                      f'{value.shape}, model {template[dst]}')
      mismatched.add(dst)
      continue
    params[dst] = value
  for key in OPTIONAL:  # parameters image checkpoints cannot have: they start at zero
    if key in template and key not in params and not skipped(key):
      params[key] = np.zeros(template[key], np.float32)
  missing = sorted('/'.join(k) for k in template
                   if k not in params and k not in mismatched and not skipped(k))
  ignored = sorted(k for k in source if k not in used and k.startswith(ignore or ('\0',)))
  unexpected = sorted(k for k in source if k not in used and k not in ignored)
  if missing:
    problems.append('missing from checkpoint: ' + ', '.join(missing))
  if unexpected:
    problems.append('unexpected in checkpoint: ' + ', '.join(unexpected))
  if problems:
    raise CheckpointMismatch(f'{fmt} checkpoint does not fit the configured model '
                             f'(patch {module.patch_size}, width {module.width}, depth '
                             f'{module.depth}, heads {module.num_heads}, '
                             f'{module.num_classes} classes):\n  - ' + '\n  - '.join(problems))
  info = {'format': fmt, 'mean': norm[0], 'std': norm[1], 'image_size': module.image_size,
          'skipped': list(skip), 'ignored': ignored}
  return traverse_util.unflatten_dict(params), info


def block_rules(src: str, dst: tuple[str, ...], width: int, heads: int,
                names: dict[str, str]) -> list:
  """Rules for one pre-LN block from a PyTorch layout with a fused qkv Linear ([3*inner, D],
  rows q | k | v, each heads x head_dim). `names` maps the roles 'norm1', 'qkv', 'proj', 'norm2',
  'fc1', 'fc2' to the source's module names."""
  att = dst + ('MultiHeadDotProductAttention_1',)
  rules = []
  for role, fn in (('norm1', 'LayerNorm_0'), ('norm2', 'LayerNorm_2')):
    rules += [(src + names[role] + '.weight', dst + (fn, 'scale'), lambda w: w),
              (src + names[role] + '.bias', dst + (fn, 'bias'), lambda w: w)]
  for j, name in enumerate(('query', 'key', 'value')):
    rules += [
        (src + names['qkv'] + '.weight', att + (name, 'kernel'),
         lambda w, j=j: np.split(w, 3)[j].T.reshape(width, heads, -1)),
        (src + names['qkv'] + '.bias', att + (name, 'bias'),
         lambda b, j=j: np.split(b, 3)[j].reshape(heads, -1))]
  return rules + [
      (src + names['proj'] + '.weight', att + ('out', 'kernel'),
       lambda w: w.T.reshape(heads, -1, width)),
      (src + names['proj'] + '.bias', att + ('out', 'bias'), lambda w: w),
      (src + names['fc1'] + '.weight', dst + ('MlpBlock_3', 'Dense_0', 'kernel'), lambda w: w.T),
      (src + names['fc1'] + '.bias', dst + ('MlpBlock_3', 'Dense_0', 'bias'), lambda w: w),
      (src + names['fc2'] + '.weight', dst + ('MlpBlock_3', 'Dense_1', 'kernel'), lambda w: w.T),
      (src + names['fc2'] + '.bias', dst + ('MlpBlock_3', 'Dense_1', 'bias'), lambda w: w),
  ]


TIMM_BLOCK = dict(norm1='norm1', qkv='attn.qkv', proj='attn.proj', norm2='norm2', fc1='mlp.fc1',
                  fc2='mlp.fc2')
VIVIT_BLOCK = dict(norm1='input_layer_norm', qkv='qkv', proj='projection',
                      norm2='mlp_layer_norm', fc1='mlp_1', fc2='mlp_2')


def timm_rules(model_config) -> list:
  """Rules mapping timm/DeiT names onto this library's parameter paths."""
  kw = backbone.backbone_kwargs(_model_config(model_config))
  depth, width, heads = kw['depth'], kw['width'], kw['num_heads']
  rules = [
      ('cls_token', ('cls',), lambda w: w),
      ('dist_token', ('dist',), lambda w: w),
      ('pos_embed', ('Transformer', 'posembed_input', 'pos_embedding'), lambda w: w),
      ('patch_embed.proj.weight', ('embedding', 'kernel'), lambda w: w.transpose(2, 3, 1, 0)),
      ('patch_embed.proj.bias', ('embedding', 'bias'), lambda w: w),
      ('norm.weight', ('Transformer', 'encoder_norm', 'scale'), lambda w: w),
      ('norm.bias', ('Transformer', 'encoder_norm', 'bias'), lambda w: w),
  ]
  for head in ('head', 'head_dist'):
    rules += [(f'{head}.weight', (head, 'kernel'), lambda w: w.T),
              (f'{head}.bias', (head, 'bias'), lambda w: w)]
  for i in range(depth):
    rules += block_rules(f'blocks.{i}.', ('Transformer', f'encoderblock_{i}'), width, heads,
                         TIMM_BLOCK)
  return rules


def vivit_rules(model_config) -> list:
  """Rules for the official Eventful code's factorised ViViT (the output of its
  scripts/convert/vivit.py: embedding.conv, spatial_model, temporal_model, classifier) onto a
  model with model.video='factorised'. The class token sits first in each position encoding."""
  kw = backbone.backbone_kwargs(_model_config(model_config))
  width, heads = kw['width'], kw['num_heads']
  rules = [('embedding.conv.weight', ('embedding', 'kernel'),
            lambda w: w.transpose(2, 3, 4, 1, 0)),           # [D, C, t, p, p] -> [t, p, p, C, D]
           ('embedding.conv.bias', ('embedding', 'bias'), lambda w: w),
           ('classifier.weight', ('head', 'kernel'), lambda w: w.T),
           ('classifier.bias', ('head', 'bias'), lambda w: w)]
  for part, encoder, cls, depth in (('spatial_model', 'Transformer', 'cls', kw['depth']),
                                    ('temporal_model', 'TemporalTransformer', 'temporal_cls',
                                     kw.get('temporal_depth', 0))):
    rules += [(f'{part}.class_token', (cls,), lambda w: w),
              (f'{part}.backbone.position_encoding.encoding',
               (encoder, 'posembed_input', 'pos_embedding'), lambda w: w),
              (f'{part}.layer_norm.weight', (encoder, 'encoder_norm', 'scale'), lambda w: w),
              (f'{part}.layer_norm.bias', (encoder, 'encoder_norm', 'bias'), lambda w: w)]
    for i in range(depth):
      rules += block_rules(f'{part}.backbone.blocks.{i}.', (encoder, f'encoderblock_{i}'),
                           width, heads, VIVIT_BLOCK)
  return rules


# ----------------------------------------------------------------------------- ViTDet
# Where each pyramid stage keeps its layers: the layers before the 1x1 lateral conv, by scale
# (None: a layer without weights, GELU or max pooling).
PYRAMID_START = {4.0: ('up_0', 'up_norm', None, 'up_1'), 2.0: ('up_0',), 1.0: (), 0.5: (None,)}


def _conv(w):         # torch Conv2d [out, in, kh, kw] -> flax [kh, kw, in, out]
  return w.transpose(2, 3, 1, 0)


def _conv_t(w):       # torch ConvTranspose2d [in, out, 2, 2] -> [2, 2, in, out]
  return w.transpose(2, 3, 0, 1)


def _ln(src: str, dst: tuple[str, ...]) -> list:
  return [(src + '.weight', dst + ('scale',), lambda w: w), (src + '.bias', dst + ('bias',),
                                                            lambda w: w)]


def vitdet_rules(detector, layout: str) -> list:
  """Rules mapping a ViTDet backbone and simple feature pyramid onto a `Detector`'s 'backbone'
  and 'pyramid' parameters. layout 'detectron2': detectron2's names (`backbone.net.*`,
  `backbone.simfp_<log2 stride>.*`); 'wisionlab': the official Eventful code's (the output of its
  scripts/convert/vitdet.py: `embedding.conv`, `backbone.blocks.*`, `pyramid.stages.*`)."""
  vit = detector.backbone
  width, heads = vit.width, vit.num_heads
  d2 = layout == 'detectron2'
  src = 'backbone.net.' if d2 else 'backbone.'
  drop_cls = lambda w: w[:, 1:] if int(round((w.shape[1] - 1) ** 0.5)) ** 2 == w.shape[1] - 1 \
      else w   # detectron2's pos_embed keeps a class-token row ViTDet never uses
  rules = [
      (src + 'patch_embed.proj.weight' if d2 else 'embedding.conv.weight',
       ('backbone', 'embedding', 'kernel'), lambda w: w.transpose(2, 3, 1, 0)),
      (src + 'patch_embed.proj.bias' if d2 else 'embedding.conv.bias',
       ('backbone', 'embedding', 'bias'), lambda w: w),
      (src + 'pos_embed' if d2 else 'backbone.position_encoding.encoding',
       ('backbone', 'Transformer', 'posembed_input', 'pos_embedding'), drop_cls)]
  for i in range(vit.depth):
    dst = ('backbone', 'Transformer', f'encoderblock_{i}')
    rules += block_rules(f'{src}blocks.{i}.', dst, width, heads, TIMM_BLOCK if d2 else VIVIT_BLOCK)
    att = dst + ('MultiHeadDotProductAttention_1',)
    for axis, (d2_name, ev_name) in (('h', ('rel_pos_h', 'y_embedding')),
                                     ('w', ('rel_pos_w', 'x_embedding'))):
      name = f'attn.{d2_name}' if d2 else f'relative_position.{ev_name}'
      rules.append((f'{src}blocks.{i}.{name}', att + (f'rel_pos_{axis}',), lambda w: w))
  for k, scale in enumerate(detector.scale_factors):
    level = f'simfp_{int(np.log2(vit.patch_size / scale))}'
    stage = f'backbone.{level}.' if d2 else f'pyramid.stages.{k}.'
    dst = ('pyramid', level)
    start = PYRAMID_START[float(scale)]
    for j, name in enumerate(start):
      if name == 'up_norm':
        rules += _ln(f'{stage}{j}', dst + (name,))
      elif name:
        rules += [(f'{stage}{j}.weight', dst + (name, 'kernel'), _conv_t),
                  (f'{stage}{j}.bias', dst + (name, 'bias'), lambda w: w)]
    n = len(start)
    for j, name in enumerate(('lateral', 'output')):
      at = n + j if d2 else n + 2 * j
      rules.append((f'{stage}{at}.weight', dst + (name, 'kernel'), _conv))
      rules += _ln(f'{stage}{at}.norm' if d2 else f'{stage}{at + 1}', dst + (f'{name}_norm',))
  return rules


def from_vitdet(state_dict: Mapping[str, Any], detector) -> tuple[dict, dict]:
  """A ViTDet checkpoint (detectron2's names, or the official Eventful code's layout; told
  apart by their names) -> ({'backbone': ..., 'pyramid': ...} params of the Flax `Detector`
  `detector`, info). The checkpoint's own detection head (RPN, ROI heads) is not imported
  (info['ignored'] lists it); the head of `detector` keeps its fresh values. A missing or
  misshapen backbone or pyramid tensor raises CheckpointMismatch naming each."""
  if isinstance(state_dict.get('model'), Mapping):
    state_dict = state_dict['model']
  sd = {k.removeprefix('module.'): _to_numpy(v) for k, v in state_dict.items()}
  layout = 'detectron2' if any(k.startswith('backbone.net.') for k in sd) else 'wisionlab'
  vit = detector.backbone
  image = np.zeros((1, vit.image_size, vit.image_size, 3), np.float32)
  shapes = jax.eval_shape(lambda: detector.init(
      jax.random.key(0), image, method=lambda m, x: m.pyramid_features(x)))
  template = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes['params']).items()}
  params, info = _assemble(sd, vitdet_rules(detector, layout), None, f'vitdet-{layout}',
                           (IMAGENET_MEAN, IMAGENET_STD), (), (vit, template),
                           ignore=('proposal_generator.', 'roi_heads.'))
  return params, info


def from_timm(state_dict: Mapping[str, Any], config, *, skip: tuple[str, ...] = (),
              extra_rules: list | None = None) -> tuple[dict, dict]:
  """timm / DeiT state dict ({name: array or torch tensor}) -> (Flax params, info).

  `config` is the experiment config or its `model` part. The method of `model.name` adds the
  rules of its own parameters (e.g. official predictor weights); `extra_rules` adds more.
  """
  if isinstance(state_dict.get('model'), Mapping):  # DeiT files wrap weights in {'model': ...}
    state_dict = state_dict['model']
  sd = {k.removeprefix('module.'): _to_numpy(v) for k, v in state_dict.items()}
  mc = _model_config(config)
  if 'spatial_model.class_token' in sd:  # the official Eventful code's ViViT
    return _assemble(sd, vivit_rules(config) + list(extra_rules or []), config,
                     'vivit', (VIVIT_MEAN, VIVIT_STD), skip)
  rules = timm_rules(config) + methods.get(mc.get('name', 'vit')).checkpoint_rules(mc)
  rules += list(extra_rules or [])
  return _assemble(sd, rules, config, 'timm', (IMAGENET_MEAN, IMAGENET_STD), skip)


def from_vit_jax(arrays: Mapping[str, np.ndarray], config, *,
                 skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
  """vit_jax / AugReg `.npz` contents ({'a/b/c': array}) -> (Flax params, info)."""
  rules = [(k, tuple(k.split('/')), lambda w: w) for k in arrays]
  return _assemble(dict(arrays), rules, config, 'vit_jax', (INCEPTION_MEAN, INCEPTION_STD), skip)


def load_checkpoint(path: str, config, *, skip: tuple[str, ...] = ()) -> tuple[dict, dict]:
  """Params and info from a timm/DeiT (.pth/.pt/.bin/.safetensors) or vit_jax (.npz) file."""
  if path.endswith('.npz'):
    with np.load(path) as f:
      return from_vit_jax({k: f[k] for k in f.files}, config, skip=skip)
  if path.endswith(('.pth', '.pt', '.bin', '.safetensors')):
    return from_timm(read_state_dict(path), config, skip=skip)
  raise ValueError(f'{path}: unknown checkpoint format; expected .pth/.pt/.bin/.safetensors '
                   '(timm/DeiT) or .npz (vit_jax)')
