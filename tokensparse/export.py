"""Serialized StableHLO of trained models with `jax.export`, batch size symbolic.

    python -m tokensparse.export --workdir runs/vit_fashion_mnist
    python -m tokensparse.export --workdir runs/vit_fashion_mnist_canvas --method eventful:capacity=16

The artifact goes to <workdir>/export/<model>[-<method options>].stablehlo unless --out names
a file; the tool prints the model and every input and output with its shape.

The artifact takes what `Predictor.predict` takes: pixels as stored, [b, H, W, C] float32 in
[0, 255], and maps them to logits [b, classes]; the normalisation (the config's mean/std) and the
weights are inside it. `load(path)` returns a callable that runs it for any b, on the platforms
it was exported for (default: this machine's, e.g. `--platforms cpu,cuda`), and also takes
uint8 pixels (cast to float32 on the way in). A method may export something
else (its `export` hook): the Eventful Transformer exports one step, (state, frame) ->
(state, logits), state and frame batched by b, the state as nested dicts
(`flax.serialization.to_state_dict(state)`). `--method NAME:key=value` exports the work
directory's weights run through another method (e.g. `tome:r=8`).
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import export as jax_export

from tokensparse import inference, methods


def export_predictor(predictor: inference.Predictor,
                     platforms: Sequence[str] | None = None) -> jax_export.Exported:
  """The model's inference function with the weights as constants and a symbolic batch."""
  (b,) = jax_export.symbolic_shape('b')
  spec = jax.ShapeDtypeStruct((b,) + predictor.input_shape, jnp.float32)
  fn = jax.jit(lambda x: predictor.model.apply(predictor.variables, predictor.normalize(x))[0])
  return jax_export.export(fn, platforms=platforms)(spec)


def save(exported: jax_export.Exported, path: str) -> None:
  with open(path, 'wb') as f:
    f.write(exported.serialize())


def load(path: str) -> Callable[..., Any]:
  """A callable running a serialized artifact written by `save`. Its last argument is pixels:
  uint8 ones are cast to the artifact's float32 (floats in [0, 255] pass as they are)."""
  with open(path, 'rb') as f:
    exported = jax_export.deserialize(bytearray(f.read()))

  def run(*args):
    *rest, pixels = args
    if jnp.issubdtype(jnp.result_type(pixels), jnp.integer):
      pixels = jnp.asarray(pixels, jnp.float32)
    return exported.call(*rest, pixels)
  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', default='', help='file to write (default: '
                      '<workdir>/export/<model>[-<method options>].stablehlo)')
  parser.add_argument('--method', default='', help='NAME[:key=value,...]: export the weights '
                      'run through this method (python -m tokensparse.viz --list names them)')
  parser.add_argument('--platforms', default='', help='comma-separated, e.g. cpu,cuda')
  args = parser.parse_args(argv)
  if args.out:
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir) or os.path.isdir(args.out):
      raise SystemExit(f'error: --out {args.out}: ' + (
          'is a directory; name a file' if os.path.isdir(args.out) else
          f'its directory {out_dir} does not exist'))
  try:
    predictor = inference.load(args.workdir, method=args.method or None)
    platforms = args.platforms.split(',') if args.platforms else None
    exported = (methods.get(predictor.config.model.name).export(predictor, platforms)
                or export_predictor(predictor, platforms))
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None
  out = args.out or default_path(args.workdir, predictor.config.model.name, args.method)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  save(exported, out)
  print(f'wrote {out}: model {predictor.config.model.name!r}'
        + (f' (--method {args.method})' if args.method else '') + f' from {args.workdir}, '
        f'platforms {", ".join(exported.platforms)}\n  inputs:  {describe(exported.in_avals)}\n'
        f'  outputs: {describe(exported.out_avals)}')


def default_path(workdir: str, model: str, method: str) -> str:
  """<workdir>/export/<model>[-<method options>].stablehlo."""
  options = method.partition(':')[2]
  tail = ('-' + ''.join(c if c.isalnum() or c in '=.' else '_' for c in options)) if options else ''
  return os.path.join(workdir, 'export', f'{model}{tail}.stablehlo')


def describe(avals) -> str:
  """Shapes of an artifact's inputs or outputs ('b' is the symbolic batch), runs of equal
  ones counted: 'float32[b,28,28,1]' or '66 state arrays (float32[b,65,128], ...), ...'."""
  names = [f'{a.dtype}[{",".join(str(d) for d in a.shape)}]' for a in avals]
  if len(names) <= 3:
    return ', '.join(names)
  return (f'{len(names) - 1} state arrays ({", ".join(dict.fromkeys(names[:-1]))}), '
          f'then {names[-1]}')


if __name__ == '__main__':
  main()
