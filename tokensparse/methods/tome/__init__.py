"""ToMe, token merging (Bolya et al., ICLR 2023): training-free; merges the r most similar
tokens in every block. Runs off the shelf on any backbone checkpoint and fine-tunes with the
ordinary trainer.

Config: `model.tome` = {r (tokens merged per block: an int, or one value per block),
inflect (0: constant r; -0.5: ToMe's decreasing schedule), prop_attn (proportional
attention), trace_source (keep the merge map for figures)}.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tokensparse import backbone
from tokensparse.fields import boolean, fail, int_or_list
from tokensparse.flops import vit_macs
from tokensparse.methods.base import Method, Variant
from tokensparse.methods.tome import ops
from tokensparse.methods.tome.model import ToMeViT


def sequence_tokens(kw) -> int:
  """Tokens of one sequence the blocks see (prefix + patches, all frames of a joint clip)."""
  frames = 1 if kw.get('video', 'joint') != 'joint' else max(kw.get('num_frames') or 0, 1)
  return backbone.num_prefix(kw) + backbone.num_patches(kw) * frames


def largest_r(kw, inflect: float = 0.0) -> int:
  """The largest int r whose schedule fits every block of the backbone `kw`."""
  p, tokens, best = backbone.num_prefix(kw), sequence_tokens(kw), 0
  for r in range(1, ops.max_merge(tokens, p) + 1):
    rs = ops.schedule(r, kw['depth'], inflect)
    if all(ri <= ops.max_merge(t, p) for t, ri in zip(ops.token_counts(tokens, rs), rs)):
      best = r
  return best


def merges(tm, depth: int) -> tuple[int, ...]:
  """r per block from the fields of model.tome."""
  r = tm.r if isinstance(tm.r, int) else tuple(tm.r)
  return ops.schedule(r, depth, tm.inflect)


class ToMeMethod(Method):
  name = 'tome'
  summary = 'merges the most similar tokens in every block (training-free)'
  model_class = ToMeViT
  options = {'r': int_or_list, 'inflect': float, 'prop_attn': boolean}

  training_free = True

  def defaults(self):
    # r is an int or a list (one per block): typed `object` so either can override it.
    r = config_dict.FieldReference(8, field_type=object)
    return ml_collections.ConfigDict(dict(r=r, inflect=0.0, prop_attn=True, trace_source=False))

  def model_kwargs(self, f, kw):
    return dict(merges=merges(f, kw['depth']), prop_attn=f.prop_attn, trace_source=f.trace_source)

  def validate(self, config, kw):
    tm = self.fields(config.model)
    r = tm.r if isinstance(tm.r, int) else list(tm.r)
    values = [r] if isinstance(r, int) else r
    if not values or any(not isinstance(v, int) or v < 0 for v in values):
      fail('model.tome.r', r, 'must be a non-negative integer or a list of them (one per block)')
    if not isinstance(r, int) and len(r) > kw['depth']:
      fail('model.tome.r', r, f'has more entries than blocks (model.depth={kw["depth"]})')
    if not -1.0 <= tm.inflect <= 1.0:
      fail('model.tome.inflect', tm.inflect, 'must be in [-1, 1] (-0.5: decreasing schedule)')
    rs = merges(tm, kw['depth'])
    p, tokens = backbone.num_prefix(kw), sequence_tokens(kw)
    for i, (t, ri) in enumerate(zip(ops.token_counts(tokens, rs), rs)):
      if ri > ops.max_merge(t, p):
        fail('model.tome.r', r, f'block {i} would merge {ri} of its {t} tokens; at most '
             f'{ops.max_merge(t, p)} can be merged there ({p} prefix token(s) are never '
             f'merged; schedule {list(rs)}); the largest r this model allows is '
             f'{largest_r(kw, tm.inflect)} (with inflect={tm.inflect:g})')

  def suggest(self, kw):
    return f'r={max(largest_r(kw, 0.0) // 2, 1)}'

  def variants(self):
    return (Variant('tome', 'ToMe', 'tome/fashion_mnist_canvas.py'),)

  def budget_knobs(self, kw):
    # Constant r first, then ToMe's decreasing schedule (inflect -0.5) and the other
    # schedules in steps of 0.25: with r whole, the schedule is what brings a budget within 2 %.
    inflects = (0.0, -0.5, -1.0, -0.75, -0.25, 0.25, 0.5, 0.75, 1.0)
    return [{'r': r, 'inflect': i} for i in inflects for r in range(1, 64)]

  def macs(self, model, channels=3):
    """Attention half at the tokens entering each block, MLP half at the tokens left after
    the merge, plus the matching's similarity products (|A| x |B| x head_dim)."""
    rs = model.schedule
    tokens = model.num_prefix + model.frames * model.num_patches
    counts_in = ops.token_counts(tokens, rs)
    counts = vit_macs(model, channels, [(t, t - r) for t, r in zip(counts_in, rs)])
    head_dim = model.width // model.num_heads
    counts['matching'] = model.steps * sum(-(-t // 2) * (t // 2) * head_dim
                                           for t, r in zip(counts_in, rs) if r)
    counts['total'] += counts['matching']
    return counts

  def figures(self, predictor, out, num_images=8):
    from tokensparse.methods.tome import viz  # drawing (PIL, data) only when drawn
    return viz.figures(predictor, out, num_images)


METHODS = (ToMeMethod(),)
