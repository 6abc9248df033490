"""ToMe figure: merged_tokens.png, rows of eval images: the input, then the patches coloured by
the final token they were merged into (each group painted with its mean pixel value and a hue
of its own, borders between groups in white); patches that were never merged keep their
pixels. Source tracking is switched on for the figure only."""
from __future__ import annotations

import colorsys
import os

import jax
import numpy as np
from PIL import Image

from tokensparse import drawing


def group_image(image: np.ndarray, groups: np.ndarray, patch: int) -> np.ndarray:
  """image uint8 [H, W, C]; groups [gh, gw] final-token index per patch -> RGB uint8 with each
  merged group (two or more patches) flattened to its mean and tinted, borders drawn."""
  rgb = drawing.to_rgb(image).astype(np.float32)
  gh, gw = groups.shape
  up = np.kron(groups, np.ones((patch, patch), int))
  out = rgb.copy()
  ids, counts = np.unique(groups, return_counts=True)
  for g, c in zip(ids, counts):
    if c < 2:
      continue
    where = up == g
    hue = colorsys.hsv_to_rgb((g * 0.61803) % 1.0, 0.75, 1.0)
    out[where] = 0.55 * rgb[where].mean(axis=0) + 0.45 * 255 * np.array(hue)
  edge = np.zeros(up.shape, bool)
  edge[:, 1:] |= up[:, 1:] != up[:, :-1]
  edge[1:, :] |= up[1:, :] != up[:-1, :]
  out[edge] = 255
  return out.astype(np.uint8)


def figures(predictor, out: str, num_images: int = 8, scale: int = 4):
  model = predictor.model.clone(trace_source=True)
  p = model.num_prefix
  raw = drawing.eval_inputs(predictor.config, num_images)
  _, aux = jax.jit(model.apply)(predictor.variables, predictor.normalize(raw))
  source = np.asarray(aux['source'])                               # [B, T, N0]
  groups = source[:, :, p:].argmax(axis=1).reshape(len(raw), *model.grid)
  sep = np.full((raw.shape[1], 2, 3), 255, np.uint8)
  rows = [np.concatenate([drawing.to_rgb(img), sep, group_image(img, g, model.patch_size)], axis=1)
          for img, g in zip(raw, groups)]
  grid = np.concatenate([np.concatenate([r, np.full((2, r.shape[1], 3), 255, np.uint8)])
                         for r in rows])
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'merged_tokens.png')
  img = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                     Image.NEAREST)
  drawing.annotate(img, f'ToMe (r per block {list(model.schedule)}): which patches ended in '
                   'one token', ['input', 'merged groups'], (raw.shape[2] + 2) * scale,
                   ['each group of merged patches: one tint, its mean pixel value, white '
                    'borders; unmerged patches keep their pixels']).save(path)
  return (path,)
