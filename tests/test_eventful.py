"""Eventful Transformer: exactness at r = N, the delta-AV oracle, policies, static state, scan."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokensparse.flops import vit_macs
from tokensparse.methods.eventful import flops
from tokensparse.methods.eventful import ops as F
from tokensparse.methods.eventful.model import VARIANTS, EventfulViT, run_clip
from tokensparse.backbone.vit import ViT

KW = dict(num_classes=5, image_size=16, patch_size=4, width=32, depth=2, num_heads=4, mlp_dim=64)
N = 17  # 16 patches + cls


@pytest.fixture(scope='module')
def setup():
  clips = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16, 16, 3))
  # A static background with a moving bright square, as in real clips.
  clips = clips.at[:, :, :, :].set(clips[:, :1])
  for t in range(5):
    clips = clips.at[:, t, 2 + 2 * t:6 + 2 * t, 3:7].add(3.0)
  dense = ViT(**KW)
  variables = dense.init(jax.random.PRNGKey(1), clips[:, 0])
  per_frame = jax.vmap(lambda f: dense.apply(variables, f)[0], in_axes=1, out_axes=1)(clips)
  return clips, variables, per_frame


@pytest.mark.parametrize('variant', VARIANTS)
def test_every_token_recomputed_equals_dense(setup, variant):
  clips, variables, want = setup
  logits, updated = run_clip(EventfulViT(**KW, capacity=N, variant=variant), variables, clips)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  assert updated.shape == (2, 5, 2, N)


@pytest.mark.parametrize('variant', ['tokenwise', 'sparse_qk'])
def test_threshold_zero_equals_dense(setup, variant):
  """A token whose error is exactly 0 has exactly its old input, so skipping it changes
  nothing. (Not so for 'full': a skipped key's attention column still moves through the
  softmax normalisation while delta AV keeps its reference.)"""
  clips, variables, want = setup
  model = EventfulViT(**KW, capacity=N, variant=variant, threshold=0.0)
  logits, updated = run_clip(model, variables, clips)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  # Background tokens did not change, so a threshold of 0 skips them.
  assert int(updated[:, 1:].sum()) < updated[:, 1:].size


def test_delta_av_matches_its_oracle(setup):
  """After several sparse frames the attention-value state equals A_ref @ V_buf."""
  clips, variables, _ = setup
  model = EventfulViT(**KW, capacity=5, variant='full')
  state, _ = model.apply(variables, clips[:, 0], method=EventfulViT.init_state)
  for t in range(1, 5):
    state, _ = model.apply(variables, state, clips[:, t], method=EventfulViT.step)
    for st in state.blocks:
      # attn_ref is stored key-major: [B, H, keys, queries].
      np.testing.assert_allclose(st.av, jnp.einsum('bhkq,bhkd->bhqd', st.attn_ref, st.v),
                                 rtol=1e-5, atol=1e-5)
      # Logits are exactly those of the buffers (sparse QK keeps them consistent).
      np.testing.assert_allclose(st.logits, F.head_logits(st.q, st.k, 8 ** -0.5),
                                 rtol=1e-5, atol=1e-5)


def test_sparse_qk_changes_nothing_but_the_cost(setup):
  clips, variables, _ = setup
  a, _ = run_clip(EventfulViT(**KW, capacity=4, variant='tokenwise'), variables, clips)
  b, _ = run_clip(EventfulViT(**KW, capacity=4, variant='sparse_qk'), variables, clips)
  c, _ = run_clip(EventfulViT(**KW, capacity=4, variant='full'), variables, clips)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(a - c).max()) < 0.5  # delta AV: a further, small approximation


def test_scan_equals_a_python_loop_over_frames(setup):
  clips, variables, _ = setup
  model = EventfulViT(**KW, capacity=6, variant='full')
  scanned, _ = jax.jit(lambda c: run_clip(model, variables, c))(clips)
  # Jitted steps: with equal errors (static background) top-k may break ties differently
  # between eager and compiled code, and the full variant's choice among tied tokens matters.
  step = jax.jit(lambda s, f: model.apply(variables, s, f, method=EventfulViT.step))
  state, first = jax.jit(lambda f: model.apply(variables, f, method=EventfulViT.init_state))(
      clips[:, 0])
  outs = [first]
  for t in range(1, 5):
    state, logits = step(state, clips[:, t])
    outs.append(logits)
  np.testing.assert_allclose(scanned, jnp.stack(outs, axis=1), rtol=1e-5, atol=1e-5)


def test_a_batch_of_clips_equals_clips_one_by_one(setup):
  clips, variables, _ = setup
  model = EventfulViT(**KW, capacity=6, variant='full', threshold=0.5)
  together, _ = run_clip(model, variables, clips)
  for i in range(2):
    alone, _ = run_clip(model, variables, clips[i:i + 1])
    np.testing.assert_allclose(together[i:i + 1], alone, rtol=1e-5, atol=1e-5)


def test_runtime_budget_equals_a_smaller_capacity_without_recompiling(setup):
  clips, variables, _ = setup
  traces = []
  model = EventfulViT(**KW, capacity=8, variant='full')

  @jax.jit
  def step(state, frame, budget):
    traces.append(1)
    return model.apply(variables, state, frame, budget, method=EventfulViT.step)

  state, _ = model.apply(variables, clips[:, 0], method=EventfulViT.init_state)
  small = EventfulViT(**KW, capacity=3, variant='full')
  s_state, _ = small.apply(variables, clips[:, 0], method=EventfulViT.init_state)
  for t, budget in zip(range(1, 5), (3, 3, 8, 3)):
    state, logits = step(state, clips[:, t], jnp.int32(budget))
    if budget == 3:
      s_state, want = small.apply(variables, s_state, clips[:, t], method=EventfulViT.step)
      np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    else:  # keep the reference model in step with what the budget-8 frame did
      s_state = state
    assert int(state.updated[:, 0].sum(-1).max()) == budget
  assert len(traces) == 1  # one compile for every budget and frame
  # The state's shapes never change from frame to frame.
  shapes = jax.tree.map(jnp.shape, state)
  state2, _ = step(state, clips[:, 1], jnp.int32(2))
  assert jax.tree.map(jnp.shape, state2) == shapes


def test_gate_moves_only_selected_references():
  ref = jnp.zeros((1, 4, 2))
  cur = jnp.array([[[1.0, 0], [0, 3], [0, 0.5], [2, 0]]])
  idx, valid = F.select_tokens(F.token_errors(cur, ref), 3, budget=2)
  np.testing.assert_array_equal(idx, [[1, 3, 0]])
  np.testing.assert_array_equal(valid, [[True, True, False]])
  selected, new_ref = F.gate_tokens(ref, cur, idx, valid)
  np.testing.assert_array_equal(selected, cur[:, [1, 3, 0]])
  np.testing.assert_array_equal(new_ref, [[[0, 0], [0, 3], [0, 0], [2, 0]]])


def test_put_tokens_on_the_head_major_axis_matches_numpy():
  rng = np.random.default_rng(0)
  x, values = (rng.normal(size=s).astype(np.float32) for s in ((2, 3, 6, 4), (2, 3, 2, 4)))
  idx = np.array([[4, 1], [0, 5]])
  valid = np.array([[True, False], [True, True]])
  want = x.copy()
  for b in range(2):
    for j in range(2):
      if valid[b, j]:
        want[b, :, idx[b, j]] = values[b, :, j]
  got = F.put_tokens(jnp.asarray(x), jnp.asarray(idx), jnp.asarray(values), jnp.asarray(valid),
                     axis=2)
  np.testing.assert_allclose(got, want, rtol=0, atol=0)
  np.testing.assert_allclose(F.take_tokens(jnp.asarray(x), jnp.asarray(idx), 2),
                             np.stack([x[b][:, idx[b]] for b in range(2)]))


def test_sparse_qk_and_softmax_columns_match_numpy():
  rng = np.random.default_rng(1)
  n, m, scale = 7, 3, 0.3
  q_old, k_old = rng.normal(size=(2, n, 5)), rng.normal(size=(2, n, 5))
  q, k = q_old.copy(), k_old.copy()
  idx = np.array([[5, 0, 2]])
  q[:, idx[0]], k[:, idx[0]] = rng.normal(size=(2, m, 5)), rng.normal(size=(2, m, 5))
  stale = scale * np.einsum('hnd,hmd->hnm', q_old, k_old)
  fresh = scale * np.einsum('hnd,hmd->hnm', q, k)
  want = stale.copy()  # rows and columns of the updated tokens from the new q, k
  want[:, idx[0], :], want[:, :, idx[0]] = fresh[:, idx[0], :], fresh[:, :, idx[0]]
  j = lambda a: jnp.asarray(a[None], jnp.float32)
  logits, cols = F.sparse_qk_update(j(stale), j(q), j(k), j(q[:, idx[0]]), j(k[:, idx[0]]),
                                    jnp.asarray(idx), scale)
  np.testing.assert_allclose(logits[0], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cols[0], want[:, :, idx[0]], rtol=1e-5, atol=1e-5)
  e = np.exp(want - want.max(-1, keepdims=True))
  np.testing.assert_allclose(F.softmax_columns(logits, cols)[0],
                             (e / e.sum(-1, keepdims=True))[:, :, idx[0]], rtol=1e-5, atol=1e-6)


def test_delta_av_with_a_validity_mask_matches_numpy():
  rng = np.random.default_rng(2)
  n, m, d = 6, 3, 4
  a_ref = rng.uniform(size=(1, 2, n, n))             # queries x keys
  v_buf = rng.normal(size=(1, 2, n, d))
  idx, valid = np.array([[4, 1, 3]]), np.array([[True, True, False]])
  v_new_s = rng.normal(size=(1, 2, m, d))
  attn_cols = rng.uniform(size=(1, 2, n, m))
  v_after, a_after = v_buf.copy(), a_ref.copy()    # only valid keys move
  for j in range(m):
    if valid[0, j]:
      v_after[:, :, idx[0, j]] = v_new_s[:, :, j]
      a_after[:, :, :, idx[0, j]] = attn_cols[:, :, :, j]
  v_s = np.where(valid[:, None, :, None], v_new_s, v_buf[:, :, idx[0]])
  av, attn_ref = F.delta_av_update(
      jnp.asarray(a_ref @ v_buf, jnp.float32), jnp.asarray(np.swapaxes(a_ref, -1, -2), jnp.float32),
      jnp.asarray(attn_cols, jnp.float32), jnp.asarray(v_buf[:, :, idx[0]], jnp.float32),
      jnp.asarray(v_s, jnp.float32), jnp.asarray(idx), jnp.asarray(valid))
  np.testing.assert_allclose(av, a_after @ v_after, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(attn_ref, np.swapaxes(a_after, -1, -2), rtol=1e-6, atol=1e-6)


def test_bad_capacity_is_named():
  model = EventfulViT(**KW, capacity=40)
  with pytest.raises(ValueError, match=r'eventful capacity=40: must be in \[1, N=17\]'):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))


def test_operation_counter():
  dense = vit_macs(ViT(**KW))['total']
  full_n = flops.eventful_macs(EventfulViT(**KW, capacity=N, variant='tokenwise'))
  gates = 2 * (N * 32 * 3)
  assert full_n['total'] == dense + gates
  quarter = flops.eventful_macs(EventfulViT(**KW, capacity=4, variant='full'))
  assert quarter['qk'] == quarter['av'] == 2 * (2 * N * 4 * 32)
  assert quarter['total'] < 0.4 * dense


def test_a_timm_checkpoint_runs_eventful_and_matches_numpy(tiny_model_config):
  """Off-the-shelf weights: a timm state dict through the converter, every frame of a clip at
  r = N equals an independent numpy forward pass of that frame."""
  from tokensparse import backbone, convert
  from tests import numpy_vit
  rng = np.random.default_rng(0)
  sd = numpy_vit.random_timm_state_dict(rng, width=32, depth=2, num_heads=4, mlp_dim=64,
                                        patch=4, channels=3, grid=4, num_classes=5)
  params, _ = convert.from_timm(sd, tiny_model_config)
  clip = rng.standard_normal((1, 3, 16, 16, 3)).astype(np.float32)
  model = EventfulViT(**backbone.backbone_kwargs(tiny_model_config), variant='full')
  logits, _ = run_clip(model, {'params': params}, jnp.asarray(clip))
  for t in range(3):
    want = numpy_vit.forward(sd, clip[:, t].astype(np.float64), num_heads=4, depth=2)
    np.testing.assert_allclose(logits[:, t], want, rtol=1e-4, atol=1e-5)
