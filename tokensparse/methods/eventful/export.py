"""One Eventful step as a `jax.export` artifact: (state, frame) -> (state, logits)."""
from __future__ import annotations

from typing import Sequence

import flax
import jax
import jax.numpy as jnp
from jax import export as jax_export

from tokensparse.backbone import backbone_kwargs
from tokensparse.methods.eventful.model import EventfulViT


def export_eventful_step(predictor, capacity: int | None = None, variant: str | None = None,
                         platforms: Sequence[str] | None = None) -> jax_export.Exported:
  """One Eventful step with a symbolic batch, on the predictor's weights: with its own Eventful
  model, or (any per-frame image model) one built with `capacity` and `variant`. The state
  crosses the artifact boundary as nested dicts (`flax.serialization.to_state_dict`); frames
  are pixels as stored (float32 in [0, 255]), normalised inside the artifact like `predict`."""
  model = predictor.model
  if not isinstance(model, EventfulViT) or capacity is not None or variant is not None:
    model = EventfulViT(**backbone_kwargs(predictor.config.model),
                        capacity=capacity if capacity is not None else getattr(model, 'capacity', 0),
                        variant=variant or getattr(model, 'variant', 'full'))
  (b,) = jax_export.symbolic_shape('b')
  frame = jax.ShapeDtypeStruct((b,) + predictor.input_shape, jnp.float32)
  template = jax.eval_shape(lambda f: model.apply(predictor.variables, f,
                                                  method=EventfulViT.init_state)[0], frame)
  # init_state is run by the caller on normalised frames; this step normalises its own input.

  def fn(state_dict, f):  # plain nested dicts of arrays cross the artifact boundary
    state = flax.serialization.from_state_dict(template, state_dict)
    state, logits = model.apply(predictor.variables, state, predictor.normalize(f),
                                method=EventfulViT.step)
    return flax.serialization.to_state_dict(state), logits
  return jax_export.export(jax.jit(fn), platforms=platforms)(
      flax.serialization.to_state_dict(template), frame)
