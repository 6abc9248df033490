"""Serialized StableHLO of trained models with `jax.export`, batch size symbolic.

    python -m tokensparse.export --workdir runs/vit_fashion_mnist --out model.stablehlo
    python -m tokensparse.export --workdir runs/vit_fashion_mnist_canvas --eventful 16 --out step.stablehlo

The artifact maps normalised float32 inputs [b, ...] to logits [b, classes] (weights baked
in); `load(path)` returns a callable that runs it for any b, on the platforms it was exported
for (default: this machine's, e.g. `--platforms cpu,cuda`). With --eventful R the artifact is
one Eventful step: (state, frame) -> (state, logits), state and frame batched by b; the
state crosses the boundary as nested dicts, `flax.serialization.to_state_dict(state)`.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
from jax import export as jax_export

from tokensparse import inference


def export_predictor(predictor: inference.Predictor,
                     platforms: Sequence[str] | None = None) -> jax_export.Exported:
  """The model's inference function with the weights as constants and a symbolic batch."""
  (b,) = jax_export.symbolic_shape('b')
  spec = jax.ShapeDtypeStruct((b,) + predictor.input_shape, jnp.float32)
  fn = jax.jit(lambda x: predictor.model.apply(predictor.variables, x)[0])
  return jax_export.export(fn, platforms=platforms)(spec)


def export_eventful_step(predictor: inference.Predictor, capacity: int, variant: str = 'full',
                         platforms: Sequence[str] | None = None) -> jax_export.Exported:
  """One Eventful step (state, frame) -> (state, logits) with a symbolic batch."""
  from tokensparse import models  # pylint: disable=g-import-not-at-top
  from tokensparse.models.eventful import EventfulViT  # pylint: disable=g-import-not-at-top
  model = EventfulViT(**models.backbone_kwargs(predictor.config.model), capacity=capacity,
                      variant=variant)
  (b,) = jax_export.symbolic_shape('b')
  frame = jax.ShapeDtypeStruct((b,) + predictor.input_shape, jnp.float32)
  template = jax.eval_shape(lambda f: model.apply(predictor.variables, f,
                                                  method=EventfulViT.init_state)[0], frame)

  def fn(state_dict, f):  # plain nested dicts of arrays cross the artifact boundary
    state = flax.serialization.from_state_dict(template, state_dict)
    state, logits = model.apply(predictor.variables, state, f, method=EventfulViT.step)
    return flax.serialization.to_state_dict(state), logits
  return jax_export.export(jax.jit(fn), platforms=platforms)(
      flax.serialization.to_state_dict(template), frame)


def save(exported: jax_export.Exported, path: str) -> None:
  with open(path, 'wb') as f:
    f.write(exported.serialize())


def load(path: str) -> Callable[..., Any]:
  """A callable running a serialized artifact written by `save`."""
  with open(path, 'rb') as f:
    exported = jax_export.deserialize(bytearray(f.read()))
  return exported.call


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--eventful', type=int, default=0, help='export an Eventful step with '
                      'this capacity (tokens per gate) instead of the model')
  parser.add_argument('--variant', default='full')
  parser.add_argument('--platforms', default='', help='comma-separated, e.g. cpu,cuda')
  args = parser.parse_args(argv)
  predictor = inference.load(args.workdir)
  platforms = args.platforms.split(',') if args.platforms else None
  if args.eventful:
    exported = export_eventful_step(predictor, args.eventful, args.variant, platforms)
  else:
    exported = export_predictor(predictor, platforms)
  save(exported, args.out)
  print(f'wrote {args.out}: {exported.fun_name}, inputs {exported.in_avals[-1]}, '
        f'platforms {exported.platforms}')


if __name__ == '__main__':
  main()
