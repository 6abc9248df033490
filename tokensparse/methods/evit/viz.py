"""EViT figures: kept_tokens.png (the patch tokens kept after each reorganising block; the
fused token is not drawn) and keep_heatmap.png (keep frequency per position)."""
from __future__ import annotations

from tokensparse import drawing


def figures(predictor, out: str, num_images: int = 8):
  model = predictor.model
  counts = [c for i, c in enumerate(model.counts()) if i in model.layers and c[1] < c[0]]
  titles = [f'block {i} ({c[1] - model.num_prefix - int(model.fuse)} kept)'
            for i, c in zip(model.layers, counts)]
  return drawing.kept_token_figures(predictor, out, titles, num_images)
