"""ATS figures: kept_tokens.png (the patch tokens sampled by each ATS block) and
keep_heatmap.png (how often each position is sampled over 2,000 eval images)."""
from __future__ import annotations

from tokensparse import drawing


def figures(predictor, out: str, num_images: int = 8):
  model = predictor.model
  titles = [f'block {i} (at most {k - model.num_prefix})'
            for i, k in zip(model.ats_layers, model.num_tokens)]
  return drawing.kept_token_figures(predictor, out, titles, num_images)
