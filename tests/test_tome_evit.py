"""ToMe and EViT against numpy oracles written from the papers' descriptions, exact dense
equivalence at r = 0 / keep rate 1, counters, schedules and refused settings."""
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import configs, convert, flops, methods
from tokensparse.methods.tome import ops as tome_ops
from tests import fake_data, numpy_vit

DIMS = dict(width=32, depth=3, num_heads=4, mlp_dim=64, patch=4, channels=3, num_classes=5)


def model_config(name='vit', distilled=False, classifier='token', **fields):
  c = ml_collections.ConfigDict(dict(
      name=name, variant=None, num_classes=5, image_size=24, patch_size=4, width=32, depth=3,
      num_heads=4, mlp_dim=64, distilled=distilled, classifier=classifier, dropout=0.0,
      droppath=0.0, dtype='float32'))
  if methods.get(name).defaults() is not None:
    c[name] = methods.get(name).defaults()
  fake_data.set_fields(c, fields)
  return c


def setup(distilled=False, seed=0, class_token=True):
  rng = np.random.default_rng(seed)
  sd = numpy_vit.random_timm_state_dict(rng, grid=6, distilled=distilled,
                                        class_token=class_token, **DIMS)
  images = rng.standard_normal((3, 24, 24, 3)).astype(np.float32)
  return sd, images


def logits_of(cfg, sd, images):
  params, _ = convert.from_timm(sd, cfg)
  return np.asarray(methods.build(cfg).apply({'params': params}, jnp.asarray(images))[0])


# ----------------------------------------------------------------------------- ToMe oracle
def tome_merge_oracle(x, size, keys, r, p):
  """One ToMe merge, per example with Python loops, from the paper: alternate A/B split,
  cosine similarity of the head-averaged keys, each A token's best B match, the r best-matched
  A tokens averaged into their match weighted by size; prefix tokens never merged."""
  out_x, out_size = [], []
  metric = keys.mean(axis=1)                                  # [B, T, hd]
  for b in range(x.shape[0]):
    m = metric[b] / np.linalg.norm(metric[b], axis=-1, keepdims=True)
    a_set, b_set = list(range(0, x.shape[1], 2)), list(range(1, x.shape[1], 2))
    best = {}
    for a in a_set:
      if a < p:
        continue
      score, match = -np.inf, None
      for j in b_set:
        if j >= p and m[a] @ m[j] > score:
          score, match = m[a] @ m[j], j
      best[a] = (score, match)
    merged = sorted(best, key=lambda a: -best[a][0])[:r]
    total = {j: x[b, j] * size[b, j] for j in b_set}
    count = {j: size[b, j] for j in b_set}
    for a in merged:
      j = best[a][1]
      total[j] = total[j] + x[b, a] * size[b, a]
      count[j] = count[j] + size[b, a]
    if p:  # a protected class token: the unmerged A tokens back in their order
      kept_a = [a for a in a_set if a not in merged]
    else:  # no class token: they stay in descending similarity (ties by position)
      kept_a = [a for a in sorted(best, key=lambda a: -best[a][0])[r:]]
    rows = [(x[b, a], size[b, a]) for a in kept_a] + [(total[j] / count[j], count[j])
                                                       for j in b_set]
    if p >= 2:  # class token (first of A), then distillation token (first of B)
      rows = [rows[0], rows[len(kept_a)]] + rows[1:len(kept_a)] + rows[len(kept_a) + 1:]
    out_x.append(np.stack([v for v, _ in rows]))
    out_size.append(np.array([s for _, s in rows]))
  return np.stack(out_x), np.stack(out_size)


def tome_oracle(sd, images, rs, p, prop_attn=True):
  state = {'size': None}

  def bias(i):
    return None if state['size'] is None or not prop_attn else np.log(state['size'])

  def between(i, x, keys, attn):
    if rs[i] == 0:
      return x
    size = state['size'] if state['size'] is not None else np.ones(x.shape[:2])
    x, state['size'] = tome_merge_oracle(x, size, keys, rs[i], p)
    return x

  return numpy_vit.forward(sd, images.astype(np.float64), num_heads=4, depth=3,
                           between=between, bias=bias)


@pytest.mark.parametrize('prefix', ['cls', 'cls+dist', 'none'])
@pytest.mark.parametrize('r,prop_attn', [(5, True), ([9, 0, 6], True), (4, False)])
def test_tome_matches_numpy_oracle(prefix, r, prop_attn):
  """With a class token the unmerged tokens go back in order; without one (a mean-token
  classifier) they keep ToMe's similarity order, which changes the next block's split."""
  distilled = prefix == 'cls+dist'
  sd, images = setup(distilled, class_token=prefix != 'none')
  cfg = model_config('tome', distilled=distilled, classifier='gap' if prefix == 'none' else
                     'token', **{'tome.r': r, 'tome.prop_attn': prop_attn})
  configs.validate_model(ml_collections.ConfigDict({'model': cfg}))
  rs = list(tome_ops.schedule(r, 3))
  want = tome_oracle(sd, images, rs, {'cls': 1, 'cls+dist': 2, 'none': 0}[prefix], prop_attn)
  got = logits_of(cfg, sd, images)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_tome_r0_equals_dense_exactly():
  sd, images = setup()
  np.testing.assert_array_equal(logits_of(model_config('tome', **{'tome.r': 0}), sd, images),
                                logits_of(model_config(), sd, images))


def test_tome_sizes_and_sources_account_for_every_patch():
  sd, images = setup()
  cfg = model_config('tome', **{'tome.r': 6, 'tome.trace_source': True})
  params, _ = convert.from_timm(sd, cfg)
  _, aux = methods.build(cfg).apply({'params': params}, jnp.asarray(images))
  assert aux['size'].shape == (3, 37 - 18)
  np.testing.assert_array_equal(aux['size'].sum(-1), 37.0)           # no token lost
  np.testing.assert_array_equal(aux['source'].sum(1), 1.0)           # each input in one token
  np.testing.assert_array_equal(aux['source'].sum(-1), aux['size'])
  assert float(aux['source'][:, 0, 0].min()) == 1.0 and float(aux['size'][:, 0].max()) == 1.0


def test_tome_schedule_follows_the_papers_formula():
  assert tome_ops.schedule(8, 12) == (8,) * 12
  # ToMe's decreasing schedule for r=8, inflect -0.5: from int(1.5 r) = 12 down by 8/11 a block.
  assert tome_ops.schedule(8, 12, -0.5) == tuple(int(12 - 8 / 11 * i) for i in range(12))
  assert tome_ops.schedule([3, 2], 4) == (3, 2, 0, 0)
  assert tome_ops.token_counts(197, (8,) * 12)[-1] == 197 - 88


def test_tome_macs_count_attention_before_and_mlp_after_the_merge():
  cfg = model_config('tome', **{'tome.r': 4})
  m = methods.build(cfg)
  got = methods.of(m).macs(m)
  dense = methods.build(model_config())
  counts_in = [37, 33, 29]
  want = flops.vit_macs(dense, 3, [(t, t - 4) for t in counts_in])
  assert got['qkv'] == want['qkv'] and got['mlp'] == want['mlp']
  assert got['mlp'] == sum(2 * (t - 4) * 32 * 64 for t in counts_in)
  assert got['matching'] == sum(math.ceil(t / 2) * (t // 2) * 8 for t in counts_in)
  assert got['total'] == want['total'] + got['matching']


# ----------------------------------------------------------------------------- EViT oracle
def evit_oracle(sd, images, keep_rate, layers, fuse, p=1):
  def between(i, x, keys, attn):
    n = x.shape[1] - p
    keep = math.ceil(keep_rate * n)
    if i not in layers or keep >= n:
      return x
    rows = []
    for b in range(x.shape[0]):
      cls_attn = attn[b, :, 0, p:].mean(axis=0)               # class token -> patch tokens
      order = np.argsort(-cls_attn, kind='stable')
      top, rest = order[:keep], order[keep:]
      parts = [x[b, :p], x[b, p + top]]
      if fuse:
        parts.append((cls_attn[rest, None] * x[b, p + rest]).sum(0, keepdims=True))
      rows.append(np.concatenate(parts))
    return np.stack(rows)

  return numpy_vit.forward(sd, images.astype(np.float64), num_heads=4, depth=3,
                           between=between)


@pytest.mark.parametrize('keep_rate,layers,fuse', [(0.7, (0, 2), True), (0.5, (1,), False),
                                                   (0.3, (0, 1, 2), True)])
def test_evit_matches_numpy_oracle(keep_rate, layers, fuse):
  sd, images = setup()
  cfg = model_config('evit', **{'evit.keep_rate': keep_rate, 'evit.layers': layers,
                                'evit.fuse': fuse})
  want = evit_oracle(sd, images, keep_rate, layers, fuse)
  np.testing.assert_allclose(logits_of(cfg, sd, images), want, rtol=2e-4, atol=2e-4)


def test_evit_keep_rate_1_equals_dense_exactly():
  sd, images = setup()
  np.testing.assert_array_equal(
      logits_of(model_config('evit', **{'evit.keep_rate': 1.0}), sd, images),
      logits_of(model_config(), sd, images))


def test_evit_token_counts_and_macs():
  cfg = model_config('evit', **{'evit.keep_rate': 0.5, 'evit.layers': (1, 2)})
  m = methods.build(cfg)
  # 36 patches: block 1 keeps 18 (+1 fused), block 2 keeps ceil(0.5 * 19) = 10 (+1 fused).
  assert m.counts() == [(37, 37), (37, 20), (20, 12)]
  sd, images = setup()
  params, _ = convert.from_timm(sd, cfg)
  logits, aux = m.apply({'params': params}, jnp.asarray(images))
  assert aux['tokens'].shape == (3, 12, 32)
  assert [k.shape for k in aux['kept_indices']] == [(3, 18), (3, 10)]
  assert int(aux['kept_indices'][0].min()) >= 0  # original positions; -1 marks a fused token
  got = methods.of(m).macs(m)['total']
  assert got == flops.vit_macs(m, 3, m.counts())['total'] < flops.vit_macs(
      methods.build(model_config()))['total']


def test_both_jit_once_and_train(tmp_path):
  from tokensparse.train import loop
  import chex
  for name, fields in (('tome', {'r': 3}), ('evit', {'keep_rate': 0.5, 'layers': (1,)})):
    config = fake_data.tiny_config(tmp_path, **{'model.name': name})
    with config.unlocked():
      config.model[name] = methods.get(name).defaults()
      config.model[name].update(fields)
    result = loop.train_and_evaluate(config, str(tmp_path / name))
    assert result['count'] == 37
    m = methods.build(config.model)
    v = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    chex.clear_trace_counter()
    f = jax.jit(chex.assert_max_traces(lambda v, x, m=m: m.apply(v, x)[0], n=1))
    for seed in range(3):
      f(v, jax.random.normal(jax.random.PRNGKey(seed), (2, 28, 28, 1)))


# ----------------------------------------------------------------------------- refused
@pytest.mark.parametrize('name,field,value,message', [
    ('tome', 'tome.r', 19, 'model.tome.r=19: block 0 would merge 19 of its 37 tokens; at most 18'),
    ('tome', 'tome.r', 10, 'model.tome.r=10: block 2 would merge 10 of its 17 tokens; at most 8'),
    ('tome', 'tome.r', -1, 'model.tome.r=-1: must be a non-negative integer'),
    ('tome', 'tome.r', [1, 2, 3, 4], 'model.tome.r=[1, 2, 3, 4]: has more entries than blocks'),
    ('evit', 'evit.keep_rate', 0.0, 'model.evit.keep_rate=0.0: must be in (0, 1]'),
    ('evit', 'evit.keep_rate', 1.5, 'model.evit.keep_rate=1.5: must be in (0, 1]'),
    ('evit', 'evit.layers', (2, 5), 'model.evit.layers=(2, 5): must be increasing block indices'),
    ('evit', 'classifier', 'gap', "model.classifier='gap': EViT ranks tokens by the class token"),
])
def test_bad_settings_are_refused_naming_the_field(name, field, value, message):
  config = ml_collections.ConfigDict({'model': model_config(name, **{field: value})})
  with pytest.raises(ValueError) as e:
    configs.validate_model(config)
  assert message in str(e.value)


def test_bad_setting_writes_nothing(tmp_path):
  from tokensparse.train import loop
  config = fake_data.tiny_config(tmp_path, **{'model.name': 'tome'})
  with config.unlocked():
    config.model.tome = methods.get('tome').defaults()
    config.model.tome.r = 9
  with pytest.raises(ValueError, match='model.tome.r=9'):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_tome_error_names_the_largest_r_this_model_allows():
  from tokensparse.methods import tome
  config = ml_collections.ConfigDict({'model': model_config('tome', **{'tome.r': 10})})
  with pytest.raises(ValueError, match=r'the largest r this model allows is (\d+)') as e:
    configs.validate_model(config)
  largest = int(re.search(r'allows is (\d+)', str(e.value)).group(1))
  kw = configs.backbone.backbone_kwargs(config.model)
  assert largest == tome.largest_r(kw)
  for r, ok in ((largest, True), (largest + 1, False)):
    config.model.tome.r = r
    try:
      configs.validate_model(config)
      assert ok
    except ValueError:
      assert not ok


def test_evit_marks_each_fused_token_by_the_reorganisation_that_made_it():
  cfg = model_config('evit', **{'evit.keep_rate': 0.95, 'evit.layers': (0, 1, 2)})
  sd, images = setup()
  params, _ = convert.from_timm(sd, cfg)
  _, aux = methods.build(cfg).apply({'params': params}, jnp.asarray(images))
  k1, k2, k3 = (np.asarray(k) for k in aux['kept_indices'])
  assert (k1 >= 0).all()                               # the first stage sees no fused token
  assert set(k2[k2 < 0].tolist()) <= {-1} and set(k3[k3 < 0].tolist()) <= {-1, -2}
  both = [row for row in k3 if -1 in row and -2 in row]
  assert both, 'no image kept both fused tokens'        # two fused tokens told apart
  assert all((row == -1).sum() <= 1 and (row == -2).sum() <= 1 for row in k3)
