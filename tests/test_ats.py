"""ATS against a numpy oracle of the official algorithm run one image at a time (dynamic token
counts, no padding, as the reference code with drop_tokens at batch 1), plus its counter,
placement, figures and refused settings."""
import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import configs, convert, flops, methods
from tokensparse.methods.ats import ops
from tests import fake_data, numpy_vit

DIMS = dict(width=32, depth=3, num_heads=4, mlp_dim=64, patch=4, channels=3, num_classes=5)


def model_config(distilled=False, **fields):
  c = ml_collections.ConfigDict(dict(
      name='ats', variant=None, num_classes=5, image_size=24, patch_size=4, width=32, depth=3,
      num_heads=4, mlp_dim=64, distilled=distilled, classifier='token', dropout=0.0,
      droppath=0.0, dtype='float32', ats=methods.get('ats').defaults()))
  c.ats.update(fields)
  return c


def setup(distilled=False, seed=0):
  rng = np.random.default_rng(seed)
  sd = numpy_vit.random_timm_state_dict(rng, grid=6, distilled=distilled, **DIMS)
  # Sharper class attention than random weights give, so samples repeat and counts adapt.
  for i in range(DIMS['depth']):
    sd[f'blocks.{i}.attn.qkv.weight'] = sd[f'blocks.{i}.attn.qkv.weight'] * 4
  images = rng.standard_normal((3, 24, 24, 3)).astype(np.float32)
  return sd, images


# ----------------------------------------------------------------------------- the oracle
def ats_sample_oracle(attn, v, k, p):
  """One image: attn [H, N, N], v [H, N, hd] -> the sampled patch rows (positions among the
  current patch tokens, ascending significance), per the official ats_block.py."""
  v_norm = np.linalg.norm(v.transpose(1, 0, 2).reshape(v.shape[1], -1), axis=-1)
  s = (attn[:, 0].sum(0) * v_norm)[p:]
  s = s / s.sum()
  order = np.argsort(s, kind='stable')
  cdf = np.cumsum(s[order])
  norm = (cdf - cdf.min()) / (cdf.max() - cdf.min())
  start = norm[norm > 0].min()
  samples = k - p
  ys = [start + j * (1 - start) / max(samples - 1, 1) for j in range(samples)]
  picks = sorted({int(np.argmin(np.abs(y - norm))) for y in ys})
  return [int(order[i]) for i in picks]


def ats_oracle(sd, image, ats_layers, ks, p):
  """One image through the ViT with ATS, float64, token counts changing freely."""
  sd = {key: np.asarray(val, np.float64) for key, val in sd.items()}
  x = numpy_vit.embed(sd, image[None].astype(np.float64))[0]
  positions = list(range(x.shape[0] - p))
  kept = []
  for i in range(DIMS['depth']):
    g = lambda name: sd[f'blocks.{i}.{name}']
    n = x.shape[0]
    y = numpy_vit.layer_norm(x, g('norm1.weight'), g('norm1.bias'))
    qkv = (y @ g('attn.qkv.weight').T + g('attn.qkv.bias')).reshape(n, 3, 4, -1)
    q, k, v = qkv.transpose(1, 2, 0, 3)                      # [H, N, hd] each
    logits = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    if i in ats_layers:  # softmax_with_policy with every token kept
      a = np.exp(logits - logits.max(-1, keepdims=True))
      attn = (a + 1e-6 / n) / (a.sum(-1, keepdims=True) + 1e-6)
      chosen = ats_sample_oracle(attn, v, ks[ats_layers.index(i)], p)
      rows = list(range(p)) + [c + p for c in chosen]
      positions = [positions[c] for c in chosen]
      kept.append(positions)
    else:
      attn = numpy_vit.softmax(logits)
      rows = list(range(n))
    o = (attn[:, rows] @ v).transpose(1, 0, 2).reshape(len(rows), -1)
    x = x[rows] + o @ g('attn.proj.weight').T + g('attn.proj.bias')
    x = numpy_vit.mlp_half(sd, i, x[None])[0]
  return numpy_vit.head(sd, x[None])[0], kept


@pytest.mark.parametrize('distilled', [False, True])
@pytest.mark.parametrize('num_tokens,layers', [(0, ()), (20, ()), (12, (0, 2)), ([30, 9], (1, 2))])
def test_ats_matches_the_numpy_oracle(distilled, num_tokens, layers):
  sd, images = setup(distilled)
  cfg = model_config(distilled, num_tokens=num_tokens, layers=layers)
  configs.validate_model(ml_collections.ConfigDict({'model': cfg}))
  model = methods.build(cfg)
  params, _ = convert.from_timm(sd, cfg)
  logits, aux = model.apply({'params': params}, jnp.asarray(images))
  p = 2 if distilled else 1
  for b in range(len(images)):
    want, kept = ats_oracle(sd, images[b], list(model.ats_layers), list(model.num_tokens), p)
    np.testing.assert_allclose(logits[b], want, rtol=2e-4, atol=2e-4)
    for s, positions in enumerate(kept):
      got = np.asarray(aux['kept_indices'][s][b])
      assert list(got[got >= 0]) == positions and (got[len(positions):] == -1).all()
      assert int(aux['kept_count'][s][b]) == len(positions)
  # The official setting (K = all tokens) still drops tokens: repeated samples count once.
  if num_tokens == 0:
    assert int(aux['kept_count'][-1].max()) < 36


def test_sampling_matches_its_oracle_with_padding():
  """ops.sample on padded inputs draws what the oracle draws from the valid tokens alone."""
  rng = np.random.default_rng(1)
  for trial in range(20):
    n = 12
    valid = rng.random(n) < 0.7
    valid[rng.integers(n)] = True
    raw = rng.gamma(0.3, size=n) * valid
    scores = raw / raw.sum()
    samples = int(rng.integers(2, 15))
    picked, keep = ops.sample(jnp.asarray(scores[None], jnp.float32), jnp.asarray(valid[None]),
                              samples)
    got = [int(i) for i, k in zip(np.asarray(picked[0]), np.asarray(keep[0])) if k]
    idx = np.where(valid)[0]
    s = scores[idx]
    order = np.argsort(s, kind='stable')
    cdf = np.cumsum(s[order])
    if len(idx) == 1:
      want = [int(idx[0])]
    else:
      norm = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
      start = norm[norm > 0].min()
      ys = [start + j * (1 - start) / max(samples - 1, 1) for j in range(samples)]
      want = [int(idx[order[i]]) for i in sorted({int(np.argmin(np.abs(y - norm))) for y in ys})]
    assert got == want, (trial, got, want)
    assert not np.asarray(keep[0])[len(got):].any()


def test_masked_softmax_hides_padding_keys():
  logits = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 4, 4)), jnp.float32)
  valid = jnp.array([[True, True, False, True]])
  w = np.asarray(ops.masked_softmax(logits, valid))
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
  assert (w[:, :, [0, 1, 3], 2] < 1e-5).all() and (w[:, :, 2, 2] > 1e-3).all()


def test_macs_count_what_runs_and_placement_scales():
  cfg = model_config(num_tokens=20)
  model = methods.build(cfg)
  assert model.ats_layers == (0, 1, 2) and model.tokens_out() == [20, 20, 20]
  counts = methods.macs(model)
  dense = flops.vit_macs(methods.build(ml_collections.ConfigDict({**cfg.to_dict(),
                                                                   'name': 'vit'})))
  d, inner = 32, 32
  n, k = 37, 20
  want_attn = (n * n + k * n) * inner + 2 * (k * k + k * k) * inner
  assert counts['attn'] == want_attn and counts['qkv'] == 3 * (n + 2 * k) * d * inner
  assert counts['mlp'] == 3 * 2 * k * d * 64 and counts['total'] < dense['total']
  deit = methods.build(ml_collections.ConfigDict(dict(
      name='ats', variant='S/16', num_classes=1000, image_size=224, ats={})))
  assert deit.ats_layers == tuple(range(3, 12)) and deit.num_tokens == (197,) * 9


@pytest.mark.parametrize('field,value,message', [
    ('num_tokens', 1, 'model.ats.num_tokens=1: K=1 at block 0: must be in [2, 37]'),
    ('num_tokens', 40, 'model.ats.num_tokens=40: K=40 at block 0: must be in [2, 37]'),
    ('num_tokens', [20, 30, 10], 'K=30 at block 1: must be in [2, 20]'),
    ('num_tokens', [20, 10], 'model.ats.num_tokens=[20, 10]: needs one entry per ATS block'),
    ('layers', (2, 1), 'model.ats.layers=(2, 1): must be increasing block indices'),
])
def test_bad_settings_are_refused_naming_the_field(field, value, message):
  cfg = model_config(**{field: value})
  with pytest.raises(ValueError) as e:
    configs.validate_model(ml_collections.ConfigDict({'model': cfg}))
  assert message in str(e.value)
  gap = model_config()
  gap.classifier = 'gap'
  with pytest.raises(ValueError, match="model.classifier='gap': ATS scores tokens"):
    configs.validate_model(ml_collections.ConfigDict({'model': gap}))


def test_ats_runs_off_the_shelf_trains_and_draws(tmp_path):
  from tokensparse import inference, viz
  from tokensparse.train import loop
  workdir = str(tmp_path / 'dense')
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path), workdir)
  dense = inference.load(workdir)
  sampled = inference.load(workdir, method='ats:num_tokens=9')
  images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
  assert sampled.predict(images).shape == (4, 10)
  assert methods.macs(sampled.model, 1)['total'] < methods.macs(dense.model, 1)['total']
  viz.main(['--workdir', workdir, '--method', 'ats:num_tokens=9', '--out', str(tmp_path / 'fig'),
            '--num_images', '3'])
  assert (tmp_path / 'fig' / 'ats-num_tokens=9' / 'kept_tokens.png').exists()
  config = fake_data.tiny_config(tmp_path, **{'model.name': 'ats', 'init_from.path': workdir})
  with config.unlocked():
    configs.use_method(config, 'ats', num_tokens=9)
  result = loop.train_and_evaluate(config, str(tmp_path / 'ats'))
  assert result['count'] == 37 and np.isfinite(result['loss'])
