"""benchmarks/compare.py's machinery end to end on a tiny model, so the script cannot rot: knob
solving by the MAC counters, the one recipe, every method's row trained from one teacher, VTP's
three stages, off-the-shelf rows, the Eventful clip table, speed rounds, seeds pooled into
mean and spread, the two-sided convergence test, the report, the plots, the row records that
train again, and resuming (a changed row is trained again, nothing is lost)."""
import dataclasses
import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from tests import fake_data

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))
import compare  # noqa: E402


def tiny_settings(tmp_path, **kw):
  teacher = fake_data.tiny_config(tmp_path, **{'model.image_size': 42, 'data.canvas_size': 42})
  with teacher.unlocked():
    teacher.total_steps = 6
    teacher.eval_every_steps = 2     # a curve of three evaluations
  return compare.Settings(
      root=str(tmp_path / 'compare'), teacher=teacher, row_steps=2, budgets=(0.6,), clips=8,
      clip_config='tiny', speed_model=dict(image_size=32, patch_size=8, width=32, depth=2,
                                           num_heads=2, mlp_dim=64, num_classes=10),
      speed_batches=(8, 1), rounds=1, iters=1, report=str(tmp_path / 'COMPARE.md'),
      plot=str(tmp_path / 'out' / 'pareto.png'), epoch_steps=2, **{'seeds': (0,), **kw})


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


def test_canvas_budgets_are_met_within_two_percent_where_the_knob_allows():
  model = compare.configs.from_file('vit/fashion_mnist_canvas.py').model
  for key in ('dynamic_vit', 'static', 'tome', 'evit', 'ats'):
    for budget in compare.BUDGETS:
      _, frac = compare.solve(model, key, budget, 1)
      assert abs(frac / budget - 1) <= compare.TOLERANCE, (key, budget, frac)
  # Whole blocks cannot: 2x2 pooling at 0.8 is marked, as the report shows.
  _, frac = compare.solve(model, 'pooled_vit', 0.8, 1)
  line = dict(key='pooled_vit', budget=0.8, mac_fraction=frac)
  assert compare.off_budget(line) and not compare.off_budget(dict(line, mac_fraction=0.79))


def test_one_recipe_for_every_row_and_the_paper_recipe_beside_it():
  settings = compare.full_settings(type('Args', (), dict(teacher_epochs=12, epochs=1.0,
                                                         seeds=[0]))())
  teacher = os.path.join(compare.ROOT, 'runs', 'compare', 'teacher')
  knob = {'keep_ratio': 0.42, 'prune_layers': (2, 3, 4)}
  dyn = compare.row_config(settings, 'dynamic_vit', knob, teacher, seed=2)
  dense = compare.row_config(settings, 'dense', None, teacher, seed=2)
  evit = compare.row_config(settings, 'evit', {'keep_rate': 0.5}, teacher, seed=2)
  for c in (dyn, dense, evit):  # one optimiser, schedule, length and start
    for field in ('lr', 'min_lr', 'weight_decay', 'grad_clip_norm'):
      assert c.optimizer[field] == compare.RECIPE[field]
    assert (c.warmup_epochs, c.label_smoothing, c.num_epochs, c.seed) == \
        (compare.RECIPE['warmup_epochs'], compare.RECIPE['label_smoothing'], 1.0, 2)
    assert c.init_from.path == 'runs/compare/teacher' and list(c.optimizer.lr_groups)[-1] == \
        ('.*', compare.RECIPE['teacher_params'])
  # The method's new parameters learn at the full rate, the teacher's at 0.1x.
  assert list(dyn.optimizer.lr_groups)[0] == ('^(predictor_0|predictor_1|predictor_2)(/|$)', 1.0)
  assert len(dense.optimizer.lr_groups) == len(evit.optimizer.lr_groups) == 1
  # No distillation in the one recipe; the method's own loss stays.
  assert dict(dyn.loss.dynamic_vit) == dict(ratio_weight=2.0, distill_weight=0.0,
                                            token_weight=0.0)
  assert compare.method_part('pooled_vit')['loss']['pooled_vit'] == {'distill_weight': 0.0}
  # The paper row is the variant's config recipe as it stands.
  paper = compare.row_config(settings, 'dynamic_vit', knob, teacher, seed=2, paper=True)
  assert paper.loss.dynamic_vit.distill_weight == 0.5
  assert list(paper.optimizer.lr_groups)[-1] == ('.*', 0.01, 'warmup')
  assert compare.new_parameters(compare.method_model(dense.model, 'token_learner'), 1) == \
      ['token_learner']


def test_seeds_pool_into_mean_and_spread_and_only_real_gaps_rank():
  rec = lambda key, seed, acc: dict(key=key, budget=0.5, recipe='one', seed=seed, label=key,
                                    setting='', mac_fraction=0.5, mmacs=1.0, accuracy=acc)
  recs = [rec('evit', s, a) for s, a in enumerate((85.0, 85.4, 85.2))] + \
      [rec('tome', s, a) for s, a in enumerate((85.1, 85.3, 85.0))] + \
      [rec('pooled_vit', s, a) for s, a in enumerate((83.0, 83.1, 82.9))]
  lines = {ln['key']: ln for ln in compare.lines_of(recs)}
  np.testing.assert_allclose(lines['evit']['mean'], 85.2)
  np.testing.assert_allclose(lines['evit']['sd'], np.std([85.0, 85.4, 85.2], ddof=1))
  diff, noise = compare.gap(lines['evit'], lines['tome'])
  np.testing.assert_allclose(noise, 2 * np.sqrt((lines['evit']['sd'] ** 2 +
                                                 lines['tome']['sd'] ** 2) / 3))
  assert abs(diff) < noise                                   # a tie within noise
  text = compare.which_when(list(lines.values()), (0.5,))[0]
  assert 'EViT' not in text and 'evit is highest' in text and 'tome (-0.07)' in text
  assert 'lower beyond noise: pooled_vit' in text
  # A line with one seed has no spread yet: it is never ranked, its gaps carry no verdict.
  single = compare.lines_of(recs + [rec('ats', 0, 90.0)])
  ats = next(ln for ln in single if ln['key'] == 'ats')
  assert np.isnan(compare.gap(ats, lines['evit'])[1])
  text = compare.which_when(single, (0.5,))[0]
  assert 'evit is highest' in text and 'not ranked yet (one seed so far): ats' in text
  # The README's "which method when" is this ranking, generated, and says when it is partial.
  readme = compare.readme_which_when(single, (0.5,), (7, 84))
  assert 'partial: 7 of its 84 trained runs' in readme and text in readme
  assert 'partial' not in compare.readme_which_when(single, (0.5,), (84, 84))
  assert compare.readme_which_when([], (0.5,), (0, 84)).endswith('- Nothing is ranked yet.')
  shelf = dict(lines['evit'], recipe='shelf', n=1, sd=0.0)
  assert compare.gap(shelf, dict(shelf, mean=85.0))[1] == 0.0    # the teacher, evaluated twice
  # Rows of another recipe are not ranked, but each is set against the best with its verdict:
  # evit's noise is 2 * 0.2 / sqrt(3) = 0.23 against an exact shelf row.
  others = [rec('tome', s, a) | {'recipe': 'paper'} for s, a in enumerate((85.2, 85.1, 85.3))]
  others += [rec('evit', 0, 84.7) | {'recipe': 'shelf', 'seed': None}]
  text = compare.which_when(compare.lines_of(recs + others), (0.5,))[0]
  assert 'evit is highest' in text                     # the paper row (85.2) does not compete
  assert text.endswith('other recipes against evit: tome, paper recipe (+0.00, within noise), '
                       'evit, off the shelf (-0.50, beyond noise).'), text
  # Convergence is two-sided: a drop fails as a rise does.
  assert compare.convergence([(1, 85.5), (2, 85.52), (3, 85.55)], 0.1)[1] == 'converged'
  assert compare.convergence([(1, 85.5), (2, 86.0), (3, 85.9)], 0.2)[1].startswith('NOT')
  assert compare.convergence([(1, 86.0), (2, 85.5), (3, 85.5)], 0.2)[1].startswith('NOT')
  assert compare.convergence([(1, 86.0), (2, 85.5), (3, 85.5)], None)[1].startswith('not judged')
  # Failing its last epochs, the teacher is still converged when the curve's next point (the
  # recipe on top of it: the dense reference) moves it by less than the spread, two-sided.
  rising = [(1, 85.5), (2, 85.6), (3, 85.9)]
  assert compare.convergence(rising, 0.2, after=0.15)[1].startswith('converged once continued')
  assert compare.convergence(rising, 0.2, after=-0.15)[1].startswith('converged once continued')
  assert compare.convergence(rising, 0.2, after=-0.25)[1].startswith('NOT')
  assert compare.convergence(rising, 0.2, after=0.25)[1].startswith('NOT')
  # Accuracy at equal speed: between a method's measured points only.
  assert compare.at_speed([(1.2, 86.0), (1.6, 84.0)], 1.4) == 85.0
  assert compare.at_speed([(1.2, 86.0), (1.6, 84.0)], 1.8) is None


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


def read_rows(settings):
  folder = os.path.join(settings.out, 'rows')
  return {f[:-5]: json.load(open(os.path.join(folder, f))) for f in os.listdir(folder)}


def test_compare_runs_every_stage_and_resumes(tmp_path, capsys):
  settings = tiny_settings(tmp_path)
  os.makedirs(os.path.join(settings.out, 'rows'))
  open(os.path.join(settings.out, 'rows', 'dense_1.0_s7.json'), 'w').write('{}')  # an old run's
  body = compare.run(settings)
  results = json.load(open(os.path.join(settings.out, 'results.json')))
  lines = results['lines']
  assert lines[0]['key'] == 'dense' and lines[0]['recipe'] == 'one'
  for key in compare.ROWS:
    assert any(ln['key'] == key and ln['recipe'] == 'one' for ln in lines), key
  free = [k for k, (m, _) in compare.ROWS.items() if m.training_free]
  assert sum(ln['recipe'] == 'shelf' for ln in lines) == len(free)  # ToMe, EViT, ATS untrained
  assert [ln['key'] for ln in lines if ln['recipe'] == 'paper'] == ['dynamic_vit']
  for ln in lines:
    assert 0 < ln['mac_fraction'] <= 1.0 + 1e-9 and ln['n'] == 1 and ln['sd'] == 0.0
  # Every trained row is kept with its full config and result.
  rows = read_rows(settings)
  trained = [ln for ln in lines if ln['recipe'] != 'shelf']
  assert len(rows) == len(trained)
  for name, r in rows.items():
    assert r['row'] == name and r['config']['seed'] == 0 and 0 <= r['accuracy'] <= 100
  speed = {tuple(json.loads(k)): v for k, v in results['speed'].items()}
  assert speed[('dense', 1.0)][:2] == [1.0, 1.0] and len(speed[('dense', 1.0)][4]) == 2
  # Eventful: MACs per frame averaged over the clip, the dense first frame included.
  for e in results['eventful']:
    assert e['frames'] > 1
    if e['budget'] == 1.0:
      assert e['mac_fraction'] == 1.0 or abs(e['mac_fraction'] - 1.0) < 0.2
    else:
      assert e['mac_fraction'] <= e['budget'] + 1e-9
  assert '| method | setting | seeds | test accuracy | vs dense |' in body
  assert 'not judged yet: the dense reference needs two seeds' in body
  assert 'Accuracy at equal measured speed' in body and 'Which method when' in body
  assert 'started at' in body and '1 session(s)' in body
  assert open(settings.report).read() == body
  assert '](out/pareto.png)' in body and '](out/speed.png)' in body  # beside the report
  for name in ('pareto.png', 'speed.png', 'teacher.png'):
    img = Image.open(os.path.join(settings.out, name))
    assert img.size[0] >= 500 and len(set(np.asarray(img).reshape(-1, 3)[:, 0].tolist())) > 3
  # Resuming: every run is found finished and skipped; nothing is trained again.
  stamps = {p: os.path.getmtime(p) for p in (os.path.join(settings.root, d, 'compare.json')
                                             for d in os.listdir(settings.root))
            if os.path.exists(p)}
  capsys.readouterr()
  body = compare.run(settings)
  out = capsys.readouterr().out
  assert 'training in' not in out and out.count('skipped') >= len(stamps)
  assert stamps == {p: os.path.getmtime(p) for p in stamps}
  assert '2 session(s)' in body
  # --report_only reads the same table back without training or counting a session.
  capsys.readouterr()
  again = compare.run(settings, report_only=True)
  assert 'training in' not in capsys.readouterr().out and '2 session(s)' in again
  # On a fresh clone (runs/ gone, the committed ledger there) --report_only rebuilds the
  # teacher's work directory bit for bit and the same table; a full run trains nothing.
  from tokensparse import checkpoint
  teacher_dir = os.path.join(settings.root, 'teacher')
  before = checkpoint.load_variables(teacher_dir)[1]['params']
  shutil.rmtree(settings.root)
  capsys.readouterr()
  compare.run(settings, report_only=True)
  assert 'teacher: rebuilt in' in capsys.readouterr().out
  assert json.load(open(os.path.join(settings.out, 'results.json')))['lines'] == lines
  after = checkpoint.load_variables(teacher_dir)[1]['params']
  assert jax.tree.all(jax.tree.map(np.array_equal, before, after))
  shutil.rmtree(settings.root)
  body = compare.run(settings)
  out = capsys.readouterr().out
  assert 'training in' not in out and 'off the shelf: evaluating' not in out
  assert out.count('not trained again') == len(trained)  # VTP's stages on one line
  assert json.load(open(os.path.join(settings.out, 'results.json')))['lines'] == lines
  assert '3 session(s)' in body
  # A row trained again from its saved config (on the rebuilt teacher) gets the same accuracy.
  from tokensparse.train import loop
  row = rows['evit_0.6_s0']
  config = compare.ml_collections.ConfigDict(json.load(open(os.path.join(
      settings.out, 'rows', 'evit_0.6_s0.json')))['config'])
  result = loop.train_and_evaluate(config, str(tmp_path / 'again'))
  assert 100 * float(result['accuracy']) == row['accuracy']


def test_a_changed_row_is_trained_again_and_the_old_run_kept(tmp_path, capsys):
  settings = tiny_settings(tmp_path)
  teacher = compare.teacher(settings)
  c = compare.row_config(settings, 'dense', None, teacher, seed=0)
  workdir = os.path.join(settings.root, 'dense_s0')
  first = compare.train(c, workdir, 'dense')
  assert compare.train(c, workdir, 'dense') == first                  # same config: skipped
  with c.unlocked():
    c.optimizer.lr = 5e-3
  capsys.readouterr()
  compare.train(c, workdir, 'dense')
  out = capsys.readouterr().out
  assert 'its config changed (optimizer.lr: 0.001 -> 0.005)' in out and 'training in' in out
  kept = [d for d in os.listdir(settings.root) if d.startswith('dense_s0.replaced-')]
  assert len(kept) == 1 and os.path.exists(os.path.join(settings.root, kept[0], 'compare.json'))
  assert json.load(open(os.path.join(workdir, 'request.json')))['optimizer']['lr'] == 5e-3
  # The teacher trained again (same path, another result): its rows are trained again too.
  record = json.load(open(os.path.join(teacher, 'compare.json')))
  json.dump(dict(record, accuracy=record['accuracy'] + 0.01),
            open(os.path.join(teacher, 'compare.json'), 'w'))
  capsys.readouterr()
  compare.train(c, workdir, 'dense')
  assert 'the run it starts from was trained again' in capsys.readouterr().out
  assert len([d for d in os.listdir(settings.root) if d.startswith('dense_s0.replaced-')]) == 2


def test_rows_option_runs_one_method_with_seeds_beside_the_full_table(tmp_path):
  settings = dataclasses.replace(tiny_settings(tmp_path, seeds=(0, 1)), rows=('evit',))
  body = compare.run(settings)
  results = json.load(open(os.path.join(settings.out, 'results_evit.json')))
  lines = {(ln['key'], ln['recipe']): ln for ln in results['lines']}
  assert set(lines) == {('dense', 'one'), ('evit', 'one'), ('evit', 'shelf')}
  for key in ('dense', 'evit'):
    ln = lines[key, 'one']
    assert ln['n'] == 2 and ln['seeds'] == [0, 1]
    np.testing.assert_allclose(ln['sd'], np.std(ln['accuracies'], ddof=1))
  assert body.startswith('### EViT in the comparison') and '--rows evit' in body
  assert 'Eventful Transformer on clips' not in body
  # The teacher's verdict uses the dense reference's spread, two-sided.
  curve = results['teacher']['curve']
  dense = lines['dense', 'one']
  changes, verdict = compare.convergence([tuple(p) for p in curve], dense['sd'],
                                         dense['mean'] - results['teacher']['accuracy'])
  assert len(curve) == 3 and f'**{verdict}**' in body


def test_saved_config_file_reads_a_row_or_names_what_is_wrong(tmp_path):
  row = tmp_path / 'row.json'
  c = compare.configs.from_file('vit/fashion_mnist_canvas.py')
  row.write_text(json.dumps({'row': 'dense_1.0_s0', 'accuracy': 85.0, 'config': c.to_dict()}))
  saved = compare.configs.from_file('saved.py', str(row))
  assert compare.changed(saved.to_dict(), c) == {} and saved.model.image_size == 56
  with pytest.raises(FileNotFoundError, match='configs/saved.py:nowhere.json: no such file'):
    compare.configs.from_file('saved.py', 'nowhere.json')
  with pytest.raises(ValueError, match='needs a JSON file'):
    compare.configs.from_file('saved.py', '')
