"""DynamicViT figures: kept_tokens.png (the tokens left after each stage) and
keep_heatmap.png (keep frequency per position over 2,000 eval images)."""
from __future__ import annotations

from tokensparse import drawing


def figures(predictor, out: str, num_images: int = 8):
  titles = [f'after stage {s + 1} ({c} kept)' for s, c in enumerate(predictor.model.counts)]
  return drawing.kept_token_figures(predictor, out, titles, num_images)
