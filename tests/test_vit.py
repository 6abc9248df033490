"""Backbone: parameter counts, shapes, aux outputs, per-layer widths, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokensparse import functional as F
from tokensparse import methods
from tokensparse.backbone import vit


def count(module, size=224):
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  return sum(x.size for x in jax.tree.leaves(shapes))


def test_deit_parameter_counts_match_timm():
  assert count(vit.ViT(num_classes=1000, image_size=224, **vit.parse_variant('S/16'))) == 22_050_664
  assert count(vit.ViT(num_classes=1000, image_size=224, **vit.parse_variant('Ti/16'))) == 5_717_416
  assert count(vit.ViT(num_classes=1000, image_size=224, **vit.parse_variant('B/16'))) == 86_567_656
  # Distilled DeiT-S adds the dist token, one position and a second head.
  assert count(vit.ViT(num_classes=1000, image_size=224, distilled=True,
                       **vit.parse_variant('S/16'))) == 22_050_664 + 384 + 384 + 384 * 1000 + 1000


def test_shapes_and_aux(tiny_model_config):
  model = methods.build(tiny_model_config)
  x = jnp.ones((2, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(0), x)
  logits, aux = model.apply(params, x, capture_blocks=True)
  assert logits.shape == (2, 5)
  assert aux['tokens'].shape == (2, 17, 32) and aux['pre_logits'].shape == (2, 32)
  assert len(aux['blocks']) == 2 and aux['blocks'][0].shape == (2, 17, 32)
  # The head reads the normed class token.
  np.testing.assert_allclose(aux['pre_logits'], aux['tokens'][:, 0])


def test_distilled_logits_are_the_mean_of_both_heads(tiny_model_config):
  tiny_model_config.distilled = True
  model = methods.build(tiny_model_config)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(0), x)
  logits, aux = model.apply(params, x)
  assert aux['tokens'].shape == (2, 18, 32)
  np.testing.assert_allclose(logits, (aux['logits_cls'] + aux['logits_dist']) / 2, rtol=1e-6)


def test_wrong_image_size_is_refused(tiny_model_config):
  model = methods.build(tiny_model_config)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 3)))
  with pytest.raises(ValueError, match=r'expects \[batch, 16, 16, channels\] \(model.image_size=16\)'):
    model.apply(params, jnp.ones((1, 32, 32, 3)))


def test_per_layer_widths(tiny_model_config):
  import ml_collections
  cfg = ml_collections.ConfigDict({**tiny_model_config.to_dict(), 'mlp_dim': [64, 24],
                                   'head_dim': [8, 4]})
  model = methods.build(cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 3)))['params']
  b0, b1 = params['Transformer']['encoderblock_0'], params['Transformer']['encoderblock_1']
  assert b0['MlpBlock_3']['Dense_0']['kernel'].shape == (32, 64)
  assert b1['MlpBlock_3']['Dense_0']['kernel'].shape == (32, 24)
  assert b1['MultiHeadDotProductAttention_1']['query']['kernel'].shape == (32, 4, 4)


def test_gelu_is_exact():
  x = jnp.linspace(-4, 4, 9)
  import math
  exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in np.asarray(x)])
  from tokensparse.backbone.layers import gelu
  np.testing.assert_allclose(gelu(x), exact, atol=1e-6)


def test_attention_matches_numpy():
  rng = np.random.default_rng(0)
  q, k, v = (rng.standard_normal((2, 5, 3, 4)).astype(np.float32) for _ in range(3))
  s = np.einsum('bnhd,bmhd->bhnm', q, k) * 0.5
  w = np.exp(s - s.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = F.attend(F.attention_weights(jnp.asarray(q), jnp.asarray(k), 0.5), jnp.asarray(v))
  np.testing.assert_allclose(out, np.einsum('bhnm,bmhd->bnhd', w, v), rtol=1e-5, atol=1e-6)


def test_attention_fn_is_the_one_extension_point():
  """The default attention function reproduces the block; a replacement sees q, k, v and the
  scale; one that answers only some queries shrinks the residual stream to those rows."""
  from tokensparse.backbone.layers import EncoderBlock
  block = EncoderBlock(width=16, num_heads=2, mlp_dim=32)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16))
  v = block.init(jax.random.PRNGKey(1), x)
  dense = block.apply(v, x)
  np.testing.assert_array_equal(
      block.apply(v, x, attention_fn=F.dot_product_attention), dense)
  seen = {}

  def spy(q, k, v, *, scale, dropout):
    seen.update(shape=q.shape, scale=scale)
    return F.dot_product_attention(q, k, v, scale=scale, dropout=dropout)
  np.testing.assert_array_equal(block.apply(v, x, attention_fn=spy), dense)
  assert seen == {'shape': (2, 5, 2, 8), 'scale': 8 ** -0.5}
  rows = jnp.array([[0, 3], [4, 1]])

  def answer_two(q, k, v, **kw):
    out, info = F.dot_product_attention(F.gather_tokens(q, rows), k, v, **kw)
    return out, {**info, 'rows': rows}
  got = block.apply(v, x, attention_fn=answer_two)
  assert got.shape == (2, 2, 16)
  np.testing.assert_allclose(got, F.gather_tokens(dense, rows), rtol=1e-5, atol=1e-6)


def test_run_blocks_callbacks_see_every_block_and_the_end():
  from tokensparse.backbone.vit import ViT
  model = ViT(num_classes=3, image_size=8, patch_size=4, width=16, depth=3, num_heads=2,
              mlp_dim=32)
  x = jnp.ones((1, 8, 8, 1))
  v = model.init(jax.random.PRNGKey(0), x)

  def fn(m):
    return m.run_blocks(m.embed(x), True, [],
                        between=lambda i, t, c: (t, c + [('between', i)]),
                        after_attention=lambda i, t, info, c: (t, c + [('after', i)]))
  _, carry = model.apply(v, method=fn)
  assert carry == [('between', 0), ('after', 0), ('between', 1), ('after', 1),
                   ('between', 2), ('after', 2), ('between', 3)]
  logits, aux = model.apply(v, x, capture_blocks=True)
  assert len(aux['blocks']) == 3


def test_drop_path_keeps_expectation():
  x = jnp.ones((20000, 3))
  y = F.drop_path(x, 0.25, jax.random.PRNGKey(0))
  assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, float(np.float32(4 / 3))}
  np.testing.assert_allclose(float(y.mean()), 1.0, atol=0.02)
  np.testing.assert_array_equal(F.drop_path(x, 0.25, None), x)
