"""Trainer: pmap parity, one compile per step, checkpoints, resume, eval counting, errors."""
import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tokensparse import configs, methods
from tokensparse.data import Data
from tokensparse import checkpoint, objectives
from tokensparse.train import loop, steps
from tests import fake_data


def _leaves_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def _sgd_setup(tiny_model_config):
  model = methods.build(tiny_model_config)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  tx = optax.sgd(0.5)  # plain SGD: a wrong gradient scale shows directly in the update
  cfg = configs.base()
  loss_fn = objectives.classification_loss(cfg)
  step = functools.partial(steps.train_step, model=model, tx=tx, loss_fn=loss_fn,
                           lr_fn=lambda s: 0.5)
  state = steps.TrainState.create(params, tx, jax.random.PRNGKey(1))
  rng = np.random.default_rng(0)
  batch = {'image': rng.standard_normal((64, 16, 16, 3)).astype(np.float32),
           'label': rng.integers(0, 5, 64).astype(np.int32)}
  return step, state, batch, model, loss_fn


def test_pmap_step_on_8_devices_equals_single_device(tiny_model_config):
  assert jax.local_device_count() == 8
  step, state, batch, model, loss_fn = _sgd_setup(tiny_model_config)
  shard = lambda b, n: jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), b)

  p8 = jax.pmap(step, axis_name='batch')
  new8, m8 = p8(steps.replicate(state), shard(batch, 8))
  p1 = jax.pmap(step, axis_name='batch', devices=jax.devices()[:1])
  new1, m1 = p1(steps.replicate(state, devices=jax.devices()[:1]), shard(batch, 1))
  _leaves_close(steps.unreplicate(new8).params,
                steps.unreplicate(new1).params, atol=1e-5)
  assert float(m8['count'][0]) == float(m1['count'][0]) == 64
  np.testing.assert_allclose(m8['loss'][0], m1['loss'][0], rtol=1e-5)

  # And both equal a hand-written full-batch SGD step.
  def full_loss(p):
    logits, _ = model.apply({'params': p}, batch['image'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
  grads = jax.grad(full_loss)(state.params)
  expected = jax.tree.map(lambda p, g: p - 0.5 * g, state.params, grads)
  _leaves_close(steps.unreplicate(new8).params, expected, atol=1e-5)


def test_train_step_compiles_once(tiny_model_config):
  step, state, batch, _, _ = _sgd_setup(tiny_model_config)
  def one_step(state, batch):
    return step(state, batch)
  p = jax.pmap(chex.assert_max_traces(one_step, n=1), axis_name='batch', donate_argnums=(0,))
  rstate = steps.replicate(state)
  for _ in range(3):
    rstate, _ = p(rstate, jax.tree.map(lambda x: x.reshape(8, -1, *x.shape[1:]), batch))


def test_checkpoint_round_trip(tiny_model_config, tmp_path):
  _, state, _, _, _ = _sgd_setup(tiny_model_config)
  mngr = checkpoint.manager(str(tmp_path))
  checkpoint.save(mngr, 7, state, configs.base())
  zeros = jax.tree.map(jnp.zeros_like, state)
  restored, step = checkpoint.restore(mngr, zeros)
  assert step == 7
  _leaves_close(restored, state, atol=0)
  assert checkpoint.load_config(str(tmp_path))['optimizer']['name'] == 'adamw'


def test_load_variables_reads_the_recorded_collections_and_old_checkpoints(tmp_path):
  """One way to load: the collections come from the checkpoint's meta record; a checkpoint
  written before there was one (no meta/) falls back to its config's method, and its
  old-style config fields are moved to where they live now."""
  import shutil
  import ml_collections
  scores = {'attn_0': np.ones((4, 8), np.float32)}
  params = {'head': {'bias': np.arange(3, dtype=np.float32)}}
  config = configs.base()
  with config.unlocked():
    configs.use_method(config, 'vtp')
  mngr = checkpoint.manager(str(tmp_path / 'vtp'))
  checkpoint.save(mngr, 3, {'step': np.int32(3), 'params': {'params': params, 'scores': scores}},
                  config, ('params', 'scores'))
  saved, variables, info = checkpoint.load_variables(str(tmp_path / 'vtp'))
  assert set(variables) == {'params', 'scores'} and info == {
      'format': 'tokensparse', 'path': str(tmp_path / 'vtp'), 'step': 3}
  np.testing.assert_array_equal(variables['scores']['attn_0'], scores['attn_0'])
  assert saved.model.name == 'vtp'

  old = ml_collections.ConfigDict({**configs.base().to_dict(), 'dynamic_vit': {'ratio_weight': 5.0}})
  old.model.name = 'dynamic_vit'
  old.model.keep_ratio = 0.5
  mngr = checkpoint.manager(str(tmp_path / 'old'))
  checkpoint.save(mngr, 1, {'step': np.int32(1), 'params': params}, old)
  shutil.rmtree(tmp_path / 'old' / 'checkpoints' / '1' / 'meta')   # as written before
  saved, variables, _ = checkpoint.load_variables(str(tmp_path / 'old'))
  assert set(variables) == {'params'}
  np.testing.assert_array_equal(variables['params']['head']['bias'], params['head']['bias'])
  assert saved.model.dynamic_vit.keep_ratio == 0.5 and 'keep_ratio' not in saved.model
  assert saved.loss.dynamic_vit.ratio_weight == 5.0 and 'dynamic_vit' not in saved
  with pytest.raises(FileNotFoundError, match='nowhere: no such work directory or checkpoint'):
    checkpoint.load_variables(str(tmp_path / 'nowhere'))
  with pytest.raises(ValueError, match='is a checkpoint file: pass config='):
    open(tmp_path / 'w.npz', 'wb').close()
    checkpoint.load_variables(str(tmp_path / 'w.npz'))


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
  config = fake_data.tiny_config(tmp_path)
  loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  with monkeypatch.context() as m:  # preempted after step 2
    m.setattr(loop.Preemption, 'stop_at', lambda self, step: step >= 2)
    assert loop.train_and_evaluate(config, str(tmp_path / 'resumed'))['preempted']
  loop.train_and_evaluate(config, str(tmp_path / 'resumed'))  # same command: resumes at 2

  def final_params(workdir):
    mngr = checkpoint.manager(workdir)
    assert mngr.latest_step() == 4
    restored = mngr.restore(4, args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardRestore()))
    return restored['state']['params']
  _leaves_close(final_params(str(tmp_path / 'straight')), final_params(str(tmp_path / 'resumed')),
                atol=1e-6)
  lines = [json.loads(l) for l in open(tmp_path / 'resumed' / 'metrics.jsonl')]
  assert [(l['step'], l['split']) for l in lines] == [(2, 'train'), (4, 'train'), (4, 'eval')]


@pytest.mark.parametrize('eval_batch_size', [8, 16, 40])
def test_eval_counts_every_example_once(tmp_path, eval_batch_size):
  config = fake_data.tiny_config(tmp_path, eval_batch_size=eval_batch_size)
  data = Data(config, local_devices=8)
  seen = []
  for batch in data.eval_iter():
    assert batch['image'].shape[:2] == (8, eval_batch_size // 8)
    seen.append(batch['mask'].reshape(-1))
  assert sum(m.sum() for m in seen) == 37

  # The pmapped eval equals a plain loop over all 37 examples.
  model = methods.build(config.model)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))['params']
  state = steps.TrainState.create(params, optax.sgd(0.1), jax.random.PRNGKey(0))
  loss_fn = objectives.classification_loss(config)
  p_eval = jax.pmap(functools.partial(steps.eval_step, model=model, loss_fn=loss_fn),
                    axis_name='batch')
  result = loop.evaluate(p_eval, steps.replicate(state), data)
  images = np.stack([data.preprocess.eval(data.eval_source[i])['image'] for i in range(37)])
  labels = np.array([data.eval_source[i]['label'] for i in range(37)])
  from tokensparse.data.pipeline import normalize
  logits, _ = model.apply({'params': params}, normalize(images, config.data.mean, config.data.std))
  assert result['count'] == 37
  np.testing.assert_allclose(result['accuracy'], (np.argmax(logits, -1) == labels).mean(), atol=1e-6)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  np.testing.assert_allclose(result['loss'], ce, rtol=1e-5)


def test_train_data_is_deterministic_and_per_host(tmp_path):
  config = fake_data.tiny_config(tmp_path)
  a, b = Data(config, local_devices=8), Data(config, local_devices=8)
  np.testing.assert_array_equal(a.train_batch(3)['image'], b.train_batch(3)['image'])
  assert not np.array_equal(a.train_batch(3)['image'], a.train_batch(4)['image'])
  # Two processes read the two halves of the same global batch, augmented alike.
  p0 = Data(config, local_devices=4, process_index=0, process_count=2)
  p1 = Data(config, local_devices=4, process_index=1, process_count=2)
  assert p0.train_batch(0)['image'].shape == (4, 2, 28, 28, 1)
  for step in (0, 7):
    for key in ('image', 'label'):
      halves = [p.train_batch(step)[key].reshape(8, *a.train_batch(step)[key].shape[2:])
                for p in (p0, p1)]
      np.testing.assert_array_equal(np.concatenate(halves),
                                    a.train_batch(step)[key].reshape(16, *halves[0].shape[1:]))


def test_nan_loss_stops_and_names_the_step(tmp_path):
  config = fake_data.tiny_config(tmp_path, **{'data.std': (1e-38,)})
  with pytest.raises(FloatingPointError, match='the loss is nan at step 1; stopped without '
                                               'saving it. No checkpoint had been saved yet'):
    loop.train_and_evaluate(config, str(tmp_path / 'nan'))  # every step is checked, not every log
  assert not os.listdir(tmp_path / 'nan' / 'checkpoints')


def test_missing_dataset_says_how_to_install(tmp_path):
  config = fake_data.tiny_config(tmp_path, **{'data.source_dir': str(tmp_path / 'nowhere'),
                                              'data.data_dir': str(tmp_path / 'empty')})
  with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
    Data(config, local_devices=8)


def test_class_count_mismatch_names_the_field(tmp_path):
  config = fake_data.tiny_config(tmp_path, **{'model.num_classes': 7})
  with pytest.raises(ValueError, match='model.num_classes=7, but fashion_mnist has 10 classes'):
    loop.train_and_evaluate(config, str(tmp_path / 'w'))


def test_init_from_timm_file_skips_head_and_needs_rgb(tmp_path):
  import os
  from tests import numpy_vit
  rng = np.random.default_rng(0)
  sd = numpy_vit.random_timm_state_dict(rng, width=32, depth=2, num_heads=4, mlp_dim=64, patch=7,
                                        channels=3, grid=4, num_classes=1000)
  # The same weights as a DeiT file (tests/fixtures/make_fixtures.py wrote it with torch).
  deit = os.path.join(os.path.dirname(__file__), 'fixtures', 'deit_tiny_rgb.pth')
  config = fake_data.tiny_config(tmp_path, total_steps=1, **{
      'init_from.path': deit, 'init_from.skip': ('head',)})
  with pytest.raises(ValueError, match=r'embedding/kernel: checkpoint \(7, 7, 3, 32\), model '
                                       r'\(7, 7, 1, 32\) \(set data.to_rgb=True'):
    loop.train_and_evaluate(config, str(tmp_path / 'grey'))

  with config.unlocked():
    config.data.to_rgb = True
  model = methods.build(config.model)
  params = loop.init_params(model, config, jax.random.PRNGKey(0), channels=3)
  loaded = loop.load_pretrained(params, config, model)
  np.testing.assert_array_equal(loaded['cls'], sd['cls_token'])
  np.testing.assert_array_equal(loaded['head']['kernel'], params['head']['kernel'])  # kept
  loop.train_and_evaluate(config, str(tmp_path / 'rgb'))  # and it trains


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  config = fake_data.tiny_config(tmp_path, **{'data.name': 'imagenet2012'})
  with pytest.raises(FileNotFoundError, match=r'python -m tokensparse.data.build imagenet2012 --data_dir=.*--manual_dir'):
    Data(config, local_devices=8)


def test_model_fields_are_taken_from_the_init_work_directory(tmp_path):
  """init_from.model_fields copies per-layer widths (a list where the config holds an int, as
  after VTP pruning) from the saved config, and training starts from those weights."""
  source = str(tmp_path / 'pruned')
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path, **{'model.mlp_dim': [64, 24]}), source)
  config = fake_data.tiny_config(tmp_path, **{'init_from.path': source,
                                              'init_from.model_fields': ('mlp_dim',)})
  assert config.model.mlp_dim == 64
  adopted = loop.adopt_model_fields(config)
  assert list(adopted.model.mlp_dim) == [64, 24] and adopted.model.width == 32
  loop.train_and_evaluate(config, str(tmp_path / 'tuned'))
  saved = checkpoint.load_config(str(tmp_path / 'tuned'))
  assert list(saved['model']['mlp_dim']) == [64, 24]
  with pytest.raises(ValueError, match="init_from.model_fields: 'widths' is not a model field"):
    loop.adopt_model_fields(fake_data.tiny_config(tmp_path, **{
        'init_from.path': source, 'init_from.model_fields': ('widths',)}))


def test_config_paths_are_found_from_any_directory(tmp_path, monkeypatch):
  """init_from.path relative to the repository works from another directory; a missing one
  is named as missing."""
  from tokensparse import configs as config_lib
  monkeypatch.chdir(tmp_path)
  assert config_lib.resolve('configs/vit/fashion_mnist.py') == os.path.join(
      config_lib.REPO_ROOT, 'configs/vit/fashion_mnist.py')
  assert config_lib.resolve('runs/nowhere') == 'runs/nowhere'
  config = fake_data.tiny_config(tmp_path, **{'init_from.path': 'runs/nowhere'})
  with pytest.raises(FileNotFoundError, match="init_from.path='runs/nowhere': runs/nowhere: no "
                                              'such work directory or checkpoint file'):
    loop.train_and_evaluate(config, str(tmp_path / 'w'))
