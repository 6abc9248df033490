"""Config defaults shared by every experiment, and validation that names the bad field.

Experiment files in `configs/<method>/<dataset>.py` start from `base()`, choose a method with
`use_method(config, name, **fields)`, set what differs and return `config.lock()`, so a
mistyped field fails instead of silently doing nothing.

Schema: the backbone's fields in `config.model`; a method's own fields in
`config.model.<name>` and its loss weights in `config.loss.<name>`, defaults from the method
(tokensparse/methods/<name>/) merged by `complete`. Fields of the older flat schema (e.g.
`model.keep_ratio`, `config.vtp`) are refused in one line naming their new place; configs
saved in old work directories are moved to the new places when read (`migrate`).
"""
from __future__ import annotations

import difflib
import glob
import importlib.util
import json
import os
import traceback

import ml_collections
from ml_collections import config_dict

from tokensparse import backbone, methods
from tokensparse.data import augment
from tokensparse.fields import fail


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
      distilled=False, classifier='token', num_frames=0, dropout=0.0, attn_dropout=0.0,
      droppath=0.0, dtype='float32',
      # clips (num_frames > 0): 'joint' spatio-temporal attention, ViViT's 'factorised' encoder
      # (tubelet frames per token, temporal_depth temporal blocks) or per-step 'frames'
      video='joint', tubelet=1, temporal_depth=0))

  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', source_dir='', train_split='train', eval_split='test',
      augment='crop_flip', crop_padding=4, flip=True, eval_crop_fraction=1.0, to_rgb=False,
      canvas_size=0,  # > 0: place each image at a random position on a zero canvas this big
      mean=(0.5,), std=(0.5,), interpolation='bilinear',
      # DeiT's augmentations (tokensparse.data.augment), all off by default: a RandAugment
      # policy string ('rand-m9-mstd0.5-inc1'), the random-erasing probability, Mixup/CutMix
      # Beta parameters (0 = off), the chance of CutMix when both are on, the chance a batch
      # is mixed at all, and how often each example repeats in an epoch (timm's RASampler).
      rand_augment='', random_erase=0.0, mixup=0.0, cutmix=0.0, mix_switch_prob=0.5,
      mix_prob=1.0, repeated_aug=1,
      threads=1))  # threads that decode and augment examples (0 = one per CPU core)

  # path: a work directory or a timm/DeiT/vit_jax file; skip: parameter prefixes left at their
  # init; model_fields: model fields taken from a work directory's saved config (e.g. the
  # per-layer widths of a pruned model), so a config need not read the checkpoint itself.
  c.init_from = ml_collections.ConfigDict(dict(path='', skip=(), model_fields=()))
  # Loss weights of the method's own terms: loss.<method name>.<weight> (see use_method).
  c.loss = ml_collections.ConfigDict()
  return c


def use_method(c: ml_collections.ConfigDict, name: str, **fields) -> ml_collections.ConfigDict:
  """Make `c` (unlocked) a config of method `name`: model.name, model.<name> and loss.<name>
  from the method's defaults, then `fields` set on model.<name>. Returns `c`."""
  method = methods.get(name)
  c.model.name = name
  defaults, loss = method.defaults(), method.loss_defaults()
  if defaults is not None:
    c.model[name] = defaults
    for key, value in fields.items():
      if key not in defaults:
        fail(f'model.{name}.{key}', value, f'no such field (model.{name} has '
             f'{", ".join(defaults)})')
      c.model[name][key] = value
  elif fields:
    fail(f'model.{name}', fields, 'this method has no model fields')
  if loss is not None:
    if 'loss' not in c:
      c.loss = ml_collections.ConfigDict()
    c.loss[name] = loss
  return c


def _legacy_fields() -> dict[str, str]:
  return {old: new for m in methods.REGISTRY.values() for old, new in m.legacy_fields.items()}


def migrate(d: dict) -> dict:
  """A saved config (plain dict) with old-style fields moved to where they live now (for work
  directories written before the model.<name> / loss.<name> schema)."""
  d = json.loads(json.dumps(d))
  for old, new in _legacy_fields().items():
    *parents, leaf = old.split('.')
    node = d
    for key in parents:
      node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
      continue
    value = node.pop(leaf)
    *parents, leaf = new.split('.')
    target = d
    for key in parents:
      target = target.setdefault(key, {})
    target.setdefault(leaf, value)
  for top in {old.split('.')[0] for old in _legacy_fields()}:
    if top in d and d[top] == {}:
      del d[top]
  return d


def check_legacy(config) -> None:
  """Raise ValueError naming the first field of the older flat schema set in `config`."""
  for old, new in _legacy_fields().items():
    node = config
    for key in old.split('.'):
      node = node.get(key) if isinstance(node, (dict, ml_collections.ConfigDict)) else None
      if node is None:
        break
    if node is not None:
      raise ValueError(f'{old}={node!r}: an old-style field; it is {new} now')


def complete(config) -> ml_collections.ConfigDict:
  """A copy of `config` with the named method's model.<name> and loss.<name> groups present
  and their missing fields set to the method's defaults."""
  d = config.to_dict()
  c = ml_collections.ConfigDict(d)
  name = c.model.get('name', 'vit')
  method = methods.get(name)
  with c.unlocked():
    if method.defaults() is not None:
      c.model[name] = method.fields(c.model)
    if method.loss_defaults() is not None:
      if 'loss' not in c:
        c.loss = ml_collections.ConfigDict()
      c.loss[name] = method.loss_fields(c)
  return c


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS_DIR = os.path.join(REPO_ROOT, 'configs')


def resolve(path: str) -> str:
  """A path a config names (`init_from.path`, ...): as given where it exists from the current
  directory, else relative to the repository (where configs/ and runs/ live), so the shipped
  configs work from any directory; unchanged when neither exists (the caller names it)."""
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  in_repo = os.path.join(REPO_ROOT, path)
  return in_repo if os.path.exists(in_repo) else path


def from_file(path: str, arg: str = ''):
  """get_config(arg) of another experiment file, e.g. from_file('vit/fashion_mnist.py'); the
  path is relative to the repository's configs/ folder. Configs build on each other this way."""
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(path)[0].replace('/', '_'), os.path.join(CONFIGS_DIR, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def load(path: str, arg: str = ''):
  """get_config(arg) of the config file at `path` (a file path, as on a command line)."""
  spec = importlib.util.spec_from_file_location('config_loaded', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def check_command_line(spec: str, overrides: list[str]) -> None:
  """Check `--config PATH[:ARG]` and its `--config.a.b=value` overrides before any flag
  parsing, raising ValueError with one line that names the bad one (and the nearest existing
  file or field) instead of a traceback from ml_collections."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    known = (glob.glob(os.path.join(os.path.dirname(path) or '.', '*.py'))
             + glob.glob('configs/**/*.py', recursive=True))
    near = difflib.get_close_matches(path, known, n=1, cutoff=0.85)
    raise ValueError(f'--config {spec}: no such file' + (f'; did you mean {near[0]}?' if near
                                                         else ' (the configs are in configs/)'))
  module_spec = importlib.util.spec_from_file_location('config_checked', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
  except (ValueError, TypeError) as e:  # a bad config argument
    raise ValueError(f'--config {spec}: {e}') from None
  except Exception as e:  # pylint: disable=broad-except  (the file itself is broken)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    where = f' (line {frames[-1].lineno})' if frames else ''
    raise ValueError(f'--config {spec}: the config file raised {type(e).__name__}: '
                     f'{e}{where}'.splitlines()[0]) from None
  for flag in overrides:
    name, has_value, value = flag[len('--config.'):].partition('=')
    node, keys = config, name.split('.')
    for i, key in enumerate(keys):
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or key not in node:
        fields = list(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
        near = difflib.get_close_matches(key, fields, n=1)
        where = '.'.join(keys[:i])
        raise ValueError(
            f'--config.{name}: no such field in the config' +
            (f'; did you mean --config.{where + "." if where else ""}{near[0]}?' if near else
             f' ({where or "the top level"} has {", ".join(map(str, fields))})' if fields else
             f' ({where} is a value, not a group)'))
      node = node[key]
    kind = type(node)
    if has_value and kind is bool and value.lower() not in ('true', 'false', 't', 'f', '1', '0'):
      raise ValueError(f'--config.{name}={value}: {name} is a boolean: true or false '
                       f'(now {node!r})')
    if has_value and kind in (int, float) and not isinstance(node, bool):
      try:
        float(value) if kind is float else int(value)
      except ValueError:
        raise ValueError(f'--config.{name}={value}: {name} is {"an int" if kind is int else "a float"}'
                         f' (now {node!r})') from None


def parse_options(arg: str, known: tuple[str, ...] | None = None,
                  variant: str | None = None) -> dict:
  """The one way configs read their argument (`--config path.py:ARG`):
  'tl,tokens=16,at=0.75' -> {'tl': True, 'tokens': '16', 'at': '0.75'}. With `variant` (a
  default such as 'S/16'), a first item that looks like 'S/16' is returned as 'variant'. With
  `known`, any other name is refused with the list of known ones."""
  items = [a for a in (arg or '').split(',') if a]
  options = {}
  if variant is not None:
    options['variant'] = items.pop(0) if items and '/' in items[0] else variant
  for item in items:
    key, _, value = item.partition('=')
    options[key] = value if '=' in item else True
  if known is not None:
    unknown = [k for k in options if k not in known and k != 'variant']
    if unknown:
      raise ValueError(f'config argument {arg!r}: unknown option(s) {", ".join(unknown)}; '
                       f'known: {", ".join(known) or "none"}')
  return options


def validate_model(config) -> dict:
  """Raise ValueError naming the first model field (backbone, then the method's own) that
  cannot work; return the backbone kwargs."""
  check_legacy(config)
  kw = backbone.validate(config.model)
  method = methods.get(config.model.get('name', 'vit'))
  for group, defaults in ((f'model.{method.name}', method.defaults()),
                          (f'loss.{method.name}', method.loss_defaults())):
    top, name = group.split('.')
    given = (config.get(top) or {}).get(name) or {}
    unknown = [k for k in given if defaults is None or k not in defaults]
    if unknown:
      fail(f'{group}.{unknown[0]}', given[unknown[0]],
           'no such field' + (f' ({group} has {", ".join(defaults)})' if defaults is not None
                              else f' ({method.name} has no {group} fields)'))
  method.validate(config, kw)
  return kw


# (field, lowest allowed value, what it means) for the integer counts of the loop.
COUNTS = (('batch_size', 1, 'examples per step'), ('eval_batch_size', 1, 'examples per eval step'),
          ('total_steps', 0, 'steps (0: from num_epochs)'),
          ('warmup_steps', 0, 'steps (0: from warmup_epochs)'),
          ('log_every_steps', 1, 'steps between progress lines'),
          ('eval_every_steps', 0, 'steps between evaluations (0: at the end)'),
          ('checkpoint_every_steps', 1, 'steps between checkpoints'),
          ('keep_checkpoints', 1, 'checkpoints kept (the newest)'))


def validate(config) -> None:
  """Raise ValueError naming the first field whose value cannot work (before anything runs or
  is written)."""
  validate_model(config)
  for field, lowest, meaning in COUNTS:
    value = config.get(field, lowest)
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
      fail(field, value, f'must be an integer >= {lowest} ({meaning})')
  if not isinstance(config.get('seed', 0), int):
    fail('seed', config.seed, 'must be an integer')
  if config.get('total_steps', 0) <= 0 and not config.num_epochs > 0:
    fail('num_epochs', config.num_epochs, 'must be positive (or set total_steps)')
  if not config.get('warmup_epochs', 0.0) >= 0:
    fail('warmup_epochs', config.warmup_epochs, 'must be >= 0')
  if not 0.0 <= config.label_smoothing < 1.0:
    fail('label_smoothing', config.label_smoothing, 'must be in [0, 1)')
  opt = config.optimizer
  if opt.name not in ('adamw', 'sgd'):
    fail('optimizer.name', opt.name, "expected 'adamw' or 'sgd'")
  if not opt.lr > 0:
    fail('optimizer.lr', opt.lr, 'must be positive')
  if not 0 <= opt.min_lr <= opt.lr:
    fail('optimizer.min_lr', opt.min_lr, f'must be in [0, optimizer.lr={opt.lr}]')
  for field in ('weight_decay', 'grad_clip_norm'):
    if not opt[field] >= 0:
      fail(f'optimizer.{field}', opt[field], 'must be >= 0 (0: off)')
  for field in ('b1', 'b2', 'momentum'):
    if field in opt and not 0 <= opt[field] < 1:
      fail(f'optimizer.{field}', opt[field], 'must be in [0, 1)')
  for i, group in enumerate(opt.get('lr_groups') or []):
    if not 2 <= len(group) <= 3 or not isinstance(group[0], str):
      fail(f'optimizer.lr_groups[{i}]', group, 'expected (regex, multiplier[, freeze_steps])')

  d = config.data
  if len(d.mean) != len(d.std):
    fail('data.std', d.std, f'needs as many entries as data.mean={d.mean}')
  if any(s <= 0 for s in d.std):
    fail('data.std', d.std, 'entries must be positive')
  for field, lowest in (('crop_padding', 0), ('canvas_size', 0), ('threads', 0)):
    value = d.get(field, lowest)
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
      fail(f'data.{field}', value, f'must be an integer >= {lowest}')
  if not 0 < d.get('eval_crop_fraction', 1.0) <= 1:
    fail('data.eval_crop_fraction', d.eval_crop_fraction, 'must be in (0, 1]')
  augment.check_fields(d)
