"""MACs of TokenLearnerViT in inference mode (tokensparse.flops rules)."""
from __future__ import annotations

from tokensparse.flops import vit_macs


def token_learner_module_macs(positions: int, width: int, tokens: int, version: str = 'v1.1',
                              bottleneck: int = 64) -> int:
  """One TokenLearner on one image/frame: the maps (MLP, or four 3x3 convs for v1.0) and the
  weighted sums of the inputs."""
  if version == 'v1.0':
    maps = positions * 9 * (width * tokens + 3 * tokens * tokens)
  else:
    maps = positions * (width * bottleneck + bottleneck * tokens)
  return maps + tokens * positions * width


def token_fuser_macs(positions: int, width: int, tokens: int, bottleneck: int = 64) -> int:
  """One TokenFuser on one image/frame: token mixing, mixing weights, map back to positions."""
  return (width * tokens * tokens + positions * (width * bottleneck + bottleneck * tokens)
          + positions * tokens * width)


def token_learner_macs(model, channels: int = 3) -> dict:
  """MACs of TokenLearnerViT for one image (clip): blocks before the learner at all tokens,
  later blocks at S (T*S) learned tokens, learner (and fuser) modules included."""
  p, t, n, s = model.num_prefix, model.frames, model.num_patches, model.num_learned_tokens
  tokens_per_block = [p + t * (n if i < model.learner_layer else s) for i in range(model.depth)]
  counts = vit_macs(model, channels, tokens_per_block)
  learner = t * token_learner_module_macs(n, model.width, s, model.learner_version,
                                          model.learner_bottleneck)
  later = model.depth - model.learner_layer
  counts['token_learner'] = learner * (later if model.fuser else 1) * model.steps
  if model.fuser:
    counts['token_fuser'] = later * t * token_fuser_macs(n, model.width, s,
                                                         model.learner_bottleneck) * model.steps
  counts['total'] = sum(v for k, v in counts.items() if k != 'total')
  return counts
