"""Accuracy and training time of the default run (the README's main command).

    python benchmarks/fashion_mnist.py --run                 # train from scratch, then report
    python benchmarks/fashion_mnist.py --workdir runs/vit_fashion_mnist   # report a finished run

Reads the work directory's metrics.jsonl and writes the 'fashion_mnist' section of BENCHMARKS.md.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from common import ROOT, device_description, git_revision, table, write_section  # noqa: E402

CONFIG = 'configs/vit/fashion_mnist.py'


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='runs/bench_vit_fashion_mnist')
  parser.add_argument('--run', action='store_true', help='train from scratch first (~10 min)')
  args = parser.parse_args()
  wall = None
  if args.run:
    shutil.rmtree(os.path.join(ROOT, args.workdir), ignore_errors=True)
    t = time.time()
    subprocess.run([sys.executable, 'train.py', '--config', CONFIG, '--workdir', args.workdir],
                   cwd=ROOT, check=True)
    wall = time.time() - t
  lines = [json.loads(l) for l in open(os.path.join(ROOT, args.workdir, 'metrics.jsonl'))]
  train = [l for l in lines if l['split'] == 'train']
  final = [l for l in lines if l['split'] == 'eval'][-1]
  ips = sorted(l['images_per_sec'] for l in train if l['images_per_sec'] == l['images_per_sec'])
  row = [f'{100 * final["accuracy"]:.2f} %', int(final['count']), final['step'],
         f'{ips[len(ips) // 2]:.0f}', f'{wall / 60:.1f} min' if wall else 'not timed']
  print(row)
  body = (f'## Default run: small ViT on Fashion-MNIST\n\n'
          f'`python benchmarks/fashion_mnist.py --run` (= `python train.py --config {CONFIG}`) '
          f'at {git_revision()} on {device_description()}.\n\n' +
          table(['test accuracy', 'test images', 'steps', 'train images/s (median)',
                 'wall time (build data, compile, train, eval)'], [row]))
  write_section('fashion_mnist', body)


if __name__ == '__main__':
  main()
