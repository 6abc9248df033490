"""The real imagenet2012 path end to end: a fake manual directory in the official layout, the
real TFDS builder (TensorFlow at build time only), then train.py with the ImageNet config
(DeiT's augmentations on) scaled down to a tiny model, in a process where TensorFlow cannot be
imported at all."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

from tests import cli_runs, fake_data

NO_TENSORFLOW = """
import runpy, sys
class NoTensorflow:  # as if TensorFlow were not installed: no finder finds it
  def __init__(self, finder):
    self.finder = finder
  def __getattr__(self, name):
    return getattr(self.finder, name)
  def find_spec(self, name, path=None, target=None):
    if name == 'tensorflow' or name.startswith('tensorflow.'):
      return None
    return self.finder.find_spec(name, path, target)
sys.meta_path[:] = [NoTensorflow(f) for f in sys.meta_path]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_imagenet2012_builds_from_a_manual_dir_and_trains_without_tensorflow(tmp_path):
  assert importlib.util.find_spec('tensorflow'), \
      "the imagenet2012 build needs tensorflow-cpu: pip install -e '.[test]' installs it"
  manual = fake_data.make_imagenet_manual(str(tmp_path / 'manual'))
  data_dir = str(tmp_path / 'tfds')
  build = subprocess.run([sys.executable, '-m', 'tokensparse.data.build', 'imagenet2012',
                          '--data_dir', data_dir, '--manual_dir', manual],
                         env=cli_runs.env(2), capture_output=True, text=True, timeout=600)
  assert build.returncode == 0, build.stderr[-3000:]
  assert 'built imagenet2012' in build.stdout and 'train 12, validation 6' in build.stdout

  # The prepared copy, read as the pipeline reads it: JPEGs decoded to arrays, official labels.
  import tensorflow_datasets as tfds
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  assert builder.info.file_format.value == 'array_record'
  train = builder.as_data_source('train')
  names = sorted(train[i]['file_name'].decode() for i in range(12))
  assert names[0] == 'n01440764_1.JPEG' and train[0]['image'].shape[2] == 3
  assert sorted({int(train[i]['label']) for i in range(12)}) == [0, 1, 2]  # wnid -> class index

  workdir = str(tmp_path / 'run')
  train_run = subprocess.run(
      [sys.executable, '-c', NO_TENSORFLOW, os.path.join(cli_runs.REPO, 'train.py'),
       '--config', os.path.join(cli_runs.REPO, 'configs/vit/imagenet.py') + ':S/16,runlocal',
       '--workdir', workdir, f'--config.data.data_dir={data_dir}', '--config.total_steps=2',
       '--config.model.image_size=64', '--config.model.width=32', '--config.model.depth=1',
       '--config.model.num_heads=2', '--config.model.mlp_dim=64', '--config.batch_size=8',
       '--config.eval_batch_size=8', '--config.log_every_steps=1'],
      env=cli_runs.env(2), capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
  assert train_run.returncode == 0, train_run.stdout[-2000:] + train_run.stderr[-3000:]
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [(l['step'], l['split']) for l in lines] == [(1, 'train'), (2, 'train'), (2, 'eval')]
  assert all(np.isfinite(l['loss']) for l in lines)
  assert lines[-1]['count'] == 6                        # every validation image, once
  assert 'imagenet2012: 12 train / 6 eval examples, 1000 classes' in train_run.stdout


def test_build_names_what_is_missing(tmp_path):
  run = subprocess.run([sys.executable, '-m', 'tokensparse.data.build', 'imagenet2012',
                        '--data_dir', str(tmp_path / 'tfds'), '--manual_dir', str(tmp_path)],
                       env=cli_runs.env(1), capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  assert run.stderr.strip().splitlines()[-1] == (
      f'error: --manual_dir {tmp_path}: has no ILSVRC2012_img_train.tar and no '
      'ILSVRC2012_img_val.tar (imagenet2012 needs ILSVRC2012_img_train.tar and '
      'ILSVRC2012_img_val.tar)')
  assert not os.path.exists(tmp_path / 'tfds')


def test_build_names_an_empty_tar_and_leaves_nothing(tmp_path):
  """0-byte tars (an incomplete download) are named in one line before anything is written."""
  for name in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'):
    (tmp_path / name).write_bytes(b'')
  run = subprocess.run([sys.executable, '-m', 'tokensparse.data.build', 'imagenet2012',
                        '--data_dir', str(tmp_path / 'tfds'), '--manual_dir', str(tmp_path)],
                       env=cli_runs.env(1), capture_output=True, text=True, timeout=300)
  assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
  assert run.stderr.strip() == (f'error: --manual_dir {tmp_path}: ILSVRC2012_img_train.tar is '
                                'not a tar archive (0 bytes: an incomplete download?)')
  assert not os.path.exists(tmp_path / 'tfds')
