"""MACs of DynamicViT and its pooling baseline in inference mode (tokensparse.flops rules)."""
from __future__ import annotations

from tokensparse.flops import vit_macs


def predictor_macs(tokens: int, width: int) -> int:
  """DynamicViT predictor: Dense C->C, C->C/2, C/2->C/4, C/4->2 per token."""
  return tokens * (width * width + width * (width // 2) + (width // 2) * (width // 4)
                   + (width // 4) * 2)


def dynamic_vit_macs(model, channels: int = 3) -> dict:
  """MACs of DynamicViT at inference: each block at its stage's token count, predictors included
  (they score the tokens still present before each pruning block)."""
  n, p = model.num_patches, model.num_prefix
  kept, tokens_per_block, pred = n, [], 0
  for i in range(model.depth):
    if i in model.prune_layers:
      s = list(model.prune_layers).index(i)
      if model.selector != 'static':  # static selection reads stored scores: no matmuls
        pred += predictor_macs(kept, model.width)
      kept = model.counts[s]
    tokens_per_block.append(p + kept)
  counts = vit_macs(model, channels, tokens_per_block)
  counts['predictors'] = pred * model.steps
  counts['total'] += pred * model.steps
  return counts


def pooled_vit_macs(model, channels: int = 3) -> dict:
  """PooledViT: a quarter of the patch tokens from `pool_layer` on."""
  n, p = model.num_patches, model.num_prefix
  return vit_macs(model, channels,
                  [p + (n if i < model.pool_layer else n // 4) for i in range(model.depth)])
