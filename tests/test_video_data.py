"""Moving Fashion-MNIST: clips built offline, items where the positions say, the video pipeline."""
import numpy as np
import pytest

from tokensparse.data import fashion_mnist, moving_fashion_mnist, pipeline
from tests import fake_data


def test_bounce_stays_inside_and_reflects():
  got = moving_fashion_mnist.bounce(1.0, -3.0, np.arange(6), 7)
  np.testing.assert_array_equal(got, [1, 2, 5, 6, 3, 0])


def test_tiny_builder_renders_the_item_at_its_positions(tmp_path):
  source = fake_data.make_fashion_like(str(tmp_path / 'idx'), n_train=20, n_test=10)
  builder = moving_fashion_mnist.MovingFashionMnist(
      config='tiny', source_dir=source, data_dir=str(tmp_path / 'tfds'),
      file_format='array_record')
  builder.download_and_prepare()
  c = builder.builder_config
  train = builder.as_data_source(split='train')
  assert len(train) == c.train_clips and len(builder.as_data_source(split='test')) == c.test_clips
  images = fashion_mnist.read_idx(f'{source}/train-images-idx3-ubyte.gz')
  labels = fashion_mnist.read_idx(f'{source}/train-labels-idx1-ubyte.gz')
  for i in (0, 23):  # TFDS stores examples shuffled: find each clip's item by its pixels
    ex = train[i]
    assert ex['video'].shape == (c.frames, c.canvas, c.canvas, 1)
    y, x = ex['positions'][0]
    crop = ex['video'][0, y:y + 28, x:x + 28, 0]
    j = [k for k in range(20) if np.array_equal(images[k], crop)]
    assert len(j) == 1 and ex['label'] == labels[j[0]]
    moved = False
    for f, (y, x) in enumerate(ex['positions']):
      frame = ex['video'][f, ..., 0]
      np.testing.assert_array_equal(frame[y:y + 28, x:x + 28], images[j[0]])
      assert frame.astype(int).sum() == images[j[0]].astype(int).sum()  # black elsewhere
      moved |= f > 0 and tuple(ex['positions'][f]) != tuple(ex['positions'][0])
    assert moved


def test_video_batches_through_the_pipeline(tmp_path):
  config = fake_data.tiny_config(tmp_path)
  with config.unlocked():
    config.data.update(name='moving_fashion_mnist/tiny', augment='none')
    config.model.update(image_size=35, num_frames=4)
    config.batch_size = 8
    config.eval_batch_size = 16
  data = pipeline.Data(config, local_devices=2)
  batch = data.train_batch(0)
  assert batch['image'].shape == (2, 4, 4, 35, 35, 1) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (2, 4)
  evals = list(data.eval_iter())
  assert sum(float(b['mask'].sum()) for b in evals) == 32
  np.testing.assert_array_equal(data.train_batch(3)['image'], data.train_batch(3)['image'])


def test_video_refuses_image_augmentations(tmp_path):
  config = fake_data.tiny_config(tmp_path)
  with config.unlocked():
    config.data.update(name='moving_fashion_mnist/tiny', augment='crop_flip')
    config.model.update(image_size=35, num_frames=4)
    config.batch_size = 8
  data = pipeline.Data(config, local_devices=1)
  with pytest.raises(ValueError, match='holds video clips: set data.augment="none"'):
    data.train_batch(0)


def test_unknown_builder_config_is_named(tmp_path):
  config = fake_data.tiny_config(tmp_path)
  with config.unlocked():
    config.data.name = 'moving_fashion_mnist/huge'
  with pytest.raises(ValueError, match="data.name='moving_fashion_mnist/huge': moving_fashion_mnist "
                                       'has the configs default, tiny'):
    pipeline.get_builder(config.data)


def test_actions_move_as_labelled_and_come_in_time_reversed_pairs():
  from tokensparse.data import fashion_mnist_actions as A
  item = np.full((28, 28), 200, np.uint8)
  for action, name in enumerate(A.ACTIONS):
    for seed in range(20):
      pos = A.trajectory(action, 16, 42, np.random.default_rng([0, seed, 7]))
      y, x = pos[:, 0], pos[:, 1]
      visible = A.render(item, pos, 42).reshape(16, -1).astype(bool).sum(-1)
      if name in ('left', 'right', 'up', 'down'):
        along, across = (x, y) if name in ('left', 'right') else (y, x)
        step = np.diff(along)
        assert (step <= 0).all() if name in ('left', 'up') else (step >= 0).all()
        assert along[0] != along[-1] and (across == across[0]).all()
        assert (visible == 28 * 28).all()                         # always fully in view
      else:
        first, last = (0, -1) if name == 'enters' else (-1, 0)
        assert visible[first] == 0 and visible[last] == 28 * 28   # outside -> fully inside
  # A clip played backwards is one of the other class of its pair.
  right = A.trajectory(1, 16, 42, np.random.default_rng([0, 3, 7]))
  assert (np.diff(right[::-1, 1]) <= 0).all()


def test_actions_builder_is_balanced_and_offline(tmp_path):
  from tokensparse.data import fashion_mnist_actions as A
  from tests import fake_data
  src = fake_data.make_fashion_like(str(tmp_path / 'idx'))
  builder = A.FashionMnistActions(source_dir=src, config='tiny', data_dir=str(tmp_path / 'tfds'),
                                  file_format='array_record')
  from tokensparse.data import fashion_mnist
  fashion_mnist.build_offline(builder)
  source = builder.as_data_source(split='train')
  labels = np.array([source[i]['label'] for i in range(len(source))])
  assert np.bincount(labels, minlength=6).tolist() == [8] * 6
  assert source[0]['video'].shape == (4, 35, 35, 1)
