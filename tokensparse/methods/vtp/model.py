"""Visual Transformer Pruning (Zhu, Tang, Han 2021) on the shared backbone.

1. Sparsity training: `VTPViT` is the backbone plus one importance score per prunable channel,
   in the separate variable collection 'scores' (initialised to 1), so they can be penalised,
   frozen or dropped on their own: `attn_i` [H, d] gates the inner channels of q, k and v of
   block i alike, `mlp_i` [mlp_dim] the MLP hidden channels after GELU (`ops.scale_channels`).
   The loss adds lambda * sum |s| (`ops.l1_penalty`, lambda = 1e-4).
2. `prune(params, scores, rate)`: one global threshold over |s| of all layers and both kinds
   removes the `rate` fraction of lowest-scoring channels. The scores of the kept channels are
   folded into the weights (q/k/v columns and biases; fc2 rows), so the pruned model computes
   exactly what the scored model computes with the pruned scores set to zero.
3. The result is a plain `ViT` with per-layer `head_dim` and `mlp_dim` and `attn_scale` fixed
   to the original head dimension (pruning must not change the softmax temperature), saved and
   fine-tuned like any model.

Heads: channels are pruned individually inside each head (the paper's granularity) and never
move between heads (the community port's reshape regrouped them, mixing heads). Since one
layer's heads must share a width, the layer's physical head_dim is the largest number of
channels any of its heads keeps; heads that keep fewer are padded with zero channels, which
add nothing to QK^T or AV, so the function stays exact. `report` shows kept channels and the
physical widths (the padding is their difference).
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import functional as F
from tokensparse.backbone.vit import ViT, per_layer
from tokensparse.methods.vtp import ops


class VTPViT(ViT):
  """The backbone with importance scores in the 'scores' collection (see module docstring)."""
  collections: ClassVar[tuple[str, ...]] = ('params', 'scores')

  def setup(self):
    super().setup()
    score_vars = []
    for i in range(self.depth):
      head_dim = per_layer(self.head_dim, i) or self.width // self.num_heads
      attn = self.variable('scores', f'attn_{i}', jnp.ones, (self.num_heads, head_dim))
      mlp = self.variable('scores', f'mlp_{i}', jnp.ones, (per_layer(self.mlp_dim, i),))
      score_vars.append((attn, mlp))
    self.score_vars = tuple(score_vars)

  def __call__(self, images: jax.Array, train: bool = False):
    def attention_fn(i, carry):  # the scores of block i gate q, k and v alike
      s = self.score_vars[i][0].value
      return lambda q, k, v, **kw: F.dot_product_attention(
          *(ops.scale_channels(t, s) for t in (q, k, v)), **kw)

    def hidden_fn(i, carry):
      return functools.partial(ops.scale_channels, scores=self.score_vars[i][1].value)

    x, _ = self.run_blocks(self.embed(images, not train), not train,
                           attention_fn=attention_fn, hidden_fn=hidden_fn)
    return self.finish(x)


def keep_masks(scores: dict[str, Any], rate: float) -> dict[str, np.ndarray]:
  """Boolean keep masks, same tree as `scores`: the int(rate * total) channels of smallest |s|
  over all layers are dropped (ties broken by position, so the count is exact)."""
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'pruning rate={rate}: must be in [0, 1)')
  names = sorted(scores, key=lambda n: (int(n.split('_')[1]), n))
  flat = np.concatenate([np.abs(np.asarray(scores[n], np.float64)).ravel() for n in names])
  drop = np.argsort(flat, kind='stable')[:int(rate * flat.size)]
  keep = np.ones(flat.size, bool)
  keep[drop] = False
  out, start = {}, 0
  for n in names:
    size = int(np.prod(np.shape(scores[n])))
    out[n] = keep[start:start + size].reshape(np.shape(scores[n]))
    start += size
  return out


def masked_scores(scores: dict[str, Any], rate: float) -> dict[str, np.ndarray]:
  """The scores with the pruned channels set to zero (the model `prune` must reproduce)."""
  masks = keep_masks(scores, rate)
  return {n: np.where(masks[n], np.asarray(scores[n]), 0.0).astype(np.float32) for n in scores}


def _round_up(n: int, align: int) -> int:
  return -(-n // align) * align


def _prune_attention(p: dict, s: np.ndarray, keep: np.ndarray, align: int) -> tuple[dict, int]:
  """One block's attention params with scores folded and kept channels packed per head."""
  heads, original = s.shape
  width = min(_round_up(max(1, int(keep.sum(axis=1).max())), align), original)
  new = {name: {'kernel': np.zeros(np.shape(p[name]['kernel'])[:2] + (width,), np.float32),
                'bias': np.zeros((heads, width), np.float32)} for name in ('query', 'key', 'value')}
  out_k = np.zeros((heads, width, np.shape(p['out']['kernel'])[-1]), np.float32)
  for h in range(heads):
    idx = np.where(keep[h])[0]
    for name in ('query', 'key', 'value'):
      new[name]['kernel'][:, h, :len(idx)] = np.asarray(p[name]['kernel'])[:, h, idx] * s[h, idx]
      new[name]['bias'][h, :len(idx)] = np.asarray(p[name]['bias'])[h, idx] * s[h, idx]
    out_k[h, :len(idx)] = np.asarray(p['out']['kernel'])[h, idx]
  new['out'] = {'kernel': out_k, 'bias': np.asarray(p['out']['bias'], np.float32)}
  return new, width


def _prune_mlp(p: dict, s: np.ndarray, keep: np.ndarray, align: int) -> tuple[dict, int]:
  idx = np.where(keep)[0]
  fold = s[idx]
  # Pad with channels whose fc2 rows are zero (they add nothing): at least one, and up to a
  # multiple of `align`.
  pad = min(_round_up(max(len(idx), 1), align), len(s)) - len(idx)
  if pad:
    spare = np.setdiff1d(np.arange(len(s)), idx)[:pad]
    spare = np.concatenate([spare, np.zeros(pad - len(spare), int)])
    idx, fold = np.concatenate([idx, spare]), np.concatenate([fold, np.zeros(pad)])
  d0, d1 = p['Dense_0'], p['Dense_1']
  return {'Dense_0': {'kernel': np.asarray(d0['kernel'])[:, idx], 'bias': np.asarray(d0['bias'])[idx]},
          'Dense_1': {'kernel': np.asarray(d1['kernel'])[idx] * fold[:, None],
                      'bias': np.asarray(d1['bias'])}}, len(idx)


def prune(params: dict, scores: dict, rate: float, attn_scale: float | None = None,
          align: int = 1) -> tuple[dict, dict]:
  """-> (params of the physically smaller ViT, model config fields to set on the backbone:
  per-layer head_dim and mlp_dim, and attn_scale = the original head_dim ** -0.5 unless the
  scored model already had one). `align` rounds every physical width up to a multiple (zero
  channels, exact), for hardware that prefers round matrix sizes."""
  masks = keep_masks(scores, rate)
  depth = len([n for n in scores if n.startswith('attn_')])
  params = jax.tree.map(np.asarray, params)
  new = {k: v for k, v in params.items() if k != 'Transformer'}
  new['Transformer'] = dict(params['Transformer'])
  head_dims, mlp_dims = [], []
  for i in range(depth):
    name = f'encoderblock_{i}'
    block = dict(params['Transformer'][name])
    s_attn, s_mlp = (np.asarray(scores[f'{k}_{i}'], np.float32) for k in ('attn', 'mlp'))
    block['MultiHeadDotProductAttention_1'], hd = _prune_attention(
        block['MultiHeadDotProductAttention_1'], s_attn, masks[f'attn_{i}'], align)
    block['MlpBlock_3'], md = _prune_mlp(block['MlpBlock_3'], s_mlp, masks[f'mlp_{i}'], align)
    new['Transformer'][name] = block
    head_dims.append(hd)
    mlp_dims.append(md)
  original = np.shape(scores['attn_0'])[1]
  return new, {'head_dim': head_dims, 'mlp_dim': mlp_dims,
               'attn_scale': attn_scale if attn_scale is not None else float(original) ** -0.5}


def report(scores: dict, rate: float, pruned_config: dict) -> list[dict]:
  """Per layer: attention channels kept / total and the physical width (heads x head_dim),
  MLP channels kept / total."""
  masks = keep_masks(scores, rate)
  rows = []
  for i, (hd, md) in enumerate(zip(pruned_config['head_dim'], pruned_config['mlp_dim'])):
    a, m = masks[f'attn_{i}'], masks[f'mlp_{i}']
    rows.append({'block': i, 'attn_kept': int(a.sum()), 'attn_total': a.size,
                 'attn_physical': a.shape[0] * hd, 'mlp_kept': int(m.sum()),
                 'mlp_total': m.size, 'mlp_physical': md})
  return rows
