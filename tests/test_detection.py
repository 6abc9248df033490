"""The detector's pure functions (FCOS targets, focal loss, NMS, decoding), the COCO-style mAP
against pycocotools, the offline detection clips, and the train -> Eventful evaluation path
as a user runs it."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from tokensparse.data import fashion_mnist_detection as fmd
from tokensparse.detection import fcos, metrics
from tests import cli_runs


def test_targets_by_hand():
  # One 16 x 16 box centred at (16, 16) on a 4 x 4 grid of stride 8 (cell centres 4, 12, 20,
  # 28). Centre sampling (1.5 strides = 12 px) keeps the cells at 12 and 20 on both axes.
  points, stride, level = fcos.locations([(4, 4)], [8])
  ranges = fcos.size_ranges([8])[level]
  boxes = jnp.array([[8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 0.0, 0.0]])
  cls, gt, ctr = fcos.targets(points, stride, ranges, boxes, jnp.array([3, 5]),
                              jnp.array([True, False]))
  want = np.full((4, 4), -1)
  want[1:3, 1:3] = 3
  np.testing.assert_array_equal(np.asarray(cls).reshape(4, 4), want)
  # cell (12, 12): left 4, right 12, top 4, bottom 12 -> sqrt(4/12 * 4/12) = 1/3
  np.testing.assert_allclose(np.asarray(ctr).reshape(4, 4)[1, 1], 1 / 3, rtol=1e-6)
  np.testing.assert_array_equal(gt[5], boxes[0])


def test_smallest_box_wins_and_levels_split_by_size():
  points, stride, level = fcos.locations([(8, 8), (4, 4)], [4, 8])
  ranges = fcos.size_ranges([4, 8], base=4.0)[level]  # stride 4: (0, 16], 8: (16, inf)
  boxes = jnp.array([[0.0, 0.0, 32.0, 32.0], [10.0, 10.0, 22.0, 22.0]])
  cls, _, _ = fcos.targets(points, stride, ranges, boxes, jnp.array([1, 2]),
                           jnp.array([True, True]), radius=10.0)
  cls = np.asarray(cls)
  assert set(cls[level == 0][cls[level == 0] >= 0]) == {2}   # the small box on the fine level
  assert set(cls[level == 1][cls[level == 1] >= 0]) == {1}   # the large one on the coarse level


def test_focal_loss_matches_formula():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 3)).astype(np.float32)
  c = np.array([0, 2, -1, 1, -1])
  got = np.asarray(fcos.focal_loss(jnp.asarray(x), jnp.asarray(c)))
  y = np.eye(3)[np.maximum(c, 0)] * (c >= 0)[:, None]
  p = 1 / (1 + np.exp(-x))
  pt = np.where(y == 1, p, 1 - p)
  at = np.where(y == 1, 0.25, 0.75)
  np.testing.assert_allclose(got, (-at * (1 - pt) ** 2 * np.log(pt)).sum(1), rtol=1e-5)


def greedy_nms(boxes, scores, classes, thr):
  keep = []
  for i in np.argsort(-scores, kind='stable'):
    if scores[i] <= 0:
      continue
    if all(classes[i] != classes[j] or metrics.iou_matrix(boxes[i:i + 1], boxes[j:j + 1])[0, 0]
           <= thr for j in keep):
      keep.append(i)
  return sorted(keep)


def test_nms_matches_a_greedy_loop():
  rng = np.random.default_rng(1)
  for _ in range(5):
    xy = rng.uniform(0, 40, (30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (30, 2))], 1).astype(np.float32)
    scores = np.sort(rng.uniform(0, 1, 30))[::-1].astype(np.float32)
    scores[-3:] = 0
    classes = rng.integers(0, 3, 30)
    keep = np.asarray(fcos.nms(jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes),
                               0.5))
    assert list(np.flatnonzero(keep)) == greedy_nms(boxes, scores, classes, 0.5)


def test_decode_finds_the_box_the_outputs_encode():
  points, _, _ = fcos.locations([(4, 4)], [8])
  p = len(points)
  logits = np.full((1, p, 3), -8.0, np.float32)
  logits[0, 5, 2] = logits[0, 6, 2] = 6.0                   # two cells see class 2
  ltrb = np.tile(np.array([4, 4, 12, 12], np.float32), (1, p, 1))  # box [8, 8, 24, 24] at cell 5
  ltrb[0, 6] = [11, 5, 5, 11]                               # the same box seen from cell 6
  out = {'logits': jnp.asarray(logits), 'ltrb': jnp.asarray(ltrb),
         'centerness': jnp.full((1, p), 4.0)}
  d = fcos.decode(out, jnp.asarray(points), max_candidates=10, max_detections=5)
  assert int(d['valid'].sum()) == 1                         # the duplicate is suppressed
  np.testing.assert_allclose(d['boxes'][0, 0], [8, 8, 24, 24])
  assert int(d['classes'][0, 0]) == 2 and float(d['scores'][0, 0]) > 0.9


def test_map_matches_pycocotools():
  pycocotools = pytest.importorskip('pycocotools.cocoeval')  # in the test extra: always there
  from pycocotools.coco import COCO
  rng = np.random.default_rng(2)
  dets, gts, images, anns, results = [], [], [], [], []
  for i in range(12):
    g = rng.integers(0, 5)
    xy = rng.uniform(0, 60, (g, 2))
    gb = np.concatenate([xy, xy + rng.uniform(8, 30, (g, 2))], 1)
    gc = rng.integers(0, 3, g)
    # detections: jittered copies of some ground truth, plus false positives
    jit = gb + rng.normal(0, 3, gb.shape)
    fp_xy = rng.uniform(0, 60, (3, 2))
    db = np.concatenate([jit, np.concatenate([fp_xy, fp_xy + 15], 1)])
    dc = np.concatenate([np.where(rng.random(g) < 0.8, gc, (gc + 1) % 3), rng.integers(0, 3, 3)])
    ds = rng.uniform(0.05, 1, len(db))
    dets.append({'boxes': db, 'scores': ds, 'classes': dc})
    gts.append({'boxes': gb, 'classes': gc})
    images.append({'id': i, 'width': 100, 'height': 100})
    for b, c in zip(gb, gc):
      anns.append({'id': len(anns) + 1, 'image_id': i, 'category_id': int(c), 'iscrowd': 0,
                   'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                   'area': (b[2] - b[0]) * (b[3] - b[1])})
    for b, c, s in zip(db, dc, ds):
      results.append({'image_id': i, 'category_id': int(c), 'score': float(s),
                      'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
  coco = COCO()
  coco.dataset = {'images': images, 'annotations': anns,
                  'categories': [{'id': c} for c in range(3)]}
  coco.createIndex()
  ev = pycocotools.COCOeval(coco, coco.loadRes(results), 'bbox')
  ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ['all']
  ev.params.maxDets = [100]
  ev.evaluate()
  ev.accumulate()
  p = ev.eval['precision'][:, :, :, 0, 0]                 # [T, R, K]
  ours = metrics.evaluate(dets, gts, 3)
  np.testing.assert_allclose(ours['mAP'], p[p > -1].mean(), atol=1e-9)
  np.testing.assert_allclose(ours['mAP50'], p[0][p[0] > -1].mean(), atol=1e-9)


def test_rendered_boxes_are_tight_and_classes_differ():
  rng = np.random.default_rng(0)
  items = np.zeros((2, 28, 28), np.uint8)
  items[0, 5:20, 8:14] = 200
  items[1, 2:26, 3:25] = 100
  video, boxes, labels, valid = fmd.render(items, np.array([4, 7]), np.zeros((48, 48)), 3, rng,
                                           3.0, 0.3, 3)
  for t in range(3):
    for j in np.flatnonzero(valid[t]):
      x0, y0, x1, y1 = boxes[t, j].astype(int)
      assert video[t, y0:y1, x0:x1].any()
      inside = np.zeros((48, 48), bool)
      inside[y0:y1, x0:x1] = True
      if j == 0:  # the small bright item: every one of its pixels is inside its box
        assert not ((video[t, :, :, 0] == 200) & ~inside).any()
  assert set(labels[valid]) <= {4, 7} and not valid[:, 2].any()


def train_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      'c', os.path.join(cli_runs.REPO, 'configs/vitdet/fashion_mnist_detection.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('tiny')


def test_train_then_evaluate_as_eventful(tmp_path):
  """The README's path on the tiny config: train.py trains the detector (a detection config
  goes to tokensparse.detection.train), resumes as a no-op, and the evaluation runs the same
  weights as an Eventful Transformer on test clips."""
  workdir = str(tmp_path / 'det')
  env = cli_runs.env(2)
  base = [sys.executable, os.path.join(cli_runs.REPO, 'train.py'), '--config',
          os.path.join(cli_runs.REPO, 'configs/vitdet/fashion_mnist_detection.py:tiny'),
          '--workdir', workdir, f'--config.data.data_dir={tmp_path / "tfds"}']
  first = subprocess.run(base, env=env, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-2000:]
  assert 'eval at step 6: mAP50' in first.stdout
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert any(r.get('split') == 'eval' and 'mAP50' in r for r in records)
  again = subprocess.run(base, env=env, capture_output=True, text=True, timeout=600)
  assert 'nothing to do' in again.stdout
  out = tmp_path / 'eval.json'
  ev = subprocess.run([sys.executable, '-m', 'tokensparse.methods.eventful.detection', '--workdir',
                       workdir, '--capacity', '9', '--clips', '4', '--json', str(out)],
                      env=env, capture_output=True, text=True, timeout=600, cwd=cli_runs.REPO)
  assert ev.returncode == 0, ev.stderr[-2000:]
  got = json.loads(out.read_text())
  assert got['eventful']['tokens_per_gate'] == 9.0 and got['policy'] == 'r = 9 of 36'
  assert got['eventful']['macs_per_frame'] < got['dense']['macs_per_frame']
  bad = subprocess.run([sys.executable, '-m', 'tokensparse.methods.eventful.detection', '--workdir',
                        workdir, '--capacity', '37'], env=env, capture_output=True, text=True,
                       timeout=600, cwd=cli_runs.REPO)
  assert bad.returncode == 1 and bad.stderr.strip() == \
      'error: --capacity 37: must be in [1, N=36] (0 means N)'
  from tokensparse.methods.eventful.detection import eventful_detector
  with pytest.raises(ValueError, match=r'eventful.variant=.sparse.: expected one of'):
    eventful_detector(train_config(), variant='sparse')
