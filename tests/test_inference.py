"""Inference API, evaluate CLI and jax.export artifacts."""
import json

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokensparse import backbone, configs, evaluate, export, inference, methods
from tokensparse.methods.eventful.export import export_eventful_step
from tokensparse.methods.eventful.model import EventfulViT
from tokensparse.methods.vtp.model import prune
from tokensparse.train import loop
from tests import fake_data


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('inference')
  config = fake_data.tiny_config(tmp)
  result = loop.train_and_evaluate(config, str(tmp / 'run'))
  return str(tmp / 'run'), result, config


def test_load_and_predict(trained):
  workdir, _, config = trained
  predictor = inference.load(workdir)
  images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype(np.uint8)
  x = (images.astype(np.float32) / 255 - np.array(config.data.mean)) / np.array(config.data.std)
  want = methods.build(config.model).apply(predictor.variables, x)[0]
  np.testing.assert_allclose(predictor.predict(images), want, rtol=1e-5, atol=1e-5)
  assert predictor.classify(images).shape == (5,)


@pytest.mark.parametrize('shape,message', [
    ((2, 32, 32, 1), r'inputs have shape \(2, 32, 32, 1\); this model takes \[batch, 28, 28, 1\]'),
    ((2, 28, 28, 3), r'\(2, 28, 28, 3\); this model takes \[batch, 28, 28, 1\] \(image_size 28, 1 '),
    ((28, 28, 1), r'inputs have shape \(28, 28, 1\)'),
])
def test_wrong_inputs_are_refused(trained, shape, message):
  predictor = inference.load(trained[0])
  with pytest.raises(ValueError, match=message):
    predictor.predict(np.zeros(shape, np.uint8))


@pytest.mark.parametrize('pixels,message', [
    (np.zeros((2, 28, 28, 1), np.int8), 'inputs are int8: pixels must be uint8 or floats'),
    (np.zeros((2, 28, 28, 1), bool), 'inputs are bool: pixels must be uint8'),
    (np.full((2, 28, 28, 1), -1.0, np.float32), r'inputs range over \[-1, -1\]'),
    (np.full((2, 28, 28, 1), 300.0, np.float32), r'inputs range over \[300, 300\]'),
    (np.full((2, 28, 28, 1), np.nan, np.float32), 'inputs hold 1568 NaN or infinite'),
    (np.zeros((0, 28, 28, 1), np.uint8), r'inputs have shape \(0, 28, 28, 1\): an empty batch'),
])
def test_predict_refuses_pixels_outside_its_contract(trained, pixels, message):
  predictor = inference.load(trained[0])
  with pytest.raises(ValueError, match=message):
    predictor.predict(pixels)
  ok = np.full((1, 28, 28, 1), 255.0, np.float32)     # floats in [0, 255] pass
  assert predictor.predict(ok).shape == (1, 10)


def test_missing_workdir_and_file_without_config(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such work directory or checkpoint file'):
    inference.load(str(tmp_path / 'nothing'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    inference.load(str(tmp_path / 'empty'))
  path = tmp_path / 'w.npz'
  np.savez(path, a=np.zeros(1))
  with pytest.raises(ValueError, match='pass config='):
    inference.load(str(path))


def test_evaluate_reports_the_training_loops_accuracy(trained, capsys):
  workdir, result, _ = trained
  evaluate.main(['--workdir', workdir, '--batch_size', '16'])
  saved = json.load(open(f'{workdir}/evaluation.json'))
  assert saved['accuracy'] == pytest.approx(result['accuracy'])
  assert saved['examples'] == 37 and saved['gmacs_per_input'] > 0 and saved['inputs_per_sec'] > 0
  assert 'accuracy' in capsys.readouterr().out


def _predictor(tmp_path, **model):
  config = fake_data.tiny_config(tmp_path)
  with config.unlocked():
    for k, v in model.items():
      config.model[k] = v
  m = methods.build(config.model)
  variables = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
  return inference.Predictor(config, dict(variables))


def _dynamic(tmp_path):
  config = fake_data.tiny_config(tmp_path)
  with config.unlocked():
    configs.use_method(config, 'dynamic_vit', keep_ratio=0.7, prune_layers=(1,))
  m = methods.build(config.model)
  v = m.init({'params': jax.random.PRNGKey(0), 'gumbel': jax.random.PRNGKey(1)},
             jnp.zeros((1, 28, 28, 1)), train=True)
  return inference.Predictor(config, {'params': v['params']})


def _token_learner(tmp_path):
  return _predictor(tmp_path, name='token_learner', token_learner=ml_collections.ConfigDict(
      dict(num_tokens=4, at=0.5)))


def _pruned_vtp(tmp_path):
  scored = _predictor(tmp_path, name='vtp')
  rng = np.random.default_rng(0)
  scores = jax.tree.map(lambda s: rng.uniform(0, 1, np.shape(s)), scored.variables['scores'])
  params, fields = prune(scored.variables['params'], scores, 0.4)
  shell = _predictor(tmp_path, head_dim=fields['head_dim'], mlp_dim=fields['mlp_dim'],
                     attn_scale=fields['attn_scale'])
  return inference.Predictor(shell.config, {'params': params})


@pytest.mark.parametrize('make', [_predictor, _dynamic, _token_learner, _pruned_vtp],
                         ids=['dense', 'dynamic_vit', 'token_learner', 'pruned_vtp'])
def test_exported_model_reloads_and_matches_any_batch(tmp_path, make):
  predictor = make(tmp_path)
  path = str(tmp_path / 'model.stablehlo')
  export.save(export.export_predictor(predictor), path)
  run = export.load(path)
  for b in (1, 3, 8):
    # The artifact takes what predict takes: stored pixels, uint8 or float (normalised inside).
    images = np.random.default_rng(b).integers(0, 256, (b, 28, 28, 1)).astype(np.uint8)
    want = predictor.predict(images)
    np.testing.assert_allclose(run(images), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(images.astype(np.float32)), want, rtol=1e-5, atol=1e-5)


def test_exported_eventful_step_matches(tmp_path):
  predictor = _predictor(tmp_path)
  path = str(tmp_path / 'step.stablehlo')
  export.save(export_eventful_step(predictor, 5), path)
  run = export.load(path)
  model = EventfulViT(**backbone.backbone_kwargs(predictor.config.model), capacity=5)
  # The artifact normalises its pixel frames itself (like predict).
  step = jax.jit(lambda s, f: model.apply(predictor.variables, s, predictor.normalize(f),
                                          method=EventfulViT.step))
  for b in (1, 2):
    frames = jax.random.uniform(jax.random.PRNGKey(b), (b, 28, 28, 1), maxval=255.0)
    state, _ = model.apply(predictor.variables, predictor.normalize(frames),
                           method=EventfulViT.init_state)
    moved = jnp.clip(frames.at[:, 5:12, 5:12].add(120.0), 0, 255)  # pixels, as predict takes
    want_state, want = step(state, moved)
    got_state, got = run(flax.serialization.to_state_dict(state), moved)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_state['blocks']['0']['av'], want_state.blocks[0].av,
                               rtol=1e-5, atol=1e-5)


def test_clip_runner_refuses_non_image_models(tmp_path):
  with pytest.raises(ValueError, match="Eventful runs a per-frame image ViT or a factorised "
                                       "video ViT; this model is "
                                       "'token_learner'"):
    methods.get('eventful').clip_runner(_token_learner(tmp_path), 4)
  runner = methods.get('eventful').clip_runner(_predictor(tmp_path), 5)
  clips = np.zeros((2, 3, 28, 28, 1), np.uint8)
  assert runner(clips).shape == (2, 3, 10)
  with pytest.raises(ValueError, match=r'clips have shape \(2, 28, 28, 1\)'):
    runner(clips[:, 0])
