"""Eventful Transformer exactness on ViT-B/16 at 224 px (fp32): the largest differences.

    python benchmarks/eventful_exactness.py             # 2 clips x 6 frames, ~4 min on 2 cores

- every variant with r = N (every token recomputed every frame) against the dense per-frame
  model, on every frame;
- the threshold policy with h = 0 (capacity N, validity-masked, batch 2) against dense: exact
  for the token-wise and sparse-QK variants, since a token with zero error has exactly its old
  input; the full variant is not expected to match, because a skipped key's attention column
  still changes through the softmax normalisation while delta AV keeps its reference;
- the delta attention-value state against its oracle A_ref @ V_buf, and the query-key state
  against q_buf k_buf^T, in every block after every frame of the full variant at r = N/4.

The clips are those of `benchmarks/eventful.py` (a static background, a moving square; the
second clip mirrored). Random weights: exactness does not depend on them.
"""
import argparse

from common import git_revision, table, write_section
from eventful import make_clip

import jax
import jax.numpy as jnp

from tokensparse import functional as F
from tokensparse.methods.eventful.model import VARIANTS, EventfulViT
from tokensparse.backbone.vit import ViT, parse_variant


def frame_logits(model, variables, clip):
  """Per-frame logits [T, B, classes] through init_state + jitted step (and the states)."""
  init = jax.jit(lambda f: model.apply(variables, f, method=EventfulViT.init_state))
  step = jax.jit(lambda s, f: model.apply(variables, s, f, method=EventfulViT.step))
  state, logits = init(clip[0])
  out, states = [logits], []
  for frame in clip[1:]:
    state, logits = step(state, frame)
    out.append(logits)
    states.append(state)
  return jnp.stack(out), states


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--variant', default='B/16')
  parser.add_argument('--frames', type=int, default=6)
  args = parser.parse_args()
  kw = dict(num_classes=1000, image_size=224, **parse_variant(args.variant))
  clip = make_clip(args.frames)
  clip = jnp.concatenate([clip, clip[:, :, :, ::-1]], axis=1)          # [T, 2, H, W, C]
  dense = ViT(**kw)
  variables = jax.jit(dense.init)(jax.random.PRNGKey(0), clip[0])
  dense_fn = jax.jit(lambda f: dense.apply(variables, f)[0])
  want = jnp.stack([dense_fn(f) for f in clip])
  n = dense.num_prefix + dense.num_patches
  scale = float(jnp.abs(want).max())
  rows = []
  # (name, model, whether it should equal dense)
  models = [(f'{v}, r = N = {n}', EventfulViT(**kw, capacity=n, variant=v), True)
            for v in VARIANTS]
  models += [(f'{v}, threshold h = 0 (capacity N)',
              EventfulViT(**kw, capacity=n, variant=v, threshold=0.0), v != 'full')
             for v in VARIANTS]
  for name, model, exact in models:
    got, _ = frame_logits(model, variables, clip)
    err = float(jnp.abs(got - want).max())
    if exact:
      verdict = 'yes' if err <= 1e-5 else 'NO'
    else:
      verdict = 'not expected: skipped keys keep stale attention columns (delta AV)'
    rows.append([name, 'logits vs the dense model, every frame', f'{err:.1e}', verdict])
    print(rows[-1], flush=True)
  model = EventfulViT(**kw, capacity=n // 4, variant='full')
  _, states = frame_logits(model, variables, clip)
  softmax_scale = (kw['width'] // kw['num_heads']) ** -0.5
  av_err = qk_err = 0.0
  for state in states:
    for st in state.blocks:   # attn_ref is stored key-major: [B, H, keys, queries]
      av_err = max(av_err, float(jnp.abs(
          st.av - jnp.einsum('bhkq,bhkd->bhqd', st.attn_ref, st.v)).max()))
      qk_err = max(qk_err, float(jnp.abs(
          st.logits - F.head_logits(st.q, st.k, softmax_scale)).max()))
  for what, err in (('A V state vs A_ref @ V_buf', av_err), ('QK state vs q_buf k_buf^T', qk_err)):
    rows.append([f'full, r = {n // 4}', what + ', every block and frame', f'{err:.1e}',
                 'yes' if err <= 1e-5 else 'NO'])
    print(rows[-1], flush=True)
  body = (f'## Eventful Transformer exactness ({args.variant}, 224 px, fp32, 2 clips x '
          f'{args.frames} frames)\n\n'
          f'`python benchmarks/eventful_exactness.py` at {git_revision()}: largest absolute '
          f'difference (the dense logits reach {scale:.2f}); tolerance 1e-5.\n\n' +
          table(['Eventful model', 'compared', 'max |difference|', 'within 1e-5'], rows))
  write_section(f'eventful_exactness_{args.variant.replace("/", "")}', body)


if __name__ == '__main__':
  main()
