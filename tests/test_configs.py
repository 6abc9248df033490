"""Config validation names the field; shipped configs build."""
import glob
import importlib.util

import pytest

from tokensparse import configs, methods


def load(path, arg=''):
  spec = importlib.util.spec_from_file_location('c', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# configs/vitdet/ holds detection configs (tokensparse.detection builds them), not a method's.
CLASSIFIERS = sorted(p for p in glob.glob('configs/*/*.py') if not p.startswith('configs/vitdet/'))


@pytest.mark.parametrize('path', CLASSIFIERS)
def test_shipped_configs_validate_and_build(path):
  config = load(path)
  configs.validate(config)
  methods.build(config.model)
  assert config.is_locked


@pytest.mark.parametrize('path', sorted(glob.glob('configs/vitdet/*.py')))
@pytest.mark.parametrize('arg', ['', 'tiny'])
def test_detection_configs_validate_and_build(path, arg):
  from tokensparse import detection
  from tokensparse.methods.eventful.detection import eventful_detector
  config = load(path, arg)
  assert 'detector' in config
  detection.build(config)
  assert eventful_detector(config).backbone.capacity == config.eventful.capacity
  with config.unlocked():
    config.model.classifier = 'token'
  with pytest.raises(ValueError, match="model.classifier='token'"):
    detection.validate(config)


@pytest.mark.parametrize('field,value,message', [
    ('model.image_size', 30, 'model.image_size=30: not divisible by model.patch_size=7'),
    ('model.num_heads', 5, 'model.num_heads=5: does not divide model.width=128'),
    ('model.variant', 'XL/16', "model.variant='XL/16': expected one of"),
    ('model.mlp_dim', [192, 192], 'model.mlp_dim=[192, 192]: needs one entry per block (model.depth=6)'),
    ('model.dropout', 1.5, 'model.dropout=1.5: must be in [0, 1)'),
    ('model.dtype', 'float8', "model.dtype='float8': expected one of"),
    ('batch_size', 0, 'batch_size=0: must be an integer >= 1 (examples per step)'),
    ('keep_checkpoints', 0, 'keep_checkpoints=0: must be an integer >= 1 (checkpoints kept'),
    ('eval_batch_size', 0, 'eval_batch_size=0: must be an integer >= 1'),
    ('checkpoint_every_steps', -1, 'checkpoint_every_steps=-1: must be an integer >= 1'),
    ('total_steps', -5, 'total_steps=-5: must be an integer >= 0'),
    ('optimizer.min_lr', 1.0, 'optimizer.min_lr=1.0: must be in [0, optimizer.lr='),
    ('optimizer.b2', 1.0, 'optimizer.b2=1.0: must be in [0, 1)'),
    ('data.eval_crop_fraction', 0.0, 'data.eval_crop_fraction=0.0: must be in (0, 1]'),
    ('optimizer.lr', -1.0, 'optimizer.lr=-1.0: must be positive'),
    ('label_smoothing', 1.0, 'label_smoothing=1.0: must be in [0, 1)'),
    ('data.std', (0.0,), 'data.std=(0.0,): entries must be positive'),
    ('data.rand_augment', 'rand-m9-z2', "data.rand_augment='rand-m9-z2': unknown section 'z2'"),
    ('data.random_erase', 1.5, 'data.random_erase=1.5: a probability in'),
    ('data.mixup', -0.8, 'data.mixup=-0.8: a Beta parameter'),
    ('data.repeated_aug', 0, 'data.repeated_aug=0: how often'),
])
def test_validation_names_the_field(field, value, message):
  config = load('configs/vit/fashion_mnist.py')
  with config.unlocked():
    *parents, leaf = field.split('.')
    target = config
    for p in parents:
      target = target[p]
    target[leaf] = value
  with pytest.raises(ValueError) as e:
    configs.validate(config)
  assert message in str(e.value)


def test_locked_config_rejects_typos():
  config = load('configs/vit/fashion_mnist.py')
  with pytest.raises(AttributeError):
    config.modle = 3


@pytest.mark.parametrize('path,arg', [('configs/vit/imagenet.py', 'S/16'),
                                      ('configs/dynamic_vit/deit_s_imagenet.py', ''),
                                      ('configs/vtp/deit_b_imagenet.py', '')])
def test_imagenet_configs_carry_deits_augmentations(path, arg):
  d = load(path, arg).data
  assert (d.rand_augment, d.random_erase, d.mixup, d.cutmix, d.mix_switch_prob, d.repeated_aug,
          d.interpolation, d.augment) == ('rand-m9-mstd0.5-inc1', 0.25, 0.8, 1.0, 0.5, 3,
                                          'bicubic', 'inception_crop')
  assert load(path, arg).label_smoothing == 0.1


@pytest.mark.parametrize('path', CLASSIFIERS)
def test_config_folders_are_method_folders_and_fields_live_under_the_method(path):
  folder = path.split('/')[1]
  assert folder in methods.NAMES, f'{path}: configs/<folder> must be a registered method name'
  config = load(path)
  name = config.model.name
  method = methods.get(name)
  legacy = {old.split('.')[-1] for m in methods.REGISTRY.values() for old in m.legacy_fields
            if old.startswith('model.')}
  assert not legacy & set(config.model), f'{path}: flat method fields {legacy & set(config.model)}'
  if method.defaults() is not None:
    assert set(config.model[name]) == set(method.defaults())


def test_use_method_fills_defaults_and_refuses_unknown_fields():
  c = configs.base()
  with c.unlocked():
    configs.use_method(c, 'dynamic_vit', keep_ratio=0.5)
    assert c.model.dynamic_vit.to_dict() == dict(keep_ratio=0.5, prune_layers=(3, 6, 9),
                                                 gumbel_noise=True, selector='predictor')
    assert c.loss.dynamic_vit.ratio_weight == 2.0
    with pytest.raises(ValueError, match=r"model.tome.rr=3: no such field \(model.tome has inflect, "):
      configs.use_method(c, 'tome', rr=3)


@pytest.mark.parametrize('group,field,value,message', [
    ('model', 'keep_ratio', 0.5,
     'model.keep_ratio=0.5: an old-style field; it is model.dynamic_vit.keep_ratio now'),
    ('model', 'pool_layer', 3,
     'model.pool_layer=3: an old-style field; it is model.pooled_vit.pool_layer now'),
    ('dynamic_vit', 'ratio_weight', 5.0,
     'dynamic_vit.ratio_weight=5.0: an old-style field; it is loss.dynamic_vit.ratio_weight now'),
])
def test_old_style_fields_are_refused_in_one_line(group, field, value, message):
  config = load('configs/dynamic_vit/fashion_mnist_canvas.py')
  with config.unlocked():
    if group == 'model':
      config.model[field] = value
    else:
      config[group] = {field: value}
  with pytest.raises(ValueError) as e:
    configs.validate(config)
  assert str(e.value) == message


def test_unknown_method_field_is_named_with_the_known_ones():
  config = load('configs/tome/fashion_mnist_canvas.py')
  with config.unlocked():
    config.model.tome.ratio = 3
  with pytest.raises(ValueError, match=r"model.tome.ratio=3: no such field \(model.tome has "
                                       r"inflect, prop_attn, r, trace_source\)"):
    configs.validate(config)


def test_saved_old_style_configs_are_migrated():
  old = {'model': {'name': 'dynamic_vit', 'keep_ratio': 0.5, 'prune_layers': [1, 2],
                   'width': 8},
         'dynamic_vit': {'ratio_weight': 5.0, 'distill_weight': 0.5, 'token_weight': 0.5},
         'vtp': {'l1_weight': 1e-3}}
  new = configs.migrate(old)
  assert new['model'] == {'name': 'dynamic_vit', 'width': 8,
                          'dynamic_vit': {'keep_ratio': 0.5, 'prune_layers': [1, 2]}}
  assert new['loss'] == {'dynamic_vit': {'ratio_weight': 5.0, 'distill_weight': 0.5,
                                         'token_weight': 0.5}, 'vtp': {'l1_weight': 1e-3}}
  assert 'dynamic_vit' not in new and 'vtp' not in new and old['model']['keep_ratio'] == 0.5


@pytest.mark.parametrize('body, message', [
    ('def get_config():\n  return undefined_name\n',
     "the config file raised NameError: name 'undefined_name' is not defined (line 2)"),
    ('def get_config(:\n', 'the config file raised SyntaxError: '),
    ('import no_such_module_anywhere\n', "the config file raised ModuleNotFoundError: No module "
                                          "named 'no_such_module_anywhere' (line 1)")])
def test_a_config_file_that_raises_is_named_in_one_line(tmp_path, body, message):
  path = tmp_path / 'broken.py'
  path.write_text(body)
  with pytest.raises(ValueError) as e:
    configs.check_command_line(str(path), [])
  assert str(e.value).startswith(f'--config {path}: {message}'), str(e.value)
  assert len(str(e.value).splitlines()) == 1
