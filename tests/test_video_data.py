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
