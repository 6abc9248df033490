"""VTP accuracy on Fashion-MNIST: the default model, sparsity-trained, pruned 20 % / 40 % and
fine-tuned, against the dense model given the same extra training.

    python train.py --config configs/vtp/fashion_mnist.py --workdir runs/vtp_sparse_fashion_mnist
    python -m tokensparse.methods.vtp.prune --workdir runs/vtp_sparse_fashion_mnist --rate 0.2 --out runs/vtp_pruned20_fashion_mnist
    python -m tokensparse.methods.vtp.prune --workdir runs/vtp_sparse_fashion_mnist --rate 0.4 --out runs/vtp_pruned40_fashion_mnist
    python train.py --config configs/vtp/fashion_mnist.py:finetune,rate=0.2 --workdir runs/vtp_finetuned20_fashion_mnist
    python train.py --config configs/vtp/fashion_mnist.py:finetune,rate=0.4 --workdir runs/vtp_finetuned40_fashion_mnist
    python train.py --config configs/vtp/fashion_mnist.py:continue --workdir runs/vtp_continue_fashion_mnist
    python benchmarks/vtp_accuracy.py

Reads each work directory's final evaluation (all 10,000 test images) and writes the
'vtp_fashion_mnist' section of BENCHMARKS.md.
"""
import os

from common import ROOT, accuracy_rows, device_description, git_revision, table, write_section

RUNS = [('dense (the default run, 12 epochs)', 'runs/vit_fashion_mnist'),
        ('dense + 4 epochs (same extra training)', 'runs/vtp_continue_fashion_mnist'),
        ('sparsity-trained, scores applied (+2 epochs)', 'runs/vtp_sparse_fashion_mnist'),
        ('pruned 20 %, fine-tuned (+2 + 2 epochs)', 'runs/vtp_finetuned20_fashion_mnist'),
        ('pruned 40 %, fine-tuned (+2 + 2 epochs)', 'runs/vtp_finetuned40_fashion_mnist')]


def main():
  rows = accuracy_rows(RUNS, params=True)
  body = ('## VTP accuracy: Fashion-MNIST\n\n'
          f'Commands in `benchmarks/vtp_accuracy.py` (its docstring), at {git_revision()} on '
          f'{device_description()}. Sparsity training: 2 epochs from the default model with '
          'lambda = 1e-4; fine-tuning: 2 epochs without the penalty; all at lr 5e-4 with '
          'cosine decay. MMACs of the physical model (heads padded to the widest head of '
          'their layer). Paper (DeiT-B, ImageNet): -0.5 points at 20 %, -1.1 at 40 %.\n\n' +
          table(['model', 'test accuracy', 'vs default', 'params', 'of dense', 'MMACs',
                 'of dense', 'test images'], rows))
  for rate in (20, 40):  # the per-layer reports `tokensparse.methods.vtp.prune` wrote
    report = os.path.join(ROOT, f'runs/vtp_pruned{rate}_fashion_mnist', 'pruning.md')
    if os.path.exists(report):
      body += f'\n\nPer block at {rate} % (`pruning.md`): ' + open(report).read().strip()
  write_section('vtp_fashion_mnist', body)


if __name__ == '__main__':
  main()
