"""Prepare a TFDS dataset once, in the array_record format the pipeline reads.

    python -m tokensparse.data.build imagenet2012 --manual_dir /data/imagenet --data_dir /data/tfds

For imagenet2012, --manual_dir holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar as
image-net.org ships them. The TFDS imagenet2012 builder calls TensorFlow's file API, so this
one-time build needs `pip install -e '.[build]'` (tensorflow-cpu); training reads the result with
grain and never imports TensorFlow. (TFDS 4.9.10's own `tfds build` command cannot start without
apache_beam, which is why this module exists.)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tarfile
import time

import tensorflow_datasets as tfds

from tokensparse.data import pipeline

# What each manual-download builder needs in --manual_dir (TFDS's imagenet2012 builder reads
# the validation tar's file names even before it looks for the train tar).
MANUAL_FILES = {'imagenet2012': ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')}
TENSORFLOW_EXTRA = "pip install -e '.[build]'  (tensorflow-cpu; build time only)"


def log(message: str) -> None:
  print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


def build(name: str, data_dir: str, manual_dir: str = '') -> tfds.core.DatasetBuilder:
  """download_and_prepare `name` under data_dir in array_record; raises ValueError naming the
  missing input before anything is written."""
  if manual_dir and not os.path.isdir(manual_dir):
    raise ValueError(f'--manual_dir {manual_dir}: no such directory')
  needed = MANUAL_FILES.get(name, ())
  if needed:
    if not manual_dir:
      raise ValueError(f'{name} is a manual download: pass --manual_dir, the directory with '
                       f'{" and ".join(needed)}')
    missing = [f for f in needed if not os.path.isfile(os.path.join(manual_dir, f))]
    if missing:
      raise ValueError(f'--manual_dir {manual_dir}: has no {" and no ".join(missing)} '
                       f'({name} needs {" and ".join(needed)})')
    for f in needed:
      path = os.path.join(manual_dir, f)
      if not tarfile.is_tarfile(path):
        size = os.path.getsize(path)
        raise ValueError(f'--manual_dir {manual_dir}: {f} is not a tar archive ({size:,} bytes'
                         + (': an incomplete download?' if size < 2 ** 20 else '') + ')')
    if importlib.util.find_spec('tensorflow') is None:
      raise ValueError(f'the TFDS {name} builder needs TensorFlow to build (only to build: '
                       f'training reads without it): {TENSORFLOW_EXTRA}')
  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  if builder.is_prepared():
    log(f'{name} is already prepared in {builder.data_dir}')
    return builder
  log(f'building {name} into {builder.data_dir}' +
      (f' from {manual_dir}' if manual_dir else '') + ' (array_record)')
  start = time.time()
  made = [d for d in (os.path.join(data_dir, name), data_dir) if not os.path.exists(d)]
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
  except (OSError, tarfile.TarError, ValueError) as e:  # a corrupt archive, a full disk, ...
    for d in made:  # leave nothing half-built behind
      shutil.rmtree(d, ignore_errors=True)
    reason = f'{type(e).__name__}: {e}'.splitlines()[0]
    raise ValueError(f'building {name} from {manual_dir or "its download"} failed ({reason}); '
                     f'nothing was kept under {data_dir}') from None
  splits = ', '.join(f'{s} {info.num_examples:,}' for s, info in builder.info.splits.items())
  log(f'built {name} in {time.time() - start:.0f}s: {splits} examples')
  return builder


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('name', help='TFDS dataset name, e.g. imagenet2012')
  parser.add_argument('--data_dir', default=pipeline.DEFAULT_DATA_DIR,
                      help='where the prepared dataset goes (pass it to --config.data.data_dir)')
  parser.add_argument('--manual_dir', default='', help='the manually downloaded files')
  args = parser.parse_args(argv)
  try:
    build(args.name, args.data_dir, args.manual_dir)
  except (ValueError, tfds.core.registered.DatasetNotFoundError) as e:
    raise SystemExit(f'error: {e}'.splitlines()[0]) from None


if __name__ == '__main__':
  sys.exit(main())
