"""benchmarks/compare.py's machinery end to end on a tiny model, so the script cannot rot: knob
solving by the MAC counters, every method's row trained from one teacher, VTP's three stages,
off-the-shelf rows, the Eventful clip table, speed rounds, the report, the plot, and resuming."""
import json
import os
import sys

import numpy as np
from PIL import Image

from tests import fake_data

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))
import compare  # noqa: E402


def tiny_settings(tmp_path):
  teacher = fake_data.tiny_config(tmp_path, **{'model.image_size': 42, 'data.canvas_size': 42})
  with teacher.unlocked():
    teacher.total_steps = 4
  return compare.Settings(
      root=str(tmp_path / 'compare'), teacher=teacher, row_steps=2, budgets=(0.6,), clips=8,
      clip_config='tiny', speed_model=dict(image_size=32, patch_size=8, width=32, depth=2,
                                           num_heads=2, mlp_dim=64, num_classes=10),
      speed_batches=(8, 1), rounds=1, iters=1, report=str(tmp_path / 'COMPARE.md'),
      plot=str(tmp_path / 'pareto.png'))


def test_knobs_hit_the_budget_by_the_mac_counter(tiny_model_config):
  with tiny_model_config.unlocked():
    tiny_model_config.update(image_size=32, depth=4)  # 64 patches, three pruning stages
  cases = [(m, b) for m in ('dynamic_vit', 'static', 'evit') for b in (0.5, 0.8)]
  for method, budget in cases + [('tome', 0.8), ('pooled_vit', 0.8), ('token_learner', 0.6)]:
    fields, frac = compare.solve(tiny_model_config, method, budget, 3)
    model = compare.methods.build(compare.method_model(tiny_model_config, method, fields))
    dense = compare.methods.build(tiny_model_config)
    want = (compare.methods.macs(model, 3)['total'] / compare.methods.macs(dense, 3)['total'])
    assert abs(frac - want) < 1e-9            # the fraction reported is the counter's
    assert abs(frac - budget) < 0.1, (method, budget, fields, frac)
    if (method, budget) in cases:             # continuous knobs come close
      assert abs(frac - budget) < 0.03, (method, budget, fields, frac)
  # The cheaper budget gets the cheaper setting.
  assert compare.solve(tiny_model_config, 'evit', 0.5, 3)[1] < \
      compare.solve(tiny_model_config, 'evit', 0.8, 3)[1]
  from tokensparse.methods import dynamic_vit
  assert dynamic_vit.depth_stages(12) == (3, 6, 9) and dynamic_vit.depth_stages(6) == (2, 3, 4)


def test_rows_come_from_the_registry():
  assert list(compare.ROWS)[:7] == ['dynamic_vit', 'static', 'pooled_vit', 'token_learner', 'vtp',
                                    'tome', 'evit']
  for key, (method, variant) in compare.ROWS.items():
    assert compare.methods.get(method.name) is method and variant.key == key
    assert method.budget_knobs(dict(depth=12, image_size=224, patch_size=16, classifier='token'))
  static = compare.method_model(compare.dense_model(
      compare.configs.from_file('vit/fashion_mnist_canvas.py').model), 'static')
  assert static.name == 'dynamic_vit' and static.dynamic_vit.selector == 'static'


def test_recipe_is_what_the_method_config_adds():
  dyn = compare.recipe('dynamic_vit')
  assert dyn['model']['name'] == 'dynamic_vit' and 'dynamic_vit' in dyn['model']
  assert dyn['loss']['dynamic_vit']['ratio_weight'] == 2.0
  assert 'lr_groups' in dyn['optimizer']
  assert 'num_epochs' not in dyn and 'init_from' not in dyn  # the comparison sets those
  assert compare.recipe('static')['model']['dynamic_vit']['selector'] == 'static'
  assert compare.recipe('pooled_vit')['model']['pooled_vit'] == {'pool_layer': 3}
  assert compare.recipe('tome')['model']['name'] == 'tome'
  assert compare.recipe('vtp') == {}


def test_compare_runs_every_stage_and_resumes(tmp_path, capsys):
  settings = tiny_settings(tmp_path)
  body = compare.run(settings)
  rows = json.load(open(os.path.join(settings.root, 'results.json')))
  labels = [r['label'] for r in rows]
  assert labels[0] == 'dense + same training'
  for key in compare.ROWS:
    assert any(r['method'] == key and not r['off_the_shelf'] for r in rows), key
  free = [k for k, (m, _) in compare.ROWS.items() if m.training_free]
  assert sum(r['off_the_shelf'] for r in rows) == len(free)  # ToMe, EViT, ATS untrained
  dense = rows[0]['accuracy']
  for r in rows:
    assert 0 < r['mac_fraction'] <= 1.0 + 1e-9
    if not r['off_the_shelf']:
      np.testing.assert_allclose(r['vs_dense'], r['accuracy'] - dense, atol=1e-9)
    assert r['speedup_b32'] > 0 and r['speedup_b1'] > 0
  assert rows[0]['speedup_b32'] == 1.0
  assert '| method | setting | test accuracy | vs dense |' in body
  assert 'Teacher converged: one more' in body
  assert 'Eventful Transformer on clips' in body
  assert open(settings.report).read() == body
  assert '](pareto.png)' in body                   # its own plot, beside the report
  img = Image.open(settings.plot)
  assert img.size[0] > 800 and len(set(np.asarray(img).reshape(-1, 3)[:, 0].tolist())) > 5
  # Resuming: every run is found finished and skipped; nothing is trained again.
  stamps = {p: os.path.getmtime(p) for p in (os.path.join(settings.root, d, 'compare.json')
                                             for d in os.listdir(settings.root))
            if os.path.exists(p)}
  capsys.readouterr()
  compare.run(settings)
  out = capsys.readouterr().out
  assert 'training in' not in out and out.count('skipped') >= len(stamps)
  assert stamps == {p: os.path.getmtime(p) for p in stamps}


def test_rows_option_runs_one_method_beside_the_full_table(tmp_path):
  import dataclasses
  settings = dataclasses.replace(tiny_settings(tmp_path), rows=('ats',))
  body = compare.run(settings)
  rows = json.load(open(os.path.join(settings.root, 'results.json')))
  assert {r['method'] for r in rows} == {'dense', 'ats'}
  assert sum(r['off_the_shelf'] for r in rows) == 1        # ATS is training-free
  assert body.startswith('### ATS in the comparison') and '--rows ats' in body
  assert 'Eventful Transformer on clips' not in body
