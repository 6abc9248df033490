"""TokenLearner accuracy against the dense model trained with the same recipe: Fashion-MNIST
items on a 56x56 canvas, and Moving Fashion-MNIST clips.

    python train.py --config configs/vit/fashion_mnist_canvas.py --workdir runs/vit_fashion_mnist_canvas
    python train.py --config configs/token_learner/fashion_mnist_canvas.py --workdir runs/tokenlearner_fashion_mnist
    python train.py --config configs/token_learner/moving_fashion_mnist.py --workdir runs/video_dense
    python train.py --config configs/token_learner/moving_fashion_mnist.py:tl --workdir runs/video_tokenlearner
    python benchmarks/token_learner_accuracy.py

Reads each work directory's final evaluation (every test image / clip) and writes the
'token_learner_accuracy' section of BENCHMARKS.md.
"""
from common import accuracy_rows, device_description, git_revision, table, write_section

GROUPS = [
    ('Fashion-MNIST on a 56x56 canvas (64 patch tokens + cls)', [
        ('dense ViT', 'runs/vit_fashion_mnist_canvas'),
        ('TokenLearner, 8 tokens before block 3 of 6', 'runs/tokenlearner_fashion_mnist')]),
    ('Moving Fashion-MNIST clips (8 frames x 36 patch tokens + cls)', [
        ('dense video ViT', 'runs/video_dense'),
        ('TokenLearner per frame, 8 tokens before block 3 of 6', 'runs/video_tokenlearner')]),
]


def main():
  rows = [[title] + row for title, runs in GROUPS for row in accuracy_rows(runs)]
  body = ('## TokenLearner accuracy\n\n'
          f'Commands in `benchmarks/token_learner_accuracy.py` (its docstring), at '
          f'{git_revision()} on {device_description()}. In each pair the two models share the '
          'initialisation (the dense canvas model for the clips, the default run\'s model for '
          'the canvas), the recipe and the number of steps; only the TokenLearner differs.\n\n' +
          table(['data', 'model', 'test accuracy', 'vs dense', 'MMACs per input', 'of dense',
                 'test inputs'], rows))
  write_section('token_learner_accuracy', body)


if __name__ == '__main__':
  main()
