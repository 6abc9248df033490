"""TokenLearner / TokenFuser: pooling math against numpy, identity at init, shapes, video."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import configs, methods
from tokensparse import functional as F
from tokensparse.methods.token_learner import flops
from tokensparse.methods.token_learner.model import TokenFuser, TokenLearner, TokenLearnerViT
from tokensparse.backbone.vit import ViT, parse_variant
from tokensparse.train import loop
from tests import fake_data

KW = dict(num_classes=5, image_size=16, patch_size=4, width=32, depth=4, num_heads=4, mlp_dim=64)


# ----------------------------------------------------------------------------- numpy reference
def np_layernorm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def np_gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def np_mlp(x, p):
  h = np_gelu_tanh(x @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
  return h @ p['Dense_1']['kernel'] + p['Dense_1']['bias']


def np_conv3x3_same(x, kernel):
  """x [B, h, w, C], kernel [3, 3, C, S] -> [B, h, w, S] (cross-correlation, zero padding)."""
  b, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for dy in range(3):
    for dx in range(3):
      out += padded[:, dy:dy + h, dx:dx + w] @ kernel[dy, dx]
  return out


def np_token_learner(x, p, version, grid=None, reduce='sum'):
  """The paper's / Scenic's TokenLearner in float64 numpy. x [B, N, D] -> [B, S, D]."""
  y = np_layernorm(x, p['norm'])
  if version == 'v1.1':
    logits = np_mlp(y, p['token_masking'])                      # [B, N, S]
    w = np.exp(logits - logits.max(1, keepdims=True))
    w = w / w.sum(1, keepdims=True)                              # softmax over positions
  else:
    b, n, d = x.shape
    y = y.reshape(b, *grid, d)
    for i in range(4):
      y = np_conv3x3_same(y, p[f'Conv_{i}']['kernel'])
      y = np_gelu_tanh(y) if i < 3 else y
    w = 1 / (1 + np.exp(-y.reshape(b, n, -1)))
  out = np.einsum('bns,bnd->bsd', w, x)
  return out / x.shape[1] if reduce == 'mean' else out


def _np_params(variables):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), variables['params'])


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize('version,reduce', [('v1.1', 'sum'), ('v1.0', 'sum'), ('v1.0', 'mean')])
def test_pooling_matches_numpy(version, reduce):
  grid = (3, 5)  # not square: any spatial size
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 15, 24)) * 2 + 0.5
  module = TokenLearner(num_tokens=6, version=version, bottleneck=16, reduce=reduce)
  variables = module.init(jax.random.PRNGKey(1), x, grid)
  tokens, weights = module.apply(variables, x, grid)
  assert tokens.shape == (2, 6, 24) and weights.shape == (2, 6, 15)
  want = np_token_learner(np.asarray(x, np.float64), _np_params(variables), version, grid, reduce)
  np.testing.assert_allclose(tokens, want, rtol=2e-5, atol=2e-5)
  if version == 'v1.1':  # softmax weights: every learned token is a convex mix of the inputs
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize('n', [1, 7, 64, 197])
def test_v11_any_number_of_positions(n):
  x = jnp.ones((3, n, 16))
  module = TokenLearner(num_tokens=8)
  tokens, weights = module.apply(module.init(jax.random.PRNGKey(0), x), x)
  assert tokens.shape == (3, 8, 16) and weights.shape == (3, 8, n)


def test_v10_needs_the_grid():
  x = jnp.ones((1, 12, 8))
  module = TokenLearner(num_tokens=2, version='v1.0')
  with pytest.raises(ValueError, match=r'needs the token grid: got \(3, 3\) for 12 tokens'):
    module.init(jax.random.PRNGKey(0), x, (3, 3))


def test_fuser_is_zero_at_init_and_mixes_after_training():
  tokens = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 16))
  original = jax.random.normal(jax.random.PRNGKey(1), (2, 25, 16))
  fuser = TokenFuser(bottleneck=8)
  variables = fuser.init(jax.random.PRNGKey(2), tokens, original)
  out = fuser.apply(variables, tokens, original)
  assert out.shape == (2, 25, 16)
  np.testing.assert_array_equal(out, 0.0)
  # Once the zero-initialised token mixing has moved, the update is no longer zero.
  moved = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 0.1 if 'token_mix' in jax.tree_util.keystr(path) else v, variables)
  assert float(jnp.abs(fuser.apply(moved, tokens, original)).max()) > 1e-3


def test_fuser_model_is_identity_after_the_learner_layer_at_init():
  """learner -> block -> fuser + residual leaves the tokens unchanged at initialisation, so the
  TokenFuser ViT equals the dense ViT truncated before `learner_layer` (with its norm/head)."""
  kw = dict(KW, classifier='gap')
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  model = TokenLearnerViT(**kw, learner_layer=2, num_learned_tokens=4, fuser=True)
  params = model.init(jax.random.PRNGKey(1), x)['params']
  logits, _ = model.apply({'params': params}, x)
  short = ViT(**dict(kw, depth=2))
  keep = {'Transformer': {k: v for k, v in params['Transformer'].items()
                          if k not in ('encoderblock_2', 'encoderblock_3')}}
  short_params = {**{k: v for k, v in params.items() if k in ('embedding', 'head')}, **keep}
  want, _ = short.apply({'params': short_params}, x)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('classifier', ['token', 'gap'])
def test_later_blocks_see_only_the_learned_tokens(classifier):
  model = TokenLearnerViT(**KW, classifier=classifier, learner_layer=2, num_learned_tokens=3)
  x = jnp.ones((2, 16, 16, 1))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits, aux = model.apply(variables, x)
  prefix = 1 if classifier == 'token' else 0
  assert logits.shape == (2, 5)
  assert aux['tokens'].shape == (2, prefix + 3, 32)
  assert aux['learner_weights'].shape == (2, 3, 16)


def test_video_learner_keeps_time_steps_separate():
  """The learner runs per frame: changing frame 1 changes only frame 1's learned tokens, and
  each frame's tokens equal the learner applied to that frame alone."""
  t, n, d = 3, 16, 32
  model = TokenLearnerViT(**KW, num_frames=t, learner_layer=1, num_learned_tokens=2)
  clip = jnp.zeros((1, t, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(0), clip)['params']
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 1 + t * n, d))
  learn = lambda m, x: m.learn(m.token_learner, x, True)[0]
  out = model.apply({'params': params}, x, method=learn)
  assert out.shape == (2, 1 + t * 2, d)
  np.testing.assert_array_equal(out[:, 0], x[:, 0])  # the class token bypasses the learner
  alone = TokenLearner(2).apply({'params': params['token_learner']},
                                x[:, 1:].reshape(2, t, n, d)[:, 1])[0]
  np.testing.assert_allclose(out[:, 1:].reshape(2, t, 2, d)[:, 1], alone, rtol=1e-5, atol=1e-6)
  x2 = x.at[:, 1 + n:1 + 2 * n].add(1.0)  # perturb frame 1 only
  out2 = model.apply({'params': params}, x2, method=learn)[:, 1:].reshape(2, t, 2, d)
  out = out[:, 1:].reshape(2, t, 2, d)
  np.testing.assert_array_equal(out2[:, 0], out[:, 0])
  np.testing.assert_array_equal(out2[:, 2], out[:, 2])
  assert float(jnp.abs(out2[:, 1] - out[:, 1]).max()) > 1e-3


def test_frame_reshapes_round_trip():
  x = jnp.arange(2 * 3 * 4 * 5.0).reshape(2, 12, 5)
  per_frame = F.split_frames(x, 3)
  assert per_frame.shape == (6, 4, 5)
  np.testing.assert_array_equal(per_frame[4], x[1, 4:8])  # clip 1, frame 1
  np.testing.assert_array_equal(F.merge_frames(per_frame, 3), x)


def test_video_vit_with_one_frame_equals_the_image_model():
  image = ViT(**KW)
  video = ViT(**KW, num_frames=1)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  params = image.init(jax.random.PRNGKey(1), x)['params']
  video_params = video.init(jax.random.PRNGKey(1), x[:, None])['params']
  np.testing.assert_array_equal(video_params['temporal_embedding'], 0.0)
  got, _ = video.apply({'params': {**params, 'temporal_embedding':
                                   video_params['temporal_embedding']}}, x[:, None])
  want, _ = image.apply({'params': params}, x)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_video_vit_refuses_images():
  video = ViT(**KW, num_frames=4)
  with pytest.raises(ValueError, match=r'expects \[batch, 4, 16, 16, channels\]'):
    video.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)))


def test_flops_follow_the_token_counts():
  """S/16 at 224 px, 8 tokens before block 6, class token kept: by hand."""
  d, n, s = 384, 196, 8
  block = lambda t: 12 * t * d * d + 2 * t * t * d    # qkv+proj 4TD^2, MLP 8TD^2, QK^T+AV
  learner = n * (d * 64 + 64 * s) + s * n * d
  want = n * 16 * 16 * 3 * d + 6 * block(1 + n) + 6 * block(1 + s) + learner + d * 1000
  model = TokenLearnerViT(num_classes=1000, image_size=224, **parse_variant('S/16'),
                          learner_layer=6, num_learned_tokens=s)
  got = flops.token_learner_macs(model)
  assert got['total'] == want
  assert got['token_learner'] == learner
  dense = flops.vit_macs(ViT(num_classes=1000, image_size=224, **parse_variant('S/16')))
  assert 0.5 < got['total'] / dense['total'] < 0.55


def test_video_flops_count_every_frame():
  model = TokenLearnerViT(**KW, num_frames=3, learner_layer=2, num_learned_tokens=2)
  per_frame = TokenLearnerViT(**KW, learner_layer=2, num_learned_tokens=2)
  got, one = flops.token_learner_macs(model, 1), flops.token_learner_macs(per_frame, 1)
  assert got['patch_embed'] == 3 * one['patch_embed']
  assert got['token_learner'] == 3 * one['token_learner']


def _tl_config(**tl):
  c = configs.base()
  with c.unlocked():
    c.model.update(name='token_learner', num_classes=10, image_size=28, patch_size=7, width=32,
                   depth=4, num_heads=4, mlp_dim=64)
    c.model.token_learner = ml_collections.ConfigDict(
        dict(dict(num_tokens=8, at=0.5, version='v1.1', reduce='sum', fuser=False), **tl))
  return c


@pytest.mark.parametrize('tl,message', [
    (dict(at=1.0), r'model.token_learner.at=1.0: must be a fraction of the depth in \(0, 1\)'),
    (dict(at=0.1), r'model.token_learner.at=0.1: puts the learner before block 0'),
    (dict(num_tokens=17), r'model.token_learner.num_tokens=17: .* the 16 patch positions'),
    (dict(version='v2'), r"model.token_learner.version='v2'"),
])
def test_bad_settings_name_the_field(tl, message):
  with pytest.raises(ValueError, match=message):
    configs.validate(_tl_config(**tl))


def test_build_places_the_learner_at_the_fraction():
  c = _tl_config(at=0.75)
  assert methods.build(c.model).learner_layer == 3
  configs.validate(c)


def test_trains_from_a_dense_checkpoint(tmp_path):
  """The ordinary trainer runs a TokenLearner model initialised from a dense work directory."""
  dense = fake_data.tiny_config(tmp_path)
  loop.train_and_evaluate(dense, str(tmp_path / 'dense'))
  tl = fake_data.tiny_config(tmp_path, **{'model.name': 'token_learner',
                                          'init_from.path': str(tmp_path / 'dense')})
  with tl.unlocked():
    tl.model.token_learner = ml_collections.ConfigDict(dict(num_tokens=4, at=0.5))
  result = loop.train_and_evaluate(tl, str(tmp_path / 'tl'))
  assert np.isfinite(result['loss'])
