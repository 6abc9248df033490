"""TokenLearner (Ryoo et al., NeurIPS 2021) and TokenFuser, in Scenic's semantics.

Config: `model.token_learner` = {num_tokens, at (fraction of the depth), version ('v1.1' MLP +
softmax, Scenic's default; 'v1.0' convs + sigmoid, the paper's), reduce, bottleneck, fuser}.
"""
from __future__ import annotations

import ml_collections

from tokensparse import backbone
from tokensparse.fields import fail
from tokensparse.methods.base import Method, Variant
from tokensparse.methods.token_learner import flops
from tokensparse.methods.token_learner.model import TokenLearnerViT


def learner_layer(at: float, depth: int) -> int:
  """The block before which TokenLearner runs: `at` is a fraction of the depth (0.5 of 12
  blocks -> 6, i.e. after 6 blocks)."""
  return int(at * depth + 0.5)


class TokenLearnerMethod(Method):
  name = 'token_learner'
  summary = 'learns a handful of tokens from the feature map at mid-depth'
  model_class = TokenLearnerViT

  def defaults(self):
    return ml_collections.ConfigDict(dict(num_tokens=8, at=0.5, version='v1.1', reduce='sum',
                                          bottleneck=64, fuser=False))

  def model_kwargs(self, f, kw):
    return dict(num_learned_tokens=f.num_tokens, learner_layer=learner_layer(f.at, kw['depth']),
                learner_version=f.version, learner_reduce=f.reduce,
                learner_bottleneck=f.bottleneck, fuser=f.fuser)

  def validate(self, config, kw):
    tl = self.fields(config.model)
    if not 0.0 < tl.at < 1.0:
      fail('model.token_learner.at', tl.at, 'must be a fraction of the depth in (0, 1)')
    layer = learner_layer(tl.at, kw['depth'])
    if not 0 < layer < kw['depth']:
      fail('model.token_learner.at', tl.at,
           f'puts the learner before block {layer}; needs 1..{kw["depth"] - 1} '
           f'(model.depth={kw["depth"]})')
    n = backbone.num_patches(kw)
    if not isinstance(tl.num_tokens, int) or not 0 < tl.num_tokens <= n:
      fail('model.token_learner.num_tokens', tl.num_tokens,
           f'must be a positive integer no larger than the {n} patch positions per image')
    if tl.version not in ('v1.0', 'v1.1'):
      fail('model.token_learner.version', tl.version, "expected 'v1.0' or 'v1.1'")
    if tl.reduce not in ('sum', 'mean'):
      fail('model.token_learner.reduce', tl.reduce, "expected 'sum' or 'mean'")

  def variants(self):
    return (Variant('token_learner', 'TokenLearner', 'token_learner/fashion_mnist_canvas.py'),)

  def budget_knobs(self, kw):
    depth = kw['depth']
    # The paper's 8 and 16 tokens first; other counts in steps of 4 bring budgets closer.
    counts = (8, 16) + tuple(n for n in range(4, 33, 4) if n not in (8, 16))
    return [{'num_tokens': n, 'at': round(b / depth, 4)} for n in counts for b in range(1, depth)]

  def macs(self, model, channels=3):
    return flops.token_learner_macs(model, channels)

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.token_learner import viz  # drawing (PIL, data) only when drawn
    return viz.figures(predictor, out, num_images)


METHODS = (TokenLearnerMethod(),)
