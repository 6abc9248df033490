"""DynamicViT accuracy on Fashion-MNIST items on a 56x56 canvas, against its dense teacher and
the paper's two ablation baselines at the same budget.

    python train.py --config configs/vit/fashion_mnist_canvas.py --workdir runs/vit_fashion_mnist_canvas
    python train.py --config configs/dynamic_vit/fashion_mnist_canvas.py --workdir runs/dynamicvit_fashion_mnist
    python train.py --config configs/dynamic_vit/fashion_mnist_canvas.py:static --workdir runs/dynamicvit_static_fashion_mnist
    python train.py --config configs/dynamic_vit/fashion_mnist_canvas.py:pool --workdir runs/dynamicvit_pool_fashion_mnist
    python train.py --config configs/dynamic_vit/fashion_mnist_canvas.py:pool,full_backbone --workdir runs/dynamicvit_pool_fullbackbone_fashion_mnist
    python benchmarks/dynamic_vit_accuracy.py

Reads each work directory's final evaluation (all 10,000 test images) and writes the
'dynamic_vit_fashion_mnist' section of BENCHMARKS.md.
"""
from common import accuracy_rows, device_description, git_revision, table, write_section

RUNS = [('dense teacher (ViT, 64+1 tokens)', 'runs/vit_fashion_mnist_canvas'),
        ('DynamicViT/0.7 (44, 31, 21 tokens)', 'runs/dynamicvit_fashion_mnist'),
        ('static selection, same budget', 'runs/dynamicvit_static_fashion_mnist'),
        ('2x2 pooling before block 3', 'runs/dynamicvit_pool_fashion_mnist'),
        ('2x2 pooling, backbone at full lr', 'runs/dynamicvit_pool_fullbackbone_fashion_mnist')]


def main():
  rows = accuracy_rows(RUNS)
  body = ('## DynamicViT accuracy: Fashion-MNIST on a 56x56 canvas\n\n'
          f'Commands in `benchmarks/dynamic_vit_accuracy.py` (its docstring), at {git_revision()} '
          f'on {device_description()}. Each 28x28 item sits at a random position on a black '
          '56x56 canvas (fixed per test image), patch 7: 64 patch tokens, most of them '
          'background. Students fine-tune 1 epoch from the dense teacher with the same recipe '
          '(new parameters at lr 1e-3, backbone at 0.01x and frozen for the first quarter epoch, '
          'class token and position embedding frozen), except the last row. The teacher itself '
          'had only 2 epochs on the canvas, so a student whose backbone trains at the full rate '
          'keeps learning the task and can overtake it (last row).\n\n' + table(['model', 'test accuracy', 'vs teacher', 'MMACs', 'of dense',
                          'test images'], rows))
  write_section('dynamic_vit_fashion_mnist', body)


if __name__ == '__main__':
  main()
