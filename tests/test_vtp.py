"""VTP: exact pruning (rate 0, masked == pruned), heads kept apart, L1 gradient, round trip."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import configs, flops, methods
from tokensparse.methods.vtp import ops as F
from tokensparse.methods.vtp import prune as prune_cli
from tokensparse.backbone.vit import ViT
from tokensparse.methods.vtp.model import VTPViT, keep_masks, masked_scores, prune
from tokensparse import checkpoint
from tokensparse.train import loop
from tests import fake_data

KW = dict(num_classes=5, image_size=16, patch_size=4, width=32, depth=3, num_heads=4, mlp_dim=64)


def _setup(seed=0):
  model = VTPViT(**KW)
  x = jax.random.normal(jax.random.PRNGKey(seed), (3, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(seed + 1), x)
  # Scores as sparsity training leaves them: spread out, some negative, all distinct.
  scores = jax.tree.map(lambda s: np.asarray(jax.random.uniform(
      jax.random.PRNGKey(s.size + seed), s.shape, minval=-2.0, maxval=2.0)), variables['scores'])
  return model, x, variables['params'], scores


def _pruned_logits(params, fields, x):
  model = ViT(**{**KW, 'head_dim': tuple(fields['head_dim']), 'mlp_dim': tuple(fields['mlp_dim']),
                 'attn_scale': fields['attn_scale']})
  return model.apply({'params': params}, x)[0]


def test_scores_start_at_one_in_their_own_collection():
  model = VTPViT(**KW)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  assert set(variables) == {'params', 'scores'}
  assert {k: v.shape for k, v in variables['scores'].items()} == {
      **{f'attn_{i}': (4, 8) for i in range(3)}, **{f'mlp_{i}': (64,) for i in range(3)}}
  assert all(float(jnp.min(v)) == 1.0 == float(jnp.max(v)) for v in variables['scores'].values())
  # With all scores 1 the model is the backbone itself.
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  np.testing.assert_allclose(model.apply(variables, x)[0],
                             ViT(**KW).apply({'params': variables['params']}, x)[0], rtol=1e-6)


def test_rate_zero_reproduces_the_scored_model():
  model, x, params, scores = _setup()
  want = model.apply({'params': params, 'scores': scores}, x)[0]
  new, fields = prune(params, scores, 0.0)
  assert fields['head_dim'] == [8, 8, 8] and fields['mlp_dim'] == [64, 64, 64]
  np.testing.assert_allclose(_pruned_logits(new, fields, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('rate,align', [(0.2, 1), (0.4, 1), (0.7, 1), (0.4, 4), (0.7, 16)])
def test_pruned_equals_masked(rate, align):
  model, x, params, scores = _setup(seed=3)
  want = model.apply({'params': params, 'scores': masked_scores(scores, rate)}, x)[0]
  new, fields = prune(params, scores, rate, align=align)
  assert all(w % align == 0 or w == 8 for w in fields['head_dim'])
  assert all(w % align == 0 or w == 64 for w in fields['mlp_dim'])
  assert fields['attn_scale'] == pytest.approx(8 ** -0.5)  # the original head dimension
  np.testing.assert_allclose(_pruned_logits(new, fields, x), want, rtol=1e-5, atol=1e-5)
  # Physically smaller: the counter sees fewer MACs.
  small = ViT(**{**KW, 'head_dim': tuple(fields['head_dim']), 'mlp_dim': tuple(fields['mlp_dim'])})
  assert flops.vit_macs(small)['total'] < flops.vit_macs(ViT(**KW))['total']


def test_global_threshold_drops_exactly_the_smallest():
  _, _, _, scores = _setup()
  masks = keep_masks(scores, 0.4)
  total = sum(v.size for v in scores.values())
  assert sum(int(m.sum()) for m in masks.values()) == total - int(0.4 * total)
  kept = np.concatenate([np.abs(scores[n])[masks[n]] for n in scores])
  dropped = np.concatenate([np.abs(scores[n])[~masks[n]] for n in scores])
  assert kept.min() >= dropped.max()


def test_channels_stay_in_their_head():
  model, x, params, scores = _setup()
  s = np.full((4, 8), 5.0)
  s[0] = [0, 2, 0, 3, 0, 0, 0, 0]   # head 0 keeps channels 1 and 3
  s[1] = [4, 0, 0, 0, 0, 0, 0, 0]   # head 1 keeps channel 0
  scores = {**{k: np.full(v.shape, 5.0) for k, v in scores.items()}, 'attn_0': s}
  rate = 13 / sum(v.size for v in scores.values())  # exactly the 13 zero scores
  new, fields = prune(params, scores, rate)
  q_old = np.asarray(params['Transformer']['encoderblock_0']['MultiHeadDotProductAttention_1']['query']['kernel'])
  q_new = new['Transformer']['encoderblock_0']['MultiHeadDotProductAttention_1']['query']['kernel']
  assert fields['head_dim'][0] == 8  # heads 2 and 3 keep all 8
  np.testing.assert_allclose(q_new[:, 0, :2], q_old[:, 0, [1, 3]] * [2.0, 3.0], rtol=1e-6)
  np.testing.assert_array_equal(q_new[:, 0, 2:], 0.0)
  np.testing.assert_allclose(q_new[:, 1, 0], q_old[:, 1, 0] * 4.0, rtol=1e-6)
  np.testing.assert_array_equal(q_new[:, 1, 1:], 0.0)
  want = model.apply({'params': params, 'scores': masked_scores(scores, rate)}, x)[0]
  np.testing.assert_allclose(_pruned_logits(new, fields, x), want, rtol=1e-5, atol=1e-5)


def test_l1_gradient_is_weight_times_sign():
  scores = {'attn_0': jnp.array([[0.5, -1.5], [2.0, -0.1]]), 'mlp_0': jnp.array([-3.0, 0.2, 1.0])}
  grads = jax.grad(lambda s: F.l1_penalty(s, 1e-4))(scores)
  for k in scores:
    np.testing.assert_allclose(grads[k], 1e-4 * np.sign(scores[k]), rtol=1e-7)
  assert float(F.l1_penalty(scores, 1e-4)) == pytest.approx(1e-4 * 8.3, rel=1e-6)


def test_bad_rate_is_refused():
  _, _, params, scores = _setup()
  with pytest.raises(ValueError, match=r'pruning rate=1.0: must be in \[0, 1\)'):
    prune(params, scores, 1.0)


def test_l1_weight_defaults_to_the_papers_and_is_checked():
  c = configs.base()
  with c.unlocked():
    c.model.update(name='vtp', num_classes=10, image_size=28, patch_size=7, width=32, depth=2,
                   num_heads=4, mlp_dim=64)
  configs.validate(c)
  assert configs.complete(c).loss.vtp.l1_weight == 1e-4
  with c.unlocked():
    configs.use_method(c, 'vtp')
    c.loss.vtp.l1_weight = -1.0
  with pytest.raises(ValueError, match=r'loss.vtp.l1_weight=-1.0: must be >= 0'):
    configs.validate(c)
  with c.unlocked():
    c.loss.vtp.l1_weight = 1e-4
    c.vtp = ml_collections.ConfigDict(dict(l1_weight=1e-3))   # the old place
  with pytest.raises(ValueError, match=r'vtp.l1_weight=0.001: an old-style field; it is '
                                       r'loss.vtp.l1_weight now'):
    configs.validate(c)


def test_sparsity_training_prune_and_finetune_round_trip(tmp_path, capsys):
  """Train with scores, prune with the CLI, restore the pruned work directory: same logits as
  the scored model with the pruned scores zeroed; then fine-tune it with the ordinary trainer."""
  dense = fake_data.tiny_config(tmp_path)
  loop.train_and_evaluate(dense, str(tmp_path / 'dense'))
  sparse = fake_data.tiny_config(tmp_path, **{'model.name': 'vtp',
                                              'init_from.path': str(tmp_path / 'dense')})
  with sparse.unlocked():
    configs.use_method(sparse, 'vtp')
  loop.train_and_evaluate(sparse, str(tmp_path / 'sparse'))
  config, params, scores = prune_cli.load_scored(str(tmp_path / 'sparse'))
  assert any(float(np.abs(np.asarray(s) - 1).max()) > 0 for s in scores.values())  # trained

  out = str(tmp_path / 'pruned')
  prune_cli.main(['--workdir', str(tmp_path / 'sparse'), '--rate', '0.4', '--out', out])
  assert 'parameters' in capsys.readouterr().out
  restored = ml_collections.ConfigDict(checkpoint.load_config(out))
  assert restored.model.name == 'vit' and len(restored.model.mlp_dim) == 2
  _, variables, _ = checkpoint.load_variables(out)
  new_params = variables['params']
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 28, 28, 1))
  got = methods.build(restored.model).apply({'params': new_params}, x)[0]
  want = methods.build(config.model).apply(
      {'params': params, 'scores': masked_scores(scores, 0.4)}, x)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for name in ('pruning.md', 'pruning.png'):
    assert (tmp_path / 'pruned' / name).exists()
  with pytest.raises(SystemExit, match='already holds a checkpoint'):
    prune_cli.main(['--workdir', str(tmp_path / 'sparse'), '--rate', '0.4', '--out', out])
  with pytest.raises(ValueError, match="model.name='vit'; pruning needs a VTP"):
    prune_cli.load_scored(str(tmp_path / 'dense'))

  tune = fake_data.tiny_config(tmp_path, **{'init_from.path': out})
  with tune.unlocked():
    tune.model.update(head_dim=list(restored.model.head_dim),
                      mlp_dim=list(restored.model.mlp_dim), attn_scale=restored.model.attn_scale)
  assert np.isfinite(loop.train_and_evaluate(tune, str(tmp_path / 'tuned'))['loss'])
