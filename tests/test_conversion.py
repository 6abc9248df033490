"""benchmarks/conversion.py's machinery on tiny models: the op classes read from compiled HLO,
the profiler's time by class, same-round timing of static and Eventful models, and the report."""
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))
import common  # noqa: E402
import conversion  # noqa: E402


def classes_of(fn, *args):
  return common.op_classes(jax.jit(fn).lower(*args).compile().as_text())


def test_op_classes_name_each_kind_of_work():
  a = jnp.ones((64, 32))
  b = jnp.ones((32, 48))
  i = jnp.arange(10)
  assert 'matmul' in classes_of(lambda a, b: a @ b, a, b).values()
  assert set(classes_of(lambda a, b: jnp.tanh(a) + 1.0, a, b).values()) == {'rest'}
  assert 'select' in classes_of(lambda a, i: jnp.take(a, i, axis=0) * 2.0, a, i).values()
  assert 'select' in classes_of(lambda a: jax.lax.top_k(a, 4)[1], a).values()
  assert 'select' in classes_of(lambda a: jnp.sort(a, axis=-1), a).values()
  assert 'exp' in classes_of(lambda a: jax.nn.softmax(a, axis=-1), a).values()
  # A matmul fused with an exponential counts as a matmul (the first class that matches).
  mixed = classes_of(lambda a, b: jnp.exp(a @ b), a, b)
  assert 'matmul' in mixed.values()


def test_op_class_times_put_a_matmul_where_it_belongs():
  a = jnp.ones((256, 256))
  f = jax.jit(lambda a: a @ a @ a)
  t = common.op_class_times(lambda: f(a), f.lower(a).compile().as_text(), calls=2, repeats=2)
  assert set(t) == {'matmul', 'select', 'exp', 'rest', 'wall'}
  assert t['matmul'] > 0 and t['wall'] > 0
  assert t['select'] == 0 and t['exp'] == 0


def test_static_and_eventful_models_time_against_dense_and_report(tmp_path):
  base = ml_collections.ConfigDict(dict(name='vit', dtype='float32', image_size=32,
                                        patch_size=8, width=32, depth=2, num_heads=2,
                                        mlp_dim=64, num_classes=10))
  configs = [('default', 'dense', conversion.compare.dense_model(base)),
             ('default', 'tome r=2', conversion.compare.method_model(base, 'tome', {'r': 2})),
             ('default', 'eventful full r=4', conversion.eventful_config(base, 4))]
  rows = []
  for group, label, c in configs:
    rows.append((group, label, c, conversion.methods.macs(conversion.methods.build(c))['total']))
  assert rows[2][3] < rows[0][3] and rows[1][3] < rows[0][3]
  models = {label: conversion.methods.build(c) for _, label, c, _ in rows}
  speed = {b: conversion.measure(models, base, b, rounds=1, iters=1) for b in (4, 1)}
  speed[32] = speed.pop(4)
  assert speed[1]['dense'] == 1.0 and all(s > 0 for s in speed[32].values())
  parts = conversion.breakdown(models, base)
  assert parts['tome r=2']['select'] > 0          # ToMe's merge sorts and gathers
  assert parts['dense']['matmul'] > 0
  body = conversion.report(dict(title='tiny', quick=True, rounds=1, iters=1), rows, speed,
                           parts, 1.0)
  assert '| default | eventful full r=4 |' in body
  assert body.count('\n| ') == (1 + 2) + (1 + 3)  # two tables: header and model rows
  # Every model of the breakdown names what costs its time (or that nothing does).
  for line in body.split('Where the time goes')[1].splitlines()[5:]:
    assert line.rstrip('| ').rsplit('|', 1)[1].strip(), line
  conversion.picture(str(tmp_path / 'conversion.png'), rows, speed, {})
  assert (tmp_path / 'conversion.png').stat().st_size > 1000


TINY = dict(name='vit', dtype='float32', image_size=32, patch_size=8, width=32, depth=3,
            num_heads=2, mlp_dim=64, num_classes=10)


def test_block_tokens_read_what_each_block_sees():
  base = ml_collections.ConfigDict(TINY)
  dense = conversion.methods.build(conversion.compare.dense_model(base))
  assert conversion.block_tokens(dense, 32) is None  # every block sees every token
  tome = conversion.methods.build(conversion.compare.method_model(base, 'tome', {'r': 3}))
  # Hand derivation: 16 patches + the class token; ToMe merges 3 after each block's attention.
  assert conversion.block_tokens(tome, 32) == ((17, 14), (14, 11), (11, 8))
  evit = conversion.methods.build(conversion.compare.method_model(
      base, 'evit', {'keep_rate': 0.5}))
  counts = conversion.block_tokens(evit, 32)
  assert len(counts) == 3 and counts[0][0] == 17 and counts[-1][1] < 17


def test_blocks_alone_is_dense_on_the_first_tokens_and_nothing_else():
  base = ml_collections.ConfigDict(TINY)
  dense = conversion.methods.build(conversion.compare.dense_model(base))
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 32, 3))
  variables = dense.init(jax.random.PRNGKey(0), x)
  full = conversion.OnTokens(dense, ((17, 17),) * 3)
  # The twin holds the dense model as its child: the same weights give the same logits.
  got = full.apply({'params': {'vit': variables['params']}}, x)[0]
  assert jnp.array_equal(got, dense.apply(variables, x)[0])
  # Fewer tokens: the class token's path differs, the shapes and the MACs follow the counts.
  cut = conversion.OnTokens(dense, ((17, 9), (9, 5), (5, 5)))
  assert cut.apply({'params': {'vit': variables['params']}}, x)[0].shape == (2, 10)
  twins = conversion.blocks_alone({'dense': dense, 'tome r=3': conversion.methods.build(
      conversion.compare.method_model(base, 'tome', {'r': 3}))}, base)
  assert set(twins) == {'tome r=3', conversion.FLOOR}
  tome_macs = conversion.methods.macs(conversion.methods.build(
      conversion.compare.method_model(base, 'tome', {'r': 3})))
  # Same blocks at the same counts: only ToMe's matching products are missing.
  assert twins['tome r=3'][1] == tome_macs['total'] - tome_macs['matching']


def test_why_splits_a_token_method_into_hardware_and_own_work():
  assert conversion.why({32: 0.99, 1: 0.96}, None, 'x') == '—'
  assert conversion.why({32: 0.99, 1: 0.85}, {32: 1.0, 1: 0.90}, 'x') == (
      'b1: 0.85 = 0.90 blocks alone x 0.94 own work')
  assert conversion.why({32: 0.6, 1: 0.5}, None, 'its own work') == 'b32, b1: its own work'


def test_reason_names_the_largest_excess_first():
  excess = {'matmul': 0.1, 'select': 2.0, 'exp': 0.0, 'rest': 0.6}
  assert conversion.reason(0.97, 0.99, excess, 0.9).startswith('nothing')
  got = conversion.reason(0.80, 0.99, excess, 0.9)
  assert got == ('gathers, scatters and sorts (+2.0 ms); element-wise work, transposes and '
                 'copies (not MACs) (+0.6 ms)')
  assert 'run at 0.70' in conversion.reason(0.8, 0.9, {**excess, 'matmul': 5.0}, 0.7)


def test_vtp_irregular_widths_round_up_to_the_alignment():
  base = ml_collections.ConfigDict(dict(name='vit', dtype='float32', image_size=32,
                                        patch_size=8, width=32, depth=2, num_heads=2,
                                        mlp_dim=64, num_classes=10))
  exact = conversion.vtp_irregular(base, 0.4, 1)
  aligned = conversion.vtp_irregular(base, 0.4, 16)
  assert all(m % 16 == 0 for m in aligned.mlp_dim)
  assert all(a >= e for a, e in zip(aligned.mlp_dim, exact.mlp_dim))
  assert len(set(exact.mlp_dim)) > 1 or len(set(exact.head_dim)) > 1  # irregular
