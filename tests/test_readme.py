"""The README's Python snippets run top to bottom, in the order written, so the README cannot
rot: each in the namespace the ones before it left, from a fresh directory holding the work
directories the README's commands train, under the same names, with the same data, image
sizes, patches and frames, but tiny (2 blocks of width 16, one training step)."""
import os
import re

import pytest

from tokensparse import configs
from tokensparse.data import fashion_mnist
from tokensparse.train import loop

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.md')
SKIP = re.compile(r'<!-- readme-test: skip \((.+?)\) -->\n$')
# The work directories the README trains before its snippets use them, in training order (each
# config's init_from names the one before it).
WORKDIRS = (('runs/vit_fashion_mnist', 'vit/fashion_mnist.py', ''),
            ('runs/vit_fashion_mnist_canvas', 'vit/fashion_mnist_canvas.py', ''),
            ('runs/vivit_actions', 'vit/fashion_mnist_actions.py', ''))


def snippets() -> list[tuple[int, str, str | None]]:
  """(line, code, reason it is skipped or None) of every ```python block of the README."""
  text = open(README).read()
  found = []
  for m in re.finditer(r'^```python\n(.*?)^```', text, re.S | re.M):
    before = text[:m.start()]
    skip = SKIP.search(before)
    found.append((before.count('\n') + 1, m.group(1), skip.group(1) if skip else None))
  return found


def test_the_readme_has_snippets_and_skips_only_downloads():
  found = snippets()
  assert len(found) >= 5
  skipped = [(line, reason) for line, _, reason in found if reason]
  assert all('download' in reason for _, reason in skipped), skipped  # nothing else may hide
  assert len(skipped) <= 1, skipped


def tiny(path: str, arg: str, data_dir: str):
  config = configs.from_file(path, arg)
  with config.unlocked():
    config.model.update(width=16, depth=2, num_heads=2, mlp_dim=32)
    if config.model.get('temporal_depth'):
      config.model.temporal_depth = 1
    config.data.update(data_dir=data_dir, eval_split='test[:200]')
    config.update(total_steps=1, batch_size=16, eval_batch_size=200, warmup_steps=0,
                  warmup_epochs=0.0, log_every_steps=1, checkpoint_every_steps=1)
  return config


def test_readme_python_snippets_run_in_order(tmp_path, monkeypatch):
  data_dir = str(tmp_path / 'tfds')
  monkeypatch.setattr(fashion_mnist, 'DEFAULT_DATA_DIR', data_dir)  # loaders build here
  monkeypatch.chdir(tmp_path)
  for workdir, path, arg in WORKDIRS:
    loop.train_and_evaluate(tiny(path, arg, data_dir), workdir)
  namespace = {'__name__': '__readme__'}
  ran = 0
  for line, code, skip in snippets():
    if skip:
      continue
    try:
      exec(compile(code, f'README.md:{line}', 'exec'), namespace)  # pylint: disable=exec-used
    except Exception as e:  # pylint: disable=broad-except
      pytest.fail(f'the README snippet at line {line} fails: {type(e).__name__}: {e}')
    ran += 1
  assert ran >= 4
