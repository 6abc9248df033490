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


@pytest.mark.parametrize('path', sorted(glob.glob('configs/*/*.py')))
def test_shipped_configs_validate_and_build(path):
  config = load(path)
  configs.validate(config)
  methods.build(config.model)
  assert config.is_locked


@pytest.mark.parametrize('field,value,message', [
    ('model.image_size', 30, 'model.image_size=30: not divisible by model.patch_size=7'),
    ('model.num_heads', 5, 'model.num_heads=5: does not divide model.width=128'),
    ('model.variant', 'XL/16', "model.variant='XL/16': expected one of"),
    ('model.mlp_dim', [192, 192], 'model.mlp_dim=[192, 192]: needs one entry per block (model.depth=6)'),
    ('model.dropout', 1.5, 'model.dropout=1.5: must be in [0, 1)'),
    ('model.dtype', 'float8', "model.dtype='float8': expected one of"),
    ('batch_size', 0, 'batch_size=0: must be positive'),
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
                                      ('configs/dynamicvit/deit_s_imagenet.py', ''),
                                      ('configs/vtp/deit_b_imagenet.py', '')])
def test_imagenet_configs_carry_deits_augmentations(path, arg):
  d = load(path, arg).data
  assert (d.rand_augment, d.random_erase, d.mixup, d.cutmix, d.mix_switch_prob, d.repeated_aug,
          d.interpolation, d.augment) == ('rand-m9-mstd0.5-inc1', 0.25, 0.8, 1.0, 0.5, 3,
                                          'bicubic', 'inception_crop')
  assert load(path, arg).label_smoothing == 0.1
