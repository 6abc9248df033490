"""DynamicViT: masked softmax, keep decisions, train/inference agreement, losses, import."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import configs, convert, losses, methods, objectives
from tokensparse.methods.dynamic_vit import flops, objective
from tokensparse.methods.dynamic_vit import ops as F
from tokensparse.methods.dynamic_vit.model import DynamicViT, PooledViT, keep_counts
from tokensparse.backbone.vit import ViT, parse_variant
from tests import numpy_vit

KW = dict(num_classes=5, image_size=32, patch_size=4, width=32, depth=4, num_heads=4, mlp_dim=64)


def reference_softmax_with_policy(attn, policy, eps=1e-6):
  """Transcription of the reference PyTorch function in numpy (float64)."""
  b, n = policy.shape
  attn_policy = policy.reshape(b, 1, 1, n)
  eye = np.eye(n).reshape(1, 1, n, n)
  attn_policy = attn_policy + (1.0 - attn_policy) * eye
  attn = attn - attn.max(-1, keepdims=True)
  attn = np.exp(attn) * attn_policy
  return (attn + eps / n) / (attn.sum(-1, keepdims=True) + eps)


def test_softmax_with_policy_matches_reference():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 3, 7, 7)) * 3
  policy = (rng.random((2, 7)) > 0.5).astype(np.float64)
  policy[:, 0] = 1
  got = F.softmax_with_policy(jnp.asarray(logits, jnp.float32), jnp.asarray(policy, jnp.float32))
  np.testing.assert_allclose(got, reference_softmax_with_policy(logits, policy), rtol=2e-6, atol=1e-7)
  # Dropped keys get (almost) no weight; a dropped token still attends to itself.
  dropped = np.where(policy[0] == 0)[0]
  if len(dropped):
    assert float(got[0, :, 0, dropped].max()) < 1e-5
    j = dropped[0]
    assert float(got[0, 0, j, j]) > 1e-3


def _model(**overrides):
  return DynamicViT(**{**KW, 'keep_ratio': 0.7, 'prune_layers': (1, 2, 3), **overrides})


def _init(model, x):
  return model.init({'params': jax.random.PRNGKey(0), 'gumbel': jax.random.PRNGKey(1)}, x,
                    train=True)


def test_all_ones_policy_gives_the_dense_model():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  model = _model()
  params = _init(model, x)
  ones = [jnp.ones((2, 64))] * 3
  logits, _ = model.apply(params, x, train=True, masks=ones)
  dense = ViT(**KW)
  dense_params = {'params': {k: v for k, v in params['params'].items() if not k.startswith('predictor_')}}
  dense_logits, _ = dense.apply(dense_params, x)
  np.testing.assert_allclose(logits, dense_logits, rtol=1e-5, atol=1e-6)


def test_training_with_inference_kept_sets_equals_inference():
  """Masking dropped keys (training) and removing the tokens (inference) agree when the kept
  sets coincide."""
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 32, 32, 3))
  model = _model()
  params = _init(model, x)
  logits, aux = model.apply(params, x)
  assert [k.shape for k in aux['kept_indices']] == [(3, 44), (3, 31), (3, 21)]
  masks = []
  for idx in aux['kept_indices']:
    m = np.zeros((3, 64), np.float32)
    np.put_along_axis(m, np.asarray(idx), 1.0, axis=1)
    masks.append(jnp.asarray(m))
  train_logits, train_aux = model.apply(params, x, train=True, masks=masks)
  np.testing.assert_allclose(train_logits, logits, rtol=1e-4, atol=1e-5)
  # The final kept tokens are the same vectors, in score order vs position order.
  kept = np.asarray(aux['kept_indices'][-1])
  t_tokens = np.take_along_axis(np.asarray(train_aux['tokens'][:, 1:]), kept[..., None], axis=1)
  np.testing.assert_allclose(t_tokens, aux['tokens'][:, 1:], rtol=1e-4, atol=1e-4)


def test_deterministic_training_mode_equals_inference_when_decisions_match():
  """Without Gumbel noise the predictors' argmax decisions are used; where they keep exactly
  the top-k tokens at every stage the two modes agree."""
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 32, 3))
  model = _model(gumbel_noise=False, keep_ratio=1.0)  # keep all: both modes keep every token
  params = _init(model, x)
  # Force every predictor to say "keep" (bias on column 0).
  p = jax.tree.map(lambda a: a, params)
  for s in range(3):
    p['params'][f'predictor_{s}']['out_2']['bias'] = jnp.array([10.0, -10.0])
  a, _ = model.apply(p, x)
  b, aux = model.apply(p, x, train=True)
  assert all(float(m.min()) == 1.0 for m in aux['masks'])
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_gumbel_decision_is_hard_with_soft_gradient():
  log_probs = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(0), (4, 50, 2)), -1)
  d = F.gumbel_keep_decision(log_probs, jax.random.PRNGKey(1))
  assert set(np.unique(np.asarray(d)).tolist()) <= {0.0, 1.0}
  g = jax.grad(lambda lp: F.gumbel_keep_decision(lp, jax.random.PRNGKey(1)).sum())(log_probs)
  assert float(jnp.abs(g).sum()) > 0  # straight-through: the soft sample's gradient flows
  # Keep probability near 1 -> kept almost always.
  sure = jnp.log(jnp.array([[[1 - 1e-6, 1e-6]]] * 1000))
  assert float(F.gumbel_keep_decision(sure, jax.random.PRNGKey(2)).mean()) > 0.99


def test_masks_are_cumulative_in_training():
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 32, 32, 3))
  model = _model()
  params = _init(model, x)
  _, aux = model.apply(params, x, train=True, rngs={'gumbel': jax.random.PRNGKey(5)})
  m = [np.asarray(a) for a in aux['masks']]
  assert np.all(m[1] <= m[0]) and np.all(m[2] <= m[1])  # a dropped token stays dropped


def test_keep_counts_for_any_grid():
  assert keep_counts(196, 0.7, 3) == (137, 96, 67)   # the reference's truncation
  assert keep_counts(64, 0.7, 3) == (44, 31, 21)
  assert keep_counts(576, 0.7, 3) == (403, 282, 197)  # 384 px, not hard-coded 14x14


def test_losses_against_hand_values():
  masks = [jnp.array([[1., 1., 0., 0.]]), jnp.array([[1., 0., 0., 0.]])]
  np.testing.assert_allclose(objective.keep_ratio_loss(masks, [0.7, 0.49]),
                             [((0.5 - 0.7) ** 2 + (0.25 - 0.49) ** 2) / 2], rtol=1e-6)
  s, t = jnp.array([[1.0, 2.0, 0.5]]), jnp.array([[0.2, 0.1, 3.0]])
  ps, pt = np.exp(s) / np.exp(s).sum(), np.exp(t) / np.exp(t).sum()
  np.testing.assert_allclose(losses.kl_to_teacher(s, t), [(pt * np.log(pt / ps)).sum()], rtol=1e-5)
  a, b = jnp.ones((1, 3, 2)), jnp.zeros((1, 3, 2))
  assert float(objective.kept_token_mse(a, b, jnp.array([[1., 0., 1.]]))) == 1.0
  assert float(objective.kept_token_mse(a, b, jnp.zeros((1, 3)))) == 0.0


def test_official_checkpoint_import(tiny_model_config):
  cfg = ml_collections.ConfigDict({**tiny_model_config.to_dict(), 'name': 'dynamic_vit',
                                   'dynamic_vit': {'keep_ratio': 0.7, 'prune_layers': (1,)}})
  rng = np.random.default_rng(0)
  sd = numpy_vit.random_timm_state_dict(rng, width=32, depth=2, num_heads=4, mlp_dim=64, patch=4,
                                        channels=3, grid=4, num_classes=5)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  pre = 'score_predictor.0.'
  sd.update({pre + 'in_conv.0.weight': r(32), pre + 'in_conv.0.bias': r(32),
             pre + 'in_conv.1.weight': r(32, 32), pre + 'in_conv.1.bias': r(32),
             pre + 'out_conv.0.weight': r(16, 32), pre + 'out_conv.0.bias': r(16),
             pre + 'out_conv.2.weight': r(8, 16), pre + 'out_conv.2.bias': r(8),
             pre + 'out_conv.4.weight': r(2, 8), pre + 'out_conv.4.bias': r(2)})
  params, _ = convert.from_timm({'model': sd}, cfg)
  p = params['predictor_0']
  np.testing.assert_array_equal(p['in_dense']['kernel'], sd[pre + 'in_conv.1.weight'].T)
  np.testing.assert_array_equal(p['out_2']['kernel'], sd[pre + 'out_conv.4.weight'].T)
  np.testing.assert_array_equal(p['in_norm']['scale'], sd[pre + 'in_conv.0.weight'])
  # The predictor reproduces a numpy evaluation of the reference PredictorLG.
  model = methods.build(cfg)
  x = rng.standard_normal((1, 16, 32)).astype(np.float32)
  mask = np.ones((1, 16), np.float32)
  got = model.apply({'params': params}, jnp.asarray(x), jnp.asarray(mask),
                    method=lambda m, x, k: m.predictor_0(x, k))
  g = lambda n: sd[pre + n]
  h = numpy_vit.gelu(numpy_vit.layer_norm(x, g('in_conv.0.weight'), g('in_conv.0.bias'), 1e-5)
                     @ g('in_conv.1.weight').T + g('in_conv.1.bias'))
  h = np.concatenate([h[..., :16], np.broadcast_to(h[..., 16:].mean(1, keepdims=True), (1, 16, 16))], -1)
  h = numpy_vit.gelu(h @ g('out_conv.0.weight').T + g('out_conv.0.bias'))
  h = numpy_vit.gelu(h @ g('out_conv.2.weight').T + g('out_conv.2.bias'))
  z = h @ g('out_conv.4.weight').T + g('out_conv.4.bias')
  expected = z - np.log(np.exp(z).sum(-1, keepdims=True))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_deit_s_flops():
  m = DynamicViT(num_classes=1000, image_size=224, keep_ratio=0.7, **parse_variant('S/16'))
  c = flops.dynamic_vit_macs(m)
  assert m.counts == (137, 96, 67)
  assert abs(c['total'] / 1e9 - 2.98) < 0.01 and abs(c['predictors'] / 1e9 - 0.103) < 0.001


def test_one_trace_per_mode():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  model = _model()
  params = _init(model, x)

  def infer(p, x):
    return model.apply(p, x)[0]

  def train(p, x, r):
    return model.apply(p, x, train=True, rngs={'gumbel': r})[0]
  infer_j = jax.jit(chex.assert_max_traces(infer, n=1))
  train_j = jax.jit(chex.assert_max_traces(train, n=1))
  for i in range(3):
    infer_j(params, x + i)
    train_j(params, x + i, jax.random.PRNGKey(i))


def test_static_selection_is_input_independent():
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
  model = _model(selector='static')
  params = _init(model, x)
  params['params']['static_scores_0'] = jnp.arange(64.0)
  _, aux = model.apply(params, x)
  idx = np.asarray(aux['kept_indices'][0])
  assert (idx == idx[0]).all() and sorted(idx[0].tolist()) == list(range(20, 64))


def test_pooling_baseline_shapes():
  x = jnp.ones((2, 32, 32, 3))
  model = PooledViT(**KW, pool_layer=2)
  params = model.init(jax.random.PRNGKey(0), x)
  logits, aux = model.apply(params, x)
  assert logits.shape == (2, 5) and aux['tokens'].shape == (2, 1 + 16, 32)


@pytest.mark.parametrize('field,value,message', [
    ('keep_ratio', 1.5, 'model.dynamic_vit.keep_ratio=1.5: must be in (0, 1]'),
    ('prune_layers', (4, 2), 'model.dynamic_vit.prune_layers=(4, 2): must be increasing'),
    ('keep_ratio', 0.01, 'every stage must keep at least one'),
    ('selector', 'random', "model.dynamic_vit.selector='random': expected 'predictor'"),
])
def test_config_errors_name_the_field(field, value, message):
  import importlib.util
  spec = importlib.util.spec_from_file_location('c', 'configs/dynamic_vit/fashion_mnist_canvas.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  with config.unlocked():
    config.model.dynamic_vit[field] = value
  with pytest.raises(ValueError) as e:
    configs.validate(config)
  assert message in str(e.value)


def test_visualisations_blank_exactly_the_dropped_patches(tmp_path):
  from PIL import Image
  from tokensparse import drawing
  image = np.full((8, 8, 1), 100, np.uint8)
  out = drawing.blank_dropped(image, np.array([0, 3]), patch=4)   # 2x2 grid, keep corners 0 and 3
  assert (out[:4, :4] == 100).all() and (out[4:, 4:] == 100).all()
  assert (out[:4, 4:] == drawing.BLANK).all() and (out[4:, :4] == drawing.BLANK).all()
  drawing.kept_token_grid(np.stack([image] * 3), [np.array([[0, 3]] * 3)], 4,
                      str(tmp_path / 'grid.png'), scale=2)
  width, height = Image.open(tmp_path / 'grid.png').size   # the grid, a header and a legend
  assert width >= (8 * 2 + 2) * 2 and height == (8 + 2) * 3 * 2 + 34 + 20
  drawing.keep_heatmaps([np.eye(2), np.ones((2, 2))], str(tmp_path / 'heat.png'))
  assert Image.open(tmp_path / 'heat.png').size[1] == 2 * 24 + 16 + 20 + 20   # + title, caption


def test_fine_tune_from_dense_workdir_freezes_backbone_in_warmup(tmp_path):
  from tests import fake_data
  from tokensparse import checkpoint
  from tokensparse.train import loop
  dense = fake_data.tiny_config(tmp_path, total_steps=2)
  loop.train_and_evaluate(dense, str(tmp_path / 'dense'))

  config = fake_data.tiny_config(tmp_path, total_steps=3, warmup_steps=3, checkpoint_every_steps=3)
  with config.unlocked():
    configs.use_method(config, 'dynamic_vit', keep_ratio=0.7, prune_layers=(1,),
                       gumbel_noise=True)
    config.init_from.path = str(tmp_path / 'dense')
    config.optimizer.lr_groups = [('^predictor_', 1.0), ('^cls$|pos_embedding', 0.0),
                                  ('.*', 0.01, 'warmup')]
  result = loop.train_and_evaluate(config, str(tmp_path / 'dvit'))
  assert result['count'] == 37

  def restored(workdir, step):
    mngr = checkpoint.manager(workdir)
    return mngr.restore(step, args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardRestore()))['state']
  before, after = restored(str(tmp_path / 'dense'), 2), restored(str(tmp_path / 'dvit'), 3)
  saved = checkpoint.load_config(str(tmp_path / 'dvit'))
  assert saved['model']['dynamic_vit']['keep_ratio'] == 0.7   # the complete config is saved
  assert saved['loss']['dynamic_vit'] == {'ratio_weight': 2.0, 'distill_weight': 0.5,
                                          'token_weight': 0.5}
  for key in ('cls', 'embedding', 'Transformer', 'head'):
    jax.tree.map(np.testing.assert_array_equal, after['params'][key], before['params'][key])
    jax.tree.map(np.testing.assert_array_equal, after['frozen']['teacher'][key],
                 before['params'][key])
  init = methods.build(config.model).init(
      {'params': jax.random.PRNGKey(config.seed), 'gumbel': jax.random.PRNGKey(0)},
      jnp.zeros((1, 28, 28, 1)))['params']
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       after['params']['predictor_0'], init['predictor_0'])
  assert max(jax.tree.leaves(moved)) > 0  # the predictor trains from the first step


def test_token_distillation_covers_every_patch_token_without_a_class_token():
  """classifier='gap' has no prefix token: the token-distillation term compares all N final
  tokens (a fixed 1-token prefix would drop one and misalign the final mask)."""
  from tokensparse import backbone
  cfg = ml_collections.ConfigDict(dict(
      model=dict(name='dynamic_vit', num_classes=5, image_size=16, patch_size=4, width=32,
                 depth=2, num_heads=4, mlp_dim=64, classifier='gap', dtype='float32',
                 dynamic_vit=dict(keep_ratio=0.5, prune_layers=(1,), gumbel_noise=False)),
      loss=dict(dynamic_vit=dict(ratio_weight=0.0, distill_weight=0.0, token_weight=1.0)),
      label_smoothing=0.0, init_from=dict(path='dense')))
  model = methods.build(cfg.model)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  params = model.init({'params': jax.random.PRNGKey(1), 'gumbel': jax.random.PRNGKey(2)}, x,
                      train=True)['params']
  teacher = methods.get('dynamic_vit').frozen_variables(cfg, params)
  # A teacher that differs from the student, so every token contributes to the MSE.
  teacher['teacher']['head'] = params['head']
  teacher['teacher']['Transformer'] = jax.tree.map(lambda a: a * 1.1, params['Transformer'])
  loss_fn = methods.get('dynamic_vit').loss_fn(cfg)
  batch = {'image': x, 'label': jnp.array([0, 1])}
  _, metrics = loss_fn(model, params, batch, jax.random.PRNGKey(3), True, teacher)
  _, aux = model.apply({'params': params}, x, train=True, rngs={'gumbel': jax.random.PRNGKey(4)})
  _, t_aux = backbone.ViT(**backbone.backbone_kwargs(cfg.model)).apply(
      {'params': teacher['teacher']}, x)
  mask = np.asarray(aux['final_mask'])
  assert aux['tokens'].shape[1] == mask.shape[1] == 16
  sq = ((np.asarray(aux['tokens']) - np.asarray(t_aux['tokens'])) ** 2).mean(-1)
  want = (sq * mask).sum() / mask.sum()
  np.testing.assert_allclose(float(metrics['token_mse']) / 2, want, rtol=1e-5)
  # The ratio and KL terms are weighted 0: CE + token term is the loss.


@pytest.mark.parametrize('name', ['dynamic_vit', 'pooled_vit'])
def test_without_distillation_the_teacher_is_not_run(name):
  """Every distillation weight 0 (the comparison's one recipe): the loss never reads the frozen
  teacher (it runs with frozen=None) and equals CE + ratio loss by hand, where running the
  teacher at weight 0 would only cost time."""
  fields = dict(dynamic_vit=dict(keep_ratio=0.5, prune_layers=(1,), gumbel_noise=False),
                pooled_vit=dict(pool_layer=1))[name]
  weights = dict(dynamic_vit=dict(ratio_weight=2.0, distill_weight=0.0, token_weight=0.0),
                 pooled_vit=dict(distill_weight=0.0))[name]
  cfg = ml_collections.ConfigDict(dict(
      model=dict(name=name, num_classes=5, image_size=16, patch_size=4, width=32, depth=2,
                 num_heads=4, mlp_dim=64, dtype='float32', **{name: fields}),
      loss={name: weights}, label_smoothing=0.0, init_from=dict(path='dense')))
  model = methods.build(cfg.model)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  params = model.init({'params': jax.random.PRNGKey(1), 'gumbel': jax.random.PRNGKey(2)}, x,
                      train=True)['params']
  batch = {'image': x, 'label': jnp.array([0, 3])}
  rng = jax.random.PRNGKey(3)
  loss, metrics = methods.get(name).loss_fn(cfg)(model, params, batch, rng, True, None)
  assert 'kl' not in metrics and 'token_mse' not in metrics
  logits, aux = model.apply({'params': params}, x, train=True,
                            rngs=objectives.rngs(rng, True, ('gumbel',)))
  ce = np.asarray(losses.cross_entropy(logits, batch['label'], 0.0))
  want = ce.mean()
  if name == 'dynamic_vit':
    want = (ce + 2.0 * np.asarray(objective.keep_ratio_loss(aux['masks'], [0.5]))).mean()
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
