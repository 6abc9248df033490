"""ToMe and EViT accuracy on the Fashion-MNIST canvas task: off the shelf on the dense canvas
model (no training) and after one epoch of fine-tuning, against the dense model given the
same epoch.

    python train.py --config configs/vit/fashion_mnist_canvas.py --workdir runs/vit_fashion_mnist_canvas
    python train.py --config configs/vit/fashion_mnist_canvas.py --workdir runs/vit_canvas_plus1 \\
        --config.init_from.path=runs/vit_fashion_mnist_canvas --config.num_epochs=1
    python train.py --config configs/tome/fashion_mnist_canvas.py:r=4 --workdir runs/tome4_fashion_mnist
    python train.py --config configs/tome/fashion_mnist_canvas.py:r=8 --workdir runs/tome8_fashion_mnist
    python train.py --config configs/evit/fashion_mnist_canvas.py:keep_rate=0.7 --workdir runs/evit07_fashion_mnist
    python benchmarks/tome_evit_accuracy.py

All 10,000 test images (each at a fixed random canvas position); MACs by each method's counter.
"""
from common import ROOT, accuracy_rows, device_description, git_revision, table, write_section

import os

from tokensparse import evaluate

OFF_THE_SHELF = [('dense canvas ViT (teacher)', None), ('ToMe r=4', 'tome:r=4'),
                 ('ToMe r=8', 'tome:r=8'), ('EViT keep rate 0.7', 'evit:keep_rate=0.7')]
FINE_TUNED = [('dense + 1 epoch', 'runs/vit_canvas_plus1'),
              ('ToMe r=4 + 1 epoch', 'runs/tome4_fashion_mnist'),
              ('ToMe r=8 + 1 epoch', 'runs/tome8_fashion_mnist'),
              ('EViT 0.7 + 1 epoch', 'runs/evit07_fashion_mnist')]


def main():
  teacher = os.path.join(ROOT, 'runs/vit_fashion_mnist_canvas')
  rows, base = [], None
  for label, method in OFF_THE_SHELF:
    r = evaluate.evaluate(teacher, method=method)
    acc, macs = 100 * r['accuracy'], r['gmacs_per_input'] * 1e3
    base = base or (acc, macs)
    rows.append([label, f'{acc:.2f} %', f'{acc - base[0]:+.2f}', f'{macs:.1f}',
                 f'{macs / base[1]:.2f}', r['examples']])
    print(rows[-1], flush=True)
  tuned = accuracy_rows(FINE_TUNED)
  header = ['model', 'test accuracy', 'vs first row', 'MMACs', 'MAC ratio', 'test images']
  body = ('## ToMe and EViT accuracy: Fashion-MNIST on a 56 px canvas\n\n'
          f'`python benchmarks/tome_evit_accuracy.py` at {git_revision()} on '
          f'{device_description()}. Off the shelf: the dense canvas ViT '
          '(`runs/vit_fashion_mnist_canvas`, 65 tokens, 6 blocks) run through each method with no '
          'training (`python -m tokensparse.evaluate --method ...`). ToMe merges r tokens in '
          'every block (65 -> 41 tokens at r=4, 65 -> 17 at r=8); EViT keeps 70 % of the patch '
          'tokens at blocks 1, 3 and 4 (the paper\'s 4th/7th/10th of 12, scaled) and fuses the '
          'rest.\n\n' + table(header, rows) +
          '\n\nFine-tuned for one epoch with the canvas recipe (configs/tome, configs/evit), '
          'against the dense model trained for the same epoch:\n\n' + table(header, tuned))
  write_section('tome_evit_accuracy', body)


if __name__ == '__main__':
  main()
