"""Data: the real Fashion-MNIST builder and the augmentation functions."""
import numpy as np
import pytest

from tokensparse.data import fashion_mnist, pipeline


def test_real_fashion_mnist_builds_offline(tmp_path):
  """Built from /usr/share/datasets/fashion-mnist (installed by .ci/run) with no network."""
  builder = fashion_mnist.FashionMnist(data_dir=str(tmp_path), file_format='array_record')
  builder.download_and_prepare()
  src = fashion_mnist.DEFAULT_SOURCE_DIR
  for split, n, files in (('train', 60000, fashion_mnist.FILES['train']),
                          ('test', 10000, fashion_mnist.FILES['test'])):
    source = builder.as_data_source(split=split)
    assert len(source) == n
    examples = list(source.__getitems__(list(range(n))))
    labels = np.array([e['label'] for e in examples])
    images = np.stack([e['image'] for e in examples])
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [n // 10] * 10)
    # Same pixels per class as the IDX files (the records are stored in shuffled order).
    idx_images = fashion_mnist.read_idx(f'{src}/{files[0]}')
    idx_labels = fashion_mnist.read_idx(f'{src}/{files[1]}')
    for c in range(10):
      assert images[labels == c].astype(np.int64).sum() == idx_images[idx_labels == c].astype(np.int64).sum()


def test_read_idx_rejects_truncated_files(tmp_path):
  from tests.fake_data import write_idx
  write_idx(tmp_path / 'x.gz', np.zeros((3, 4, 4), np.uint8))
  assert fashion_mnist.read_idx(str(tmp_path / 'x.gz')).shape == (3, 4, 4)
  import gzip
  with gzip.open(tmp_path / 'bad.gz', 'wb') as f:
    f.write(bytes([0, 0, 8, 3]) + (3).to_bytes(4, 'big') + (4).to_bytes(4, 'big') * 2 + b'\0' * 10)
  with pytest.raises(ValueError, match='the header promises'):
    fashion_mnist.read_idx(str(tmp_path / 'bad.gz'))


def test_pad_crop_equals_padding_then_cropping():
  image = np.random.default_rng(0).integers(1, 255, (28, 28, 1)).astype(np.uint8)
  for seed in range(20):
    got = pipeline.pad_crop(image, np.random.default_rng(seed), 28, 3)
    y, x = np.random.default_rng(seed).integers(-3, 4, size=2)
    padded = np.pad(image, ((3, 3), (3, 3), (0, 0)))
    np.testing.assert_array_equal(got, padded[3 + y:3 + y + 28, 3 + x:3 + x + 28])


def test_crops_give_the_model_size():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (50, 70, 3)).astype(np.uint8)
  assert pipeline.random_resized_crop(image, rng, 32).shape == (32, 32, 3)
  assert pipeline.center_crop(image, 32, 0.875).shape == (32, 32, 3)
  grey = rng.integers(0, 255, (28, 28, 1)).astype(np.uint8)
  assert pipeline.resize(grey, 32).shape == (32, 32, 1)


def test_a_second_first_run_waits_for_the_build_instead_of_crashing(tmp_path, capsys):
  """Two first runs build the same dataset at once: the second waits on the build lock (held
  here by the test) and then reuses the finished build."""
  import fcntl
  import threading
  from tests.fake_data import make_fashion_like
  source, data_dir = make_fashion_like(str(tmp_path / 'idx')), str(tmp_path / 'tfds')
  kwargs = dict(data_dir=data_dir, source_dir=source)
  builder = fashion_mnist.FashionMnist(file_format='array_record', **kwargs)
  lock_path = tmp_path / 'tfds' / '.fashion_mnist-1.0.0.build.lock'
  lock_path.parent.mkdir()
  built = []
  with open(lock_path, 'w') as held:
    fcntl.flock(held, fcntl.LOCK_EX)       # another process is building ...
    waiter = threading.Thread(
        target=lambda: built.append(fashion_mnist.prepared(fashion_mnist.FashionMnist, **kwargs)))
    waiter.start()
    waiter.join(timeout=2.0)
    assert waiter.is_alive() and not built  # ... so this one waits
    assert 'waiting for another process that is building fashion_mnist' in capsys.readouterr().out
    fashion_mnist.build_offline(builder)    # the other build completes
    capsys.readouterr()
  waiter.join(timeout=60)
  assert built and len(built[0].as_data_source(split='train')) == 96
  assert 'building fashion_mnist once' not in capsys.readouterr().out  # not built twice
