"""ViTDet options of the backbone (windows, relative positions, resized absolute positions, the
simple feature pyramid), the import of ViTDet checkpoints, and the Eventful Transformer on a
windowed backbone.

The reference outputs come from tests/fixtures/make_vitdet.py: a PyTorch transcription of
detectron2's ViTDet backbone and pyramid (and the official Eventful code's relative-position
resizing), run once with torch; the tests need no torch."""
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokensparse import backbone, convert
from tokensparse import functional as F
from tokensparse.backbone.vit import ViT
from tokensparse.detection.model import Detector, detector_macs
from tokensparse.methods.eventful.detection import eventful_detector_macs
from tokensparse.methods.eventful.detection import run_clip as _run_clip
from tokensparse.methods.eventful.model import EventfulViT

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
TINY = dict(num_classes=1, patch_size=4, width=32, depth=4, num_heads=4, mlp_dim=128,
            classifier='gap', window_size=4, global_blocks=(1, 3), rel_pos=True, rel_pos_size=6,
            posemb_grid=4)


def run_clip(model, variables, clips):
  return jax.jit(lambda v, c: _run_clip(model, v, c))(variables, clips)


def dense_apply(model, variables, x):
  return jax.jit(model.apply)(variables, x)


def tiny_detector(size, resize='linear', net=ViT, **extra):
  return Detector(net(image_size=size, rel_pos_resize=resize, **TINY, **extra), num_classes=3,
                  out_channels=8)


# ----------------------------------------------------------------------------- functions
def test_resize_matrix_follows_torch_rules():
  # Same size: identity. Linear 2 -> 4 (align_corners=False): sources -0.25 (clamped to 0),
  # 0.25, 0.75, 1.25 -> weights by hand.
  np.testing.assert_allclose(F.resize_matrix(5, 5, 'bicubic'), np.eye(5), atol=1e-12)
  np.testing.assert_allclose(F.resize_matrix(2, 4, 'linear'),
                             [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  # Bicubic a = -0.75 keeps constants and rows sum to 1.
  m = F.resize_matrix(7, 3, 'bicubic')
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
  # torch's cubic weights at t = 0.5: (-0.09375, 0.59375, 0.59375, -0.09375).
  np.testing.assert_allclose(F.resize_matrix(2, 1, 'bicubic'), [[0.5, 0.5]], atol=1e-12)
  np.testing.assert_allclose(F.resize_matrix(4, 2, 'bicubic')[0],
                             [0.59375 - 0.09375, 0.59375, -0.09375, 0.0], atol=1e-12)


def test_windows_round_trip_with_padding():
  x = jnp.arange(2 * 5 * 6 * 3, dtype=jnp.float32).reshape(2, 30, 3)
  w = F.window_partition(x, (5, 6), 4, pad=-1.0)
  assert w.shape == (2 * 2 * 2, 16, 3)
  np.testing.assert_array_equal(F.window_merge(w, (5, 6), 4), x)
  # The first window holds grid rows 0-3, columns 0-3; padding fills the rest.
  grid = np.asarray(x).reshape(2, 5, 6, 3)
  np.testing.assert_array_equal(np.asarray(w[0]).reshape(4, 4, 3), grid[0, :4, :4])
  assert (np.asarray(w[3]).reshape(4, 4, 3)[1:] == -1).all()      # rows 5-7 of the padded grid


def test_rel_pos_table_indexes_offsets():
  table = jnp.arange(7 * 2, dtype=jnp.float32).reshape(7, 2)       # 4 positions: offsets -3..3
  r = F.rel_pos_table(table, 4)
  for i in range(4):
    for j in range(4):
      np.testing.assert_array_equal(r[i, j], table[i - j + 3])
  # Both resizings agree where the sizes match, and differ where they do not.
  np.testing.assert_array_equal(F.rel_pos_table(table, 4, 'bicubic'), r)
  assert not np.allclose(F.rel_pos_table(table, 3, 'bicubic'), F.rel_pos_table(table, 3))


# ----------------------------------------------------------------------------- import parity
@pytest.mark.parametrize('layout,mode,resize', [('vitdet_tiny.pth', 'detectron2', 'linear'),
                                                ('vitdet_tiny_eventful.pth', 'eventful',
                                                 'bicubic')])
def test_import_matches_reference_forward(layout, mode, resize):
  ref = np.load(os.path.join(FIXTURES, 'vitdet_tiny.npz'))
  sd = convert.read_state_dict(os.path.join(FIXTURES, layout))
  for size in (24, 20):   # 24 px: tables and position grid fit; 20 px: all resized, windows padded
    det = tiny_detector(size, resize)
    params, info = convert.from_vitdet(sd, det)
    assert info['format'] == f'vitdet-{"detectron2" if mode == "detectron2" else "wisionlab"}'
    outs = det.apply({'params': params}, ref[f'images_{size}'],
                     method=Detector.pyramid_features)
    assert [o.shape[1] for o in outs] == [4 * size // 4, 2 * size // 4, size // 4, size // 8]
    for i, o in enumerate(outs):
      np.testing.assert_allclose(o, ref[f'{mode}_{size}_{i}'], atol=2e-5, rtol=1e-4)
  if mode == 'detectron2':   # the checkpoint's own detector head is named, not imported
    assert info['ignored'] == ['proposal_generator.rpn_head.conv.weight',
                               'roi_heads.box_predictor.cls_score.weight']
    # detectron2's resizing is not the official Eventful code's at 20 px
    assert np.abs(ref['detectron2_20_2'] - ref['eventful_20_2']).max() > 1e-3


def test_both_layouts_give_the_same_parameters():
  det = tiny_detector(24)
  a, _ = convert.from_vitdet(convert.read_state_dict(os.path.join(FIXTURES, 'vitdet_tiny.pth')),
                             det)
  b, _ = convert.from_vitdet(convert.read_state_dict(
      os.path.join(FIXTURES, 'vitdet_tiny_eventful.pth')), det)
  fa, fb = flax.traverse_util.flatten_dict(a), flax.traverse_util.flatten_dict(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k])


def test_missing_tensor_is_named():
  sd = convert.read_state_dict(os.path.join(FIXTURES, 'vitdet_tiny.pth'))
  del sd['backbone.net.blocks.1.attn.rel_pos_h']
  del sd['backbone.simfp_0.4.norm.weight']
  with pytest.raises(convert.CheckpointMismatch) as e:
    convert.from_vitdet(sd, tiny_detector(24))
  msg = str(e.value)
  assert 'encoderblock_1/MultiHeadDotProductAttention_1/rel_pos_h' in msg
  assert 'pyramid/simfp_0/lateral_norm/scale' in msg


# ----------------------------------------------------------------------------- Eventful
@pytest.fixture(scope='module')
def imported():
  sd = convert.read_state_dict(os.path.join(FIXTURES, 'vitdet_tiny.pth'))
  det = tiny_detector(20)
  params, _ = convert.from_vitdet(sd, det)
  head = det.init(jax.random.key(0), jnp.zeros((1, 20, 20, 3)))['params']['head']
  return {'params': {**params, 'head': head}}


def clip(t=4):
  """A static random background with a bright square moving two pixels per frame."""
  rng = np.random.default_rng(0)
  bg = rng.normal(size=(2, 20, 20, 3)).astype(np.float32)
  frames = []
  for f in range(t):
    x = bg.copy()
    x[:, 4:10, 2 + 2 * f:8 + 2 * f] = 3.0
    frames.append(x)
  return jnp.asarray(np.stack(frames, 1))


@pytest.mark.parametrize('variant', ['tokenwise', 'sparse_qk', 'full'])
def test_eventful_at_r_equal_n_is_the_dense_detector(imported, variant):
  dense = tiny_detector(20)
  x = clip()
  out, updated = run_clip(tiny_detector(20, net=EventfulViT, capacity=25, variant=variant),
                          imported, x)
  for t in range(x.shape[1]):
    want = dense_apply(dense, imported, x[:, t])
    for k in want:
      np.testing.assert_allclose(out[k][:, t], want[k], atol=2e-5, rtol=1e-4)
  assert updated.shape == (2, 4, 4, 25) and updated.all()


def test_eventful_below_n_recomputes_r_tokens_and_moving_ones(imported):
  x = clip()
  outs = {}
  for variant in ('tokenwise', 'sparse_qk', 'full'):
    outs[variant], updated = run_clip(
        tiny_detector(20, net=EventfulViT, capacity=6, variant=variant), imported, x)
    assert (updated[:, 1:].sum(-1) == 6).all()
  # The sparse query-key update gives the token-wise outputs (it only saves operations).
  for k in outs['tokenwise']:
    np.testing.assert_allclose(outs['sparse_qk'][k], outs['tokenwise'][k], atol=2e-5, rtol=1e-4)
  # The first gate picks the tokens the square entered or left (frame 1: columns 2-9, rows 4-9
  # of pixels = token rows 1-2, token columns 0-2).
  first = np.asarray(updated[0, 1, 0]).reshape(5, 5)
  assert first[1:3, 0:3].sum() >= 4 and first[4].sum() == 0


def test_eventful_macs_count_windows_and_relative_positions():
  dense = tiny_detector(20)
  ev = tiny_detector(20, net=EventfulViT, capacity=25, variant='tokenwise')
  d, e = detector_macs(dense), eventful_detector_macs(ev)
  # r = N in token-wise mode: the same products as dense, plus the gates' error norms.
  gates = 4 * 25 * 32 * 3
  assert e['backbone'] == d['backbone'] + gates
  # ViTDet-B at 1024 px: the paper's 467 GMACs per frame for the backbone.
  b = Detector(ViT(num_classes=1, image_size=1024, patch_size=16, width=768, depth=12,
                   num_heads=12, mlp_dim=3072, classifier='gap', window_size=14,
                   global_blocks=(2, 5, 8, 11), rel_pos=True, rel_pos_size=64, posemb_grid=14),
               num_classes=30)
  assert round(detector_macs(b)['backbone'] / 1e9) == 468


def test_bad_vitdet_fields_are_named():
  base = dict(num_classes=3, image_size=20, patch_size=4, width=32, depth=4, num_heads=4,
              mlp_dim=64, classifier='gap', window_size=4)
  with pytest.raises(ValueError, match='model.classifier'):
    backbone.validate({**base, 'classifier': 'token'})
  with pytest.raises(ValueError, match=r'model.global_blocks.*block 7'):
    backbone.validate({**base, 'global_blocks': [1, 7]})
  with pytest.raises(ValueError, match='model.rel_pos_resize'):
    backbone.validate({**base, 'rel_pos': True, 'rel_pos_resize': 'cubic'})
  with pytest.raises(ValueError, match='model.image_size'):
    backbone.validate({**base, 'image_size': 22})
  with pytest.raises(ValueError, match=r'capacity=30: must be in \[1, N=25\]'):
    tiny_detector(20, net=EventfulViT, capacity=30).init(
        jax.random.key(0), jnp.zeros((1, 20, 20, 3)),
        method=lambda m, x: m.backbone.init_features(x))


def test_eventful_thresholds_select_by_error(imported):
  """A threshold no token's error exceeds recomputes nothing after frame 0 (the skips still
  carry the new frame); a zero threshold (capacity N) recomputes every token that changed at
  all, which gives the dense detector's outputs with the exact variants (the full variant's
  delta attention-value update keeps stale attention columns of unchanged keys)."""
  x = clip()
  out, updated = run_clip(tiny_detector(20, net=EventfulViT, capacity=0, threshold=1e9),
                          imported, x)
  assert updated[:, 0].all() and not updated[:, 1:].any()
  out, updated = run_clip(tiny_detector(20, net=EventfulViT, capacity=0, threshold=0.0,
                                        variant='sparse_qk'), imported, x)
  assert 0 < updated[:, 1:, 0].sum() < updated[:, 1:, 0].size   # block 0: the moving square
  for t in range(1, 4):
    dense = dense_apply(tiny_detector(20), imported, x[:, t])
    for k in dense:
      np.testing.assert_allclose(out[k][:, t], dense[k], atol=2e-5, rtol=1e-4)
