"""Analytic MAC counter against the papers' figures and XLA's cost analysis."""
import jax
import jax.numpy as jnp
import pytest

from tokensparse import flops
from tokensparse.backbone import vit


@pytest.mark.parametrize('variant,gmacs', [('Ti/16', 1.25), ('S/16', 4.60), ('B/16', 17.56)])
def test_deit_gmacs(variant, gmacs):
  model = vit.ViT(num_classes=1000, image_size=224, **vit.parse_variant(variant))
  assert abs(flops.vit_macs(model)['total'] / 1e9 - gmacs) < 0.01


def test_deit_s_split_matches_reference():
  c = flops.vit_macs(vit.ViT(num_classes=1000, image_size=224, **vit.parse_variant('S/16')))
  share = {k: round(100 * v / c['total'], 1) for k, v in c.items()}
  assert share['mlp'] == 60.6 and share['qkv'] == 22.7 and share['proj'] == 7.6
  assert share['attn'] == 7.8 and share['patch_embed'] == 1.3


def test_matches_xla_cost_analysis():
  """DeiT-S at 224 px: XLA counts 2 FLOPs per MAC plus elementwise work (about 3 % more)."""
  model = vit.ViT(num_classes=1000, image_size=224, **vit.parse_variant('S/16'))
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)  # abstract: compiled, never run
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  xla_macs = flops.xla_flops(lambda p, x: model.apply(p, x)[0], params, x) / 2
  ratio = xla_macs / flops.vit_macs(model)['total']
  assert 1.0 <= ratio < 1.05, ratio
