"""The factorised ViViT (the Eventful paper's video model): the official Eventful code's
checkpoint layout imported and checked against an independent numpy forward written from that
code's description; Eventful on its spatial encoder exact at r = N; the scanned runner equal to
the unrolled model; the budget and threshold changed per step without recompiling; refused
settings."""
import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import configs, convert, flops, methods
from tokensparse.methods.eventful.model import EventfulViT, run_video
from tests import numpy_vit

DIMS = dict(width=32, heads=4, depth=2, temporal_depth=2, mlp=64, tubelet=2, patch=4,
            channels=3, grid=3, frames=8, classes=5)


def official_state_dict(rng, d=DIMS):
  """Random weights in the official layout (scripts/convert/vivit.py's output)."""
  r = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
  w, steps = d['width'], d['frames'] // d['tubelet']
  sd = {'embedding.conv.weight': r(w, d['channels'], d['tubelet'], d['patch'], d['patch']),
        'embedding.conv.bias': r(w), 'classifier.weight': r(d['classes'], w),
        'classifier.bias': r(d['classes'])}
  for part, depth, tokens in (('spatial_model', d['depth'], d['grid'] ** 2 + 1),
                              ('temporal_model', d['temporal_depth'], steps + 1)):
    sd.update({f'{part}.class_token': r(1, 1, w),
               f'{part}.backbone.position_encoding.encoding': r(1, tokens, w),
               f'{part}.layer_norm.weight': 1 + r(w), f'{part}.layer_norm.bias': r(w)})
    for i in range(depth):
      p = f'{part}.backbone.blocks.{i}.'
      sd.update({p + 'input_layer_norm.weight': 1 + r(w), p + 'input_layer_norm.bias': r(w),
                 p + 'qkv.weight': r(3 * w, w), p + 'qkv.bias': r(3 * w),
                 p + 'projection.weight': r(w, w), p + 'projection.bias': r(w),
                 p + 'mlp_layer_norm.weight': 1 + r(w), p + 'mlp_layer_norm.bias': r(w),
                 p + 'mlp_1.weight': r(d['mlp'], w), p + 'mlp_1.bias': r(d['mlp']),
                 p + 'mlp_2.weight': r(w, d['mlp']), p + 'mlp_2.bias': r(w)})
  return sd


def reference_forward(sd, clips, d=DIMS):
  """Numpy float64 forward of the official FactorizedViViT (one view, logits before its
  softmax): Conv3d tubelets, per time step the spatial sub-model (class token first, then the
  position encoding, blocks, layer norm, class token out), then the temporal sub-model."""
  sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  b, t, h, w_, c = clips.shape
  tt, p = d['tubelet'], d['patch']
  x = clips.astype(np.float64).reshape(b, t // tt, tt, h // p, p, w_ // p, p, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, t // tt, (h // p) * (w_ // p), -1)
  kernel = sd['embedding.conv.weight'].reshape(d['width'], -1)      # [D, C*t*p*p]
  x = x @ kernel.T + sd['embedding.conv.bias']                      # [B, T', N, D]

  def block(prefix, x):
    g = lambda n: sd[prefix + n]
    y = numpy_vit.layer_norm(x, g('input_layer_norm.weight'), g('input_layer_norm.bias'))
    n = x.shape[1]
    qkv = (y @ g('qkv.weight').T + g('qkv.bias')).reshape(x.shape[0], n, 3, d['heads'], -1)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    a = numpy_vit.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]))
    o = (a @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], n, -1)
    x = x + o @ g('projection.weight').T + g('projection.bias')
    y = numpy_vit.layer_norm(x, g('mlp_layer_norm.weight'), g('mlp_layer_norm.bias'))
    y = numpy_vit.gelu(y @ g('mlp_1.weight').T + g('mlp_1.bias'))
    return x + y @ g('mlp_2.weight').T + g('mlp_2.bias')

  def sub_model(part, depth, x):
    cls = np.broadcast_to(sd[f'{part}.class_token'], (x.shape[0], 1, x.shape[-1]))
    x = np.concatenate([cls, x], 1) + sd[f'{part}.backbone.position_encoding.encoding']
    for i in range(depth):
      x = block(f'{part}.backbone.blocks.{i}.', x)
    x = numpy_vit.layer_norm(x, sd[f'{part}.layer_norm.weight'], sd[f'{part}.layer_norm.bias'])
    return x[:, 0]

  steps = np.stack([sub_model('spatial_model', d['depth'], x[:, s])
                    for s in range(x.shape[1])], 1)
  out = sub_model('temporal_model', d['temporal_depth'], steps)
  return out @ sd['classifier.weight'].T + sd['classifier.bias']


def model_config(name='vit', d=DIMS, **fields):
  c = ml_collections.ConfigDict(dict(
      name=name, num_classes=d['classes'], image_size=d['grid'] * d['patch'],
      patch_size=d['patch'], width=d['width'], depth=d['depth'], num_heads=d['heads'],
      mlp_dim=d['mlp'], num_frames=d['frames'], tubelet=d['tubelet'], video='factorised',
      temporal_depth=d['temporal_depth'], dtype='float32'))
  if name == 'eventful':
    c.eventful = ml_collections.ConfigDict(dict(capacity=0, variant='full', threshold=None))
    c.eventful.update(fields)
  return c


def setup(seed=0):
  rng = np.random.default_rng(seed)
  sd = official_state_dict(rng)
  clips = rng.standard_normal((2, 8, 12, 12, 3)).astype(np.float32)
  return sd, clips


def test_official_layout_imports_and_matches_the_reference_forward():
  sd, clips = setup()
  cfg = model_config()
  configs.validate_model(ml_collections.ConfigDict({'model': cfg}))
  params, info = convert.from_timm(sd, cfg)
  assert info['format'] == 'vivit' and info['mean'] == (0.45, 0.45, 0.45)
  logits, aux = methods.build(cfg).apply({'params': params}, jnp.asarray(clips))
  np.testing.assert_allclose(logits, reference_forward(sd, clips), rtol=1e-4, atol=1e-4)
  assert aux['step_features'].shape == (2, 4, 32)


def test_a_checkpoint_with_missing_tensors_is_named():
  sd, _ = setup()
  del sd['temporal_model.backbone.blocks.1.qkv.weight']
  with pytest.raises(convert.CheckpointMismatch,
                     match='missing from checkpoint: TemporalTransformer/encoderblock_1/'
                           'MultiHeadDotProductAttention_1/key/kernel'):
    convert.from_timm(sd, model_config())


@pytest.mark.parametrize('variant', ['tokenwise', 'sparse_qk', 'full'])
def test_eventful_vivit_at_r_equal_n_is_the_dense_vivit(variant):
  sd, clips = setup()
  params, _ = convert.from_timm(sd, model_config())
  dense = methods.build(model_config()).apply({'params': params}, jnp.asarray(clips))[0]
  model = methods.build(model_config('eventful', capacity=0, variant=variant))
  out = jax.jit(lambda v, c: run_video(model, v, c))({'params': params}, jnp.asarray(clips))
  np.testing.assert_allclose(out['logits'], dense, rtol=1e-4, atol=1e-4)
  assert bool(out['updated'].all())
  # The unrolled model call and the scanned runner agree at a real budget too.
  small = methods.build(model_config('eventful', capacity=3, variant=variant))
  scanned = run_video(small, {'params': params}, jnp.asarray(clips))
  unrolled, aux = small.apply({'params': params}, jnp.asarray(clips))
  np.testing.assert_allclose(scanned['logits'], unrolled, rtol=1e-5, atol=1e-5)
  assert int(scanned['updated'][:, 1:].sum(-1).max()) <= 3
  np.testing.assert_array_equal(scanned['updated'], aux['updated'])


def test_threshold_zero_is_exact_for_tokenwise_and_sparse_qk():
  sd, clips = setup()
  params, _ = convert.from_timm(sd, model_config())
  dense = methods.build(model_config()).apply({'params': params}, jnp.asarray(clips))[0]
  for variant in ('tokenwise', 'sparse_qk'):
    model = methods.build(model_config('eventful', capacity=0, variant=variant, threshold=0.0))
    out = run_video(model, {'params': params}, jnp.asarray(clips))
    np.testing.assert_allclose(out['logits'], dense, rtol=1e-4, atol=1e-4)


def test_budget_and_threshold_change_per_step_without_recompiling():
  sd, clips = setup()
  params, _ = convert.from_timm(sd, model_config())
  model = methods.build(model_config('eventful', capacity=6, variant='full'))
  chex.clear_trace_counter()
  fn = jax.jit(chex.assert_max_traces(
      lambda v, c, r, h: run_video(model, v, c, budget=r, threshold=h), n=1))
  seen = []
  for budget, threshold in (([6, 2, 4], [0.0, 0.0, 0.0]), ([1, 1, 1], [0.0, 0.0, 0.0]),
                            ([6, 6, 6], [0.0, 1e9, 0.0])):
    out = fn({'params': params}, jnp.asarray(clips), jnp.asarray(budget), jnp.asarray(threshold))
    seen.append(np.asarray(out['updated'][:, 1:].sum(-1).max(-1)))     # [B, T'-1]
  assert (seen[0] <= np.array([6, 2, 4])).all() and (seen[1] <= 1).all()
  assert (seen[2][:, 1] == 0).all()            # an infinite threshold recomputes nothing


def test_clip_macs_count_one_dense_step_then_eventful_steps():
  model = methods.build(model_config('eventful', capacity=3))
  dense = methods.build(model_config())
  counts = methods.macs(model, 3)
  step = flops.vit_macs(dense, 3)
  per_step = sum(v for k, v in step.items()
                 if k not in ('total', 'head') and not k.startswith('temporal_')) // 4
  assert counts['first_step'] == per_step
  later = methods.get('eventful').macs(model, 3)['later_steps']
  from tokensparse.methods.eventful import flops as ev_flops
  assert later == 3 * ev_flops.eventful_macs(model, channels=3)['total']
  assert counts['total'] < step['total']
  assert counts['temporal_mlp'] == step['temporal_mlp'] and counts['head'] == step['head']


@pytest.mark.parametrize('field,value,message', [
    ('video', 'factorized', "model.video='factorized': expected 'joint', 'factorised' or"),
    ('temporal_depth', 0, "model.temporal_depth=0: model.video='factorised' needs temporal"),
    ('tubelet', 3, 'model.num_frames=8: not divisible by model.tubelet=3'),
    ('num_frames', 0, "model.video='factorised': a video model needs model.num_frames"),
])
def test_bad_video_settings_are_refused_naming_the_field(field, value, message):
  cfg = model_config()
  cfg[field] = value
  with pytest.raises(ValueError) as e:
    configs.validate_model(ml_collections.ConfigDict({'model': cfg}))
  assert message in str(e.value)


def test_wrong_clip_length_is_named():
  model = methods.build(model_config())
  with pytest.raises(ValueError, match=r'clips have shape \(1, 6, 12, 12, 3\); this model '
                                       r'expects \[batch, 8, 12, 12, channels\]'):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 12, 12, 3)))


def test_an_image_checkpoint_starts_the_spatial_encoder_frame_by_frame():
  """Central-frame inflation: an image model's patch kernel in the middle frame of each
  tubelet, so the spatial encoder embeds each tubelet as that frame."""
  from tokensparse import functional as F
  k = np.random.default_rng(0).standard_normal((4, 4, 3, 8)).astype(np.float32)
  t = np.asarray(F.inflate_kernel(jnp.asarray(k), 3))
  assert t.shape == (3, 4, 4, 3, 8)
  np.testing.assert_array_equal(t[1], k)
  assert not t[0].any() and not t[2].any()


# ----------------------------------------------------------------------------- end to end
def tiny_actions(tmp_path, **model):
  from tests import fake_data
  c = fake_data.tiny_config(tmp_path)
  with c.unlocked():
    c.model.update(num_classes=6, image_size=35, num_frames=4, tubelet=2, video='factorised',
                   temporal_depth=1, **model)
    c.data.update(name='fashion_mnist_actions/tiny', augment='none', flip=False)
    c.eval_batch_size = 8
  return c


def test_train_then_temporal_only_fine_tuning_on_a_cache(tmp_path):
  """The ViViT trains with the ordinary trainer; the temporal tool caches the eventful
  spatial features once per policy, tunes only the temporal encoder and head, and writes a
  work directory whose end-to-end Eventful logits equal the temporal encoder on the cache."""
  from tokensparse import inference
  from tokensparse.methods.eventful import temporal
  from tokensparse.train import loop
  dense = str(tmp_path / 'vivit')
  loop.train_and_evaluate(tiny_actions(tmp_path), dense)
  recipe = tiny_actions(tmp_path)
  with recipe.unlocked():
    configs.use_method(recipe, 'eventful', capacity=10)
    recipe.init_from.path = dense
    recipe.num_epochs = 2
  out = str(tmp_path / 'tuned')
  summary = temporal.run(recipe, out)
  assert summary['capacity'] == 10 and 0 <= summary['accuracy_fine_tuned'] <= 1
  assert summary['macs_per_clip'] < methods.macs(methods.build(
      checkpoint_config(dense).model), 1)['total']
  cache = np.load(f'{out}/features/test.npz')
  assert cache['features'].shape == (24, 2, 32)
  predictor = inference.load(out)
  assert predictor.config.model.name == 'eventful' and predictor.model.capacity == 10
  clips, labels = load_test_clips(tmp_path, 8)
  end_to_end = np.asarray(predictor.predict(clips))
  cached = np.asarray(predictor.model.apply(predictor.variables, jnp.asarray(
      cache['features'][:8]), method=EventfulViT.temporal)[0])
  np.testing.assert_allclose(end_to_end, cached, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(labels, cache['labels'][:8])
  # Only the temporal encoder and head moved.
  from tokensparse import checkpoint
  _, before, _ = checkpoint.load_variables(dense)
  after = predictor.variables['params']
  jax.tree.map(np.testing.assert_array_equal, after['Transformer'], before['params']['Transformer'])
  assert not np.array_equal(after['head']['kernel'], before['params']['head']['kernel'])
  with pytest.raises(ValueError, match='already holds a checkpoint'):
    temporal.run(recipe, out)
  from tokensparse import evaluate, viz
  result = evaluate.evaluate(out, batch_size=8)               # an Eventful ViViT on its clips
  assert result['examples'] == 24 and result['model'] == 'eventful'
  assert result['accuracy'] == pytest.approx(summary['accuracy_fine_tuned'])
  assert result['gmacs_per_input'] * 1e9 == pytest.approx(summary['macs_per_clip'])
  viz.main(['--workdir', out, '--out', str(tmp_path / 'fig')])
  assert (tmp_path / 'fig' / 'eventful' / 'eventful_updates.png').exists()


def checkpoint_config(workdir):
  from tokensparse import checkpoint
  return checkpoint.load_variables(workdir)[0]


def load_test_clips(tmp_path, n):
  from tokensparse.data import fashion_mnist_actions
  return fashion_mnist_actions.load_clips(n, data_dir=str(tmp_path / 'tfds'), config='tiny')


def test_budget_for_a_macs_target_and_a_threshold_controller():
  from tokensparse.methods.eventful.model import budget_for, macs_line, run_video_controlled
  from tokensparse.methods.eventful import flops as ev_flops
  d = dict(DIMS, frames=16, tubelet=1)
  cfg = model_config('eventful', d, capacity=0)
  model = methods.build(cfg)
  a, b = macs_line(model, 3)
  for r in (1, 4, 9):
    assert ev_flops.eventful_macs(model, r, 3)['total'] == a + b * r
  targets = jnp.array([a + b * 4, a + b * 4.5, a + b * 100])
  np.testing.assert_array_equal(budget_for(model, targets, 3), [4, 4, model.num_tokens])
  # A stream of correlated clips: the controller's threshold carries from clip to clip and
  # brings the counted MACs per step to the target.
  rng = np.random.default_rng(0)
  walk = np.cumsum(rng.standard_normal((2, 64, 12, 12, 3)).astype(np.float32) * 0.3, axis=1)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 12, 12, 3)))
  target = jnp.full((15,), a + b * 4.0)
  fn = jax.jit(lambda v, c, h: run_video_controlled(model, v, c, target, h))
  h, errors = jnp.ones((2,)), []
  for clip in range(4):
    out = fn(params, jnp.asarray(walk[:, clip * 16:(clip + 1) * 16]), h)
    h = out['next_threshold']
    tokens = (np.asarray(out['macs']) - a) / b                # recomputed per gate and step
    errors.append(abs(tokens.mean() / 4.0 - 1))
  assert errors[-1] < 0.1 and errors[-1] < errors[0], errors   # the average is held
  free = jax.jit(lambda v, c: run_video(model, v, c))(params, jnp.asarray(walk[:, :16]))
  assert free['updated'][:, 1:].sum(-1).mean() > 8            # without control: far more
  assert out['logits'].shape == (2, 5) and out['threshold'].shape == (2, 15)
