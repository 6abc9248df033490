"""Pictures of what a method does, as PNG files (each method's `figures`, drawn with
tokensparse.drawing).

    python -m tokensparse.viz --workdir runs/dynamicvit_fashion_mnist    # -> figures/dynamic_vit/
    python -m tokensparse.viz --workdir runs/vit_fashion_mnist_canvas --method tome:r=4   # figures/tome-r=4/

Draws the figures of the work directory's method (each method's `figures`, in
tokensparse/methods/<name>/viz.py). `--method NAME:key=value,...` first runs the work
directory's weights through another method on the same backbone, for the methods that need no
training (for example `eventful:capacity=16`, `tome:r=4`, `evit:keep_rate=0.7`).
`python -m tokensparse.viz --list` names the methods and what they draw.
"""
from __future__ import annotations

import argparse
import os

from tokensparse import configs, inference, methods


def figure_dir(out: str, name: str, spec: str) -> str:
  """<out>/<model name>[-<options>]: one folder per method and setting, nothing overwritten."""
  options = spec.partition(':')[2]
  tail = ('-' + ''.join(c if c.isalnum() or c in '=.' else '_' for c in options)) if options else ''
  return os.path.join(out, f'{name}{tail}')


def suggestions(config) -> list[str]:
  """'name:options' of every training-free method that draws and validates on this model."""
  out = []
  kw = configs.validate_model(config)
  for name, m in methods.REGISTRY.items():
    if not m.training_free or type(m).figures is methods.Method.figures:
      continue
    options = m.suggest(kw)
    if options is None:
      continue
    spec = f'{name}:{options}'
    try:
      configs.validate_model(configs.complete(methods.retarget(config, spec)))
    except ValueError:
      continue
    out.append(spec)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir')
  parser.add_argument('--out', default='figures')
  parser.add_argument('--num_images', type=int, default=8)
  parser.add_argument('--method', default='', help='NAME[:key=value,...]: draw the figures of '
                      'this method run on the work directory\'s weights')
  parser.add_argument('--list', action='store_true', help='list the methods and exit')
  args = parser.parse_args(argv)
  if args.list or not args.workdir:
    for name, m in methods.REGISTRY.items():
      draws = 'figures' if type(m).figures is not methods.Method.figures else 'no figures'
      print(f'{name:14s} {m.summary} ({draws})')
    if not args.list:
      raise SystemExit('error: --workdir is required')
    return
  try:
    predictor = inference.load(args.workdir, method=args.method or None)
    method = methods.get(predictor.config.model.name)
    paths = method.figures(predictor, figure_dir(args.out, method.name, args.method),
                           args.num_images)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None
  if paths is None:
    raise SystemExit(f'error: no figures for model.name={method.name!r}; draw what a '
                     'training-free method does with these weights: '
                     + ', '.join(f'--method {s}' for s in suggestions(predictor.config)))
  for path in paths:
    print('wrote', path)


if __name__ == '__main__':
  main()
