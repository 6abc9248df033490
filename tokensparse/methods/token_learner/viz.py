"""TokenLearner figure: learner_maps.png, rows of eval images (for clips: the frames of one
clip), the input, then the spatial weights of each learned token over it (brighter = more)."""
from __future__ import annotations

import os

import jax
import numpy as np

from tokensparse import drawing


def figures(predictor, out: str, num_images: int = 8):
  model = predictor.model
  raw = drawing.eval_inputs(predictor.config, num_images)
  weights = np.asarray(jax.jit(lambda v, x: model.apply(v, x)[1]['learner_weights'])(
      predictor.variables, predictor.normalize(raw)))          # [n * frames, S, N]
  if model.num_frames:  # the frames of the first clip, one per row
    raw, weights = raw[0], weights[:model.num_frames]
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'learner_maps.png')
  drawing.learner_map_grid(raw, weights, model.grid, model.patch_size, path,
                           title=f'TokenLearner {model.learner_version}: the '
                           f'{model.num_learned_tokens} tokens learned before block '
                           f'{model.learner_layer}' + (' (one clip, a frame per row)'
                                                       if model.num_frames else ''))
  return (path,)
