"""Checkpoint import: timm/DeiT (.pth, .safetensors, in-memory) and vit_jax .npz."""
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import jax.numpy as jnp

from tokensparse import convert, methods
from tests import numpy_vit

DIMS = dict(width=32, depth=2, num_heads=4, mlp_dim=64, patch=4, channels=3, num_classes=5)
# PyTorch files written once by tests/fixtures/make_fixtures.py (the tests need no torch).
FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')


class TensorLike:
  """What a torch tensor handed to from_timm offers: detach(), float(), numpy()."""

  def __init__(self, array):
    self.array = array

  def detach(self):
    return self

  def is_floating_point(self):
    return self.array.dtype.kind == 'f'

  def float(self):
    return TensorLike(self.array.astype(np.float32))

  def numpy(self):
    return self.array


def make(tiny_model_config, seed=0, grid=4, distilled=False):
  rng = np.random.default_rng(seed)
  sd = numpy_vit.random_timm_state_dict(rng, grid=grid, distilled=distilled, **DIMS)
  images = rng.standard_normal((3, 16, 16, 3)).astype(np.float32)
  tiny_model_config.distilled = distilled
  return sd, images


def flax_logits(params, cfg, images):
  logits, _ = methods.build(cfg).apply({'params': params}, jnp.asarray(images))
  return np.asarray(logits)


def assert_rel_close(a, b, rtol=1e-5):
  err = np.abs(a - b).max() / np.abs(b).max()
  assert err < rtol, f'relative error {err:.2e}'


@pytest.mark.parametrize('distilled', [False, True])
def test_from_timm_matches_numpy_forward(tiny_model_config, distilled):
  sd, images = make(tiny_model_config, distilled=distilled)
  params, info = convert.from_timm(sd, tiny_model_config)
  expected = numpy_vit.forward(sd, images.astype(np.float64), num_heads=4, depth=2)
  assert_rel_close(flax_logits(params, tiny_model_config, images), expected)
  assert info['format'] == 'timm' and info['mean'] == convert.IMAGENET_MEAN


def test_deit_wrapper_and_torch_tensors(tiny_model_config):
  sd, images = make(tiny_model_config)
  wrapped = {'model': {k: TensorLike(v) for k, v in sd.items()}, 'epoch': 3}
  params, _ = convert.from_timm(wrapped, tiny_model_config)
  expected = numpy_vit.forward(sd, images.astype(np.float64), num_heads=4, depth=2)
  assert_rel_close(flax_logits(params, tiny_model_config, images), expected)


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_load_checkpoint_files(tiny_model_config, tmp_path, suffix):
  sd, images = make(tiny_model_config)
  if suffix == '.pth':
    # As DeiT ships them: wrapped, with optimizer state and argparse args beside the weights.
    path = os.path.join(FIXTURES, 'deit_tiny.pth')
    stored = convert.read_state_dict(path)
    assert sorted(stored) == sorted(sd)
    for k, v in sd.items():
      np.testing.assert_array_equal(stored[k], v, err_msg=k)   # the fixture holds this model
  else:
    path = str(tmp_path / f'deit{suffix}')
    save_file(sd, path)
  params, info = convert.load_checkpoint(path, tiny_model_config)
  expected = numpy_vit.forward(sd, images.astype(np.float64), num_heads=4, depth=2)
  assert_rel_close(flax_logits(params, tiny_model_config, images), expected)


def test_torch_reader_handles_dtypes_and_views():
  got = convert.read_torch(os.path.join(FIXTURES, 'tensors.pth'))
  with np.load(os.path.join(FIXTURES, 'tensors.npz')) as want:
    assert sorted(got) == sorted(want.files) == ['bf16', 'half', 'long', 'param', 'scalar',
                                                 'slice', 't']
    for k in want.files:
      np.testing.assert_array_equal(np.asarray(got[k], np.float64), want[k], err_msg=k)
  np.testing.assert_array_equal(got['t'], np.arange(24.).reshape(4, 6).T)   # a strided view


def test_vit_jax_npz(tiny_model_config, tmp_path):
  sd, images = make(tiny_model_config)
  # Written by hand in vit_jax layout: q/k/v kernels (D, heads, D/heads), conv HWIO.
  d, h = 32, 4
  npz = {'cls': sd['cls_token'], 'embedding/kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
         'embedding/bias': sd['patch_embed.proj.bias'],
         'Transformer/posembed_input/pos_embedding': sd['pos_embed'],
         'Transformer/encoder_norm/scale': sd['norm.weight'],
         'Transformer/encoder_norm/bias': sd['norm.bias'],
         'head/kernel': sd['head.weight'].T, 'head/bias': sd['head.bias']}
  for i in range(2):
    t, b = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
    qkv_w, qkv_b = sd[t + 'attn.qkv.weight'], sd[t + 'attn.qkv.bias']
    for j, name in enumerate(['query', 'key', 'value']):
      npz[f'{b}MultiHeadDotProductAttention_1/{name}/kernel'] = qkv_w[j * d:(j + 1) * d].T.reshape(d, h, d // h)
      npz[f'{b}MultiHeadDotProductAttention_1/{name}/bias'] = qkv_b[j * d:(j + 1) * d].reshape(h, d // h)
    npz[f'{b}MultiHeadDotProductAttention_1/out/kernel'] = sd[t + 'attn.proj.weight'].T.reshape(h, d // h, d)
    npz[f'{b}MultiHeadDotProductAttention_1/out/bias'] = sd[t + 'attn.proj.bias']
    for src, dst in [('norm1', 'LayerNorm_0'), ('norm2', 'LayerNorm_2')]:
      npz[f'{b}{dst}/scale'], npz[f'{b}{dst}/bias'] = sd[t + src + '.weight'], sd[t + src + '.bias']
    for src, dst in [('fc1', 'Dense_0'), ('fc2', 'Dense_1')]:
      npz[f'{b}MlpBlock_3/{dst}/kernel'] = sd[f'{t}mlp.{src}.weight'].T
      npz[f'{b}MlpBlock_3/{dst}/bias'] = sd[f'{t}mlp.{src}.bias']
  np.savez(tmp_path / 'augreg.npz', **npz)
  params, info = convert.load_checkpoint(str(tmp_path / 'augreg.npz'), tiny_model_config)
  expected = numpy_vit.forward(sd, images.astype(np.float64), num_heads=4, depth=2)
  assert_rel_close(flax_logits(params, tiny_model_config, images), expected)
  assert info['format'] == 'vit_jax' and info['mean'] == (0.5, 0.5, 0.5)


def test_position_embedding_resampled_to_new_grid(tiny_model_config):
  sd, _ = make(tiny_model_config)
  tiny_model_config.image_size = 24  # 6x6 grid, checkpoint has 4x4
  params, _ = convert.from_timm(sd, tiny_model_config)
  pos = params['Transformer']['posembed_input']['pos_embedding']
  assert pos.shape == (1, 1 + 36, 32)
  np.testing.assert_array_equal(pos[:, 0], sd['pos_embed'][:, 0])  # cls row untouched
  # A constant grid stays constant under bilinear resampling.
  sd['pos_embed'][:, 1:] = 0.25
  params, _ = convert.from_timm(sd, tiny_model_config)
  np.testing.assert_allclose(params['Transformer']['posembed_input']['pos_embedding'][:, 1:], 0.25,
                             rtol=1e-6)


def test_mismatch_lists_every_problem(tiny_model_config):
  sd, _ = make(tiny_model_config)
  del sd['blocks.1.norm2.bias']
  sd['blocks.0.ls1.gamma'] = np.ones(32, np.float32)
  sd['head.weight'] = np.zeros((7, 32), np.float32)
  with pytest.raises(convert.CheckpointMismatch) as e:
    convert.from_timm(sd, tiny_model_config)
  msg = str(e.value)
  assert 'missing from checkpoint: Transformer/encoderblock_1/LayerNorm_2/bias' in msg
  assert 'unexpected in checkpoint: blocks.0.ls1.gamma' in msg
  assert 'shape mismatch head.weight -> head/kernel: checkpoint (32, 7), model (32, 5)' in msg


def test_skip_head_for_new_class_count(tiny_model_config):
  sd, _ = make(tiny_model_config)
  sd['head.weight'], sd['head.bias'] = np.zeros((1000, 32), np.float32), np.zeros(1000, np.float32)
  params, info = convert.from_timm(sd, tiny_model_config, skip=('head',))
  assert 'head' not in params and info['skipped'] == ['head']


def test_unknown_format(tiny_model_config, tmp_path):
  with pytest.raises(ValueError, match='unknown checkpoint format'):
    convert.load_checkpoint(str(tmp_path / 'weights.ckpt'), tiny_model_config)


def test_image_checkpoint_initialises_a_video_model(tiny_model_config):
  """The template has the clip's frame axis, and the temporal embedding starts at zero; with one
  frame per clip the video model is then exactly the image model."""
  sd, images = make(tiny_model_config)
  for frames in (3, 1):
    video = tiny_model_config.copy_and_resolve_references()
    video.num_frames = frames
    params, _ = convert.from_timm(sd, video)
    np.testing.assert_array_equal(params['temporal_embedding'], np.zeros((1, frames, 32)))
  assert_rel_close(flax_logits(params, video, images[:, None]),
                   numpy_vit.forward(sd, images.astype(np.float64), num_heads=4, depth=2))
