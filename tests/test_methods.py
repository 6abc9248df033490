"""The registry and the plug-in layout: every method builds, validates, runs and is counted
through the Method interface; the tools reach every method through it; no library file
outside tokensparse/methods/ names a method in its code."""
import ast
import glob
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import configs, evaluate, export, flops, inference, methods, viz
from tokensparse.train import loop
from tests import fake_data

NAMES = re.compile(r'dynamic_?vit|token_?learner|vtp|eventful|tome|evit|\bats\b', re.I)
ROOT = os.path.join(os.path.dirname(__file__), '..')


def code_without_docstrings(path):
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    body = getattr(node, 'body', None)
    if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
        isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
      node.body = body[1:] or [ast.Pass()]
  return ast.unparse(tree)


def test_the_name_guard_ignores_case():
  for line in ('x = ToMeViT(**kw)', 'EventfulViT.step', 'DynamicViT', 'TOKENLEARNER', 'ats = 1'):
    assert NAMES.search(line), line
  assert not NAMES.search('stats = stats_of(statistics)')


def test_no_library_code_outside_methods_names_a_method():
  offenders = []
  for path in glob.glob(os.path.join(ROOT, 'tokensparse', '**', '*.py'), recursive=True):
    rel = os.path.relpath(path, ROOT)
    if rel.startswith(os.path.join('tokensparse', 'methods')):
      continue
    for line in code_without_docstrings(path).splitlines():
      if NAMES.search(line):
        offenders.append(f'{rel}: {line.strip()}')
  assert not offenders, '\n'.join(offenders)


def tiny_model(name):
  c = ml_collections.ConfigDict(dict(
      name=name, num_classes=10, image_size=28, patch_size=7, width=32, depth=4, num_heads=4,
      mlp_dim=64, classifier='token', dtype='float32'))
  if methods.get(name).defaults() is not None:
    c[name] = methods.get(name).defaults()
  if name == 'dynamic_vit':
    c.dynamic_vit.prune_layers = (1, 2)
  if name == 'pooled_vit':
    c.pooled_vit.pool_layer = 2
  if name == 'tome':
    c.tome.r = 3
  if name == 'evit':
    c.evit.layers = (1, 2)
  if name == 'eventful':
    c.eventful.capacity = 5
  return c


@pytest.mark.parametrize('name', methods.NAMES)
def test_every_method_builds_validates_runs_and_costs_at_most_dense(name):
  config = ml_collections.ConfigDict(dict(model=tiny_model(name)))
  configs.validate_model(config)
  model = methods.build(config.model)
  assert methods.of(model) is methods.get(name)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 28, 28, 1))
  variables = model.init({'params': jax.random.PRNGKey(1), 'gumbel': jax.random.PRNGKey(2)}, x)
  logits, aux = model.apply(variables, x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  macs = methods.macs(model, channels=1)
  dense = flops.vit_macs(methods.build(tiny_model('vit')), channels=1)['total']
  assert 0 < macs['total'] <= dense * 1.01   # VTP's scores and learners add only a little
  assert macs['total'] == sum(v for k, v in macs.items() if k != 'total')


def test_unknown_method_lists_the_registry():
  with pytest.raises(ValueError, match="model.name='tomme': unknown method; available: vit, "):
    methods.get('tomme')
  with pytest.raises(ValueError, match="--method eventful:colour='red': expected one of capacity=, variant=, threshold="):
    methods.retarget(ml_collections.ConfigDict(dict(model=tiny_model('vit'))), 'eventful:colour=red')


@pytest.fixture(scope='module')
def dense_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('methods')
  config = fake_data.tiny_config(tmp)
  loop.train_and_evaluate(config, str(tmp / 'run'))
  return str(tmp / 'run'), config


def test_training_free_methods_run_on_a_dense_work_directory(dense_run, tmp_path):
  workdir, config = dense_run
  dense = inference.load(workdir)
  images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
  # Eventful on images is the dense first frame; r = 0 / keep rate 1 are the dense model.
  for spec in ('eventful:capacity=5', 'tome:r=0', 'evit:keep_rate=1'):
    p = inference.load(workdir, method=spec)
    assert p.config.model.name == spec.split(':')[0]
    np.testing.assert_allclose(p.predict(images), dense.predict(images), rtol=1e-5, atol=1e-5)
  tome = inference.load(workdir, method='tome:r=3')
  assert tome.model.schedule == (3, 3) and tome.predict(images).shape == (4, 10)
  with pytest.raises(ValueError, match='model.tome.r=9: block 0 would merge 9 of its 17'):
    inference.load(workdir, method='tome:r=9')


def test_evaluate_export_and_viz_through_the_registry(dense_run, tmp_path, capsys):
  workdir, _ = dense_run
  from jax import export as jax_export
  evaluate.main(['--workdir', workdir, '--batch_size', '16'])
  evaluate.main(['--workdir', workdir, '--batch_size', '16', '--method', 'tome:r=2'])
  with pytest.raises(SystemExit, match='error: the Eventful Transformer saves work between the '
                                       'frames of a clip; on still images'):
    evaluate.main(['--workdir', workdir, '--batch_size', '16', '--method', 'eventful:capacity=5'])
  dense = json.load(open(f'{workdir}/evaluation.json'))
  saved = json.load(open(f'{workdir}/evaluation-tome_r=2.json'))
  assert saved['model'] == 'tome' and saved['examples'] == 37
  assert saved['gmacs_per_input'] < dense['gmacs_per_input']
  # An Eventful export is one step: (state, frame) -> (state, logits). By default it goes
  # into the work directory, and the message names the model and every input.
  capsys.readouterr()
  export.main(['--workdir', workdir, '--method', 'eventful:capacity=5'])
  out = f'{workdir}/export/eventful-capacity=5.stablehlo'
  exported = jax_export.deserialize(bytearray(open(out, 'rb').read()))
  assert len(exported.in_avals) > 2 and len(exported.out_avals) > 2
  printed = capsys.readouterr().out
  assert f"wrote {out}: model 'eventful' (--method eventful:capacity=5)" in printed
  n = len(exported.in_avals) - 1
  assert f'inputs:  {n} state arrays (' in printed and 'float32[b,17,32]' in printed
  assert 'then float32[b,28,28,1]' in printed and f'outputs: {n} state arrays' in printed
  assert 'then float32[b,10]' in printed and '<lambda>' not in printed
  from PIL import Image
  for spec, files in (('tome:r=3', ['merged_tokens.png']),
                      ('evit:keep_rate=0.5,layers=1', ['kept_tokens.png', 'keep_heatmap.png'])):
    viz.main(['--workdir', workdir, '--method', spec, '--out', str(tmp_path / 'fig'),
              '--num_images', '3'])
    for f in files:   # one folder per method and setting: nothing overwritten
      path = tmp_path / 'fig' / spec.replace(':', '-').replace(',', '_') / f
      top = np.asarray(Image.open(path).convert('L'))[:12]
      assert (top < 128).any(), f'{path} has no title'

  with pytest.raises(SystemExit, match="error: no figures for model.name='vit'") as e:
    viz.main(['--workdir', workdir, '--out', str(tmp_path / 'fig')])
  # Every suggestion it prints works on this model.
  suggested = str(e.value).split('with these weights: --method ')[1].split(', --method ')
  assert {s.split(':')[0] for s in suggested} == {'tome', 'evit', 'ats'}, str(e.value)
  for spec in suggested:
    viz.main(['--workdir', workdir, '--method', spec, '--out', str(tmp_path / spec),
              '--num_images', '2'])


def test_eventful_model_name_in_a_config_takes_clips():
  config = ml_collections.ConfigDict(dict(model=tiny_model('eventful')))
  configs.validate_model(config)
  model = methods.build(config.model)
  clips = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 28, 28, 1))
  v = model.init(jax.random.PRNGKey(1), clips[:, 0])
  logits, aux = model.apply(v, clips)
  assert logits.shape == (2, 10) and aux['frame_logits'].shape == (2, 3, 10)
  np.testing.assert_allclose(logits, aux['frame_logits'].mean(1), rtol=1e-6)
  np.testing.assert_allclose(aux['frame_logits'][:, 0], model.apply(v, clips[:, 0])[0],
                             rtol=1e-5, atol=1e-5)
  assert aux['updated'].shape == (2, 3, 4, 17) and int(aux['updated'][:, 1:].sum(-1).max()) <= 5
