"""ATS, adaptive token sampling (Fayyaz et al., ECCV 2022): training-free; in each ATS block the
class token's attention times the value norms scores the tokens, inverse transform sampling
draws at most K - 1 of them, and only those go on. A baseline in the Eventful paper.

Config: `model.ats` = {num_tokens (K: tokens leaving an ATS block, class token included; an int
for every ATS block or one per block; 0 = all the tokens of the input, the official
configuration, whose savings are adaptive only), layers (ATS blocks; () = the official DeiT
placement, blocks 3 to 11 of 12, scaled to the depth)}. Needs the class token. Off the shelf
(`--method ats:num_tokens=K`) on any checkpoint, or fine-tuned.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tokensparse import backbone
from tokensparse.backbone.vit import per_layer
from tokensparse.fields import fail, int_or_list, int_tuple
from tokensparse.flops import block_macs, head_macs, patch_embed_macs, temporal_macs
from tokensparse.methods.ats.model import ATSViT
from tokensparse.methods.base import Method, Variant


def layers(f, depth: int) -> tuple[int, ...]:
  """The ATS blocks: `model.ats.layers`, or the official 3..11 of 12 scaled to the depth."""
  return tuple(f.layers) if f.layers else tuple(range(depth * 3 // 12, depth))


def tokens(f, depth: int, n: int) -> tuple[int, ...]:
  """K per ATS block (0 -> n, the input's token count)."""
  k = f.num_tokens
  ks = [k] * len(layers(f, depth)) if isinstance(k, int) else list(k)
  return tuple(v or n for v in ks)


class ATSMethod(Method):
  name = 'ats'
  summary = 'samples the tokens the class token attends to, weighted by value norms (training-free)'
  model_class = ATSViT
  options = {'num_tokens': int_or_list, 'layers': int_tuple}
  training_free = True

  def defaults(self):
    k = config_dict.FieldReference(0, field_type=object)   # an int or one per ATS block
    return ml_collections.ConfigDict(dict(num_tokens=k, layers=()))

  def model_kwargs(self, f, kw):
    n = backbone.num_prefix(kw) + backbone.num_patches(kw) * max(kw.get('num_frames') or 0, 1)
    return dict(ats_layers=layers(f, kw['depth']), num_tokens=tokens(f, kw['depth'], n))

  def validate(self, config, kw):
    f = self.fields(config.model)
    if kw.get('classifier', 'token') != 'token':
      fail('model.classifier', kw.get('classifier'),
           "ATS scores tokens by the class token's attention: needs model.classifier='token'")
    chosen = list(f.layers)
    if chosen and (chosen != sorted(set(chosen)) or chosen[0] < 0 or chosen[-1] >= kw['depth']):
      fail('model.ats.layers', tuple(chosen),
           f'must be increasing block indices in [0, {kw["depth"] - 1}] (model.depth={kw["depth"]})')
    ats = layers(f, kw['depth'])
    k = f.num_tokens
    if not isinstance(k, int) and len(k) != len(ats):
      fail('model.ats.num_tokens', k, f'needs one entry per ATS block ({len(ats)}: {ats})')
    p = backbone.num_prefix(kw)
    n = p + backbone.num_patches(kw) * max(kw.get('num_frames') or 0, 1)
    for block, value in zip(ats, tokens(f, kw['depth'], n)):
      if not isinstance(value, int) or not p + 1 <= value <= n:
        fail('model.ats.num_tokens', k, f'K={value} at block {block}: must be in [{p + 1}, {n}] '
             f'(0 means all {n})')
      n = value

  def suggest(self, kw):
    if kw.get('classifier', 'token') != 'token':
      return None
    p = backbone.num_prefix(kw)
    return f'num_tokens={max((p + backbone.num_patches(kw)) // 2, p + 1)}'

  def variants(self):
    return (Variant('ats', 'ATS', 'ats/fashion_mnist_canvas.py'),)

  def budget_knobs(self, kw):
    n = backbone.num_prefix(kw) + backbone.num_patches(kw)
    return [{'num_tokens': k} for k in range(backbone.num_prefix(kw) + 1, n + 1)]

  def macs(self, model, channels=3):
    """At static capacity: q/k/v and QK^T over the tokens entering a block; the attention-value
    product, the output projection and the MLP over the K sampled (all, outside ATS blocks)."""
    n = model.num_prefix + model.frames * model.num_patches
    counts = {'patch_embed': patch_embed_macs(model, channels)}
    for i, k in enumerate(model.tokens_out()):
      head_dim = per_layer(model.head_dim, i) or model.width // model.num_heads
      mlp_dim = per_layer(model.mlp_dim, i)
      parts = block_macs(n, model.width, model.num_heads, head_dim, mlp_dim)
      inner = model.num_heads * head_dim
      parts['attn'] = n * n * inner + k * n * inner            # QK^T for all, AV for K rows
      parts['proj'] = k * inner * model.width
      parts['mlp'] = 2 * k * model.width * mlp_dim
      for key, value in parts.items():
        counts[key] = counts.get(key, 0) + value * model.steps
      n = k
    counts.update(temporal_macs(model))
    counts['head'] = head_macs(model)
    counts['total'] = sum(counts.values())
    return counts

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.ats import viz  # drawing (PIL, data) only when drawn
    return viz.figures(predictor, out, num_images)


METHODS = (ATSMethod(),)
