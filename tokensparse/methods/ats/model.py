"""ATS on the shared backbone: in each block of `ats_layers` the attention answers only the
queries of the tokens that adaptive token sampling draws (ops.py), so the attention-value
product, the output projection, the MLP and every later block run on at most K tokens. The
sampled count adapts to the image; the shapes stay static: unused slots are padding, whose
q, k, v are zeroed and which are hidden as keys in every later block (as the reference's
`policy`). No new parameters: any checkpoint with a class token runs as is.

aux: 'kept_indices' per ATS block, the original patch positions of its sampled tokens [B, K-p]
(-1 for padding), and 'kept_count' per ATS block, the sampled tokens per image [B].
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from tokensparse import functional as F
from tokensparse.backbone.vit import ViT
from tokensparse.methods.ats import ops


class ATSViT(ViT):
  """The backbone with adaptive token sampling (see the module docstring)."""
  ats_layers: Sequence[int] = ()
  num_tokens: Sequence[int] = ()   # K per ATS block: K tokens leave it (prefix included),
  #                                  K - prefix of them sampled

  def tokens_out(self) -> list[int]:
    """Tokens leaving each block (all of them enter the next one)."""
    n, out = self.num_prefix + self.frames * self.num_patches, []
    for i in range(self.depth):
      if i in self.ats_layers:
        n = self.num_tokens[list(self.ats_layers).index(i)]
      out.append(n)
    return out

  def __call__(self, images: jax.Array, train: bool = False):
    x = self.embed(images, not train)
    b, n = x.shape[:2]
    p = self.num_prefix
    aux = {'kept_indices': [], 'kept_count': []}
    # carry: (valid tokens [B, N] or None before the first ATS block, original positions of the
    # patch tokens now present [B, N - p])
    carry = (None, jnp.broadcast_to(jnp.arange(n - p), (b, n - p)))

    def weights(q, k, v, valid, scale):
      """Attention weights [B, H, N, N] with padding's q, k, v zeroed and padding hidden as
      keys; and the zeroed v."""
      m = valid[:, :, None, None].astype(q.dtype)
      q, k, v = q * m, k * m, v * m
      return ops.masked_softmax(F.attention_logits(q, k, scale), valid).astype(q.dtype), v

    def masked(valid):
      def fn(q, k, v, *, scale, dropout):
        w, v = weights(q, k, v, valid, scale)
        return F.attend(dropout(w), v), {'weights': w}
      return fn

    def sampling(valid, samples):
      def fn(q, k, v, *, scale, dropout):
        w, v = weights(q, k, v, valid, scale)
        picked, keep = ops.sample(ops.significance(w, v, valid, p), valid[:, p:], samples)
        rows = jnp.concatenate([jnp.broadcast_to(jnp.arange(p), (b, p)), picked + p], axis=1)
        w_rows = jnp.take_along_axis(w, rows[:, None, :, None], axis=2)      # [B, H, K, N]
        return F.attend(dropout(w_rows), v), {'weights': w, 'rows': rows, 'picked': picked,
                                               'keep': keep}
      return fn

    def attention_fn(i, carry):
      valid, _ = carry
      if i in self.ats_layers:
        return sampling(valid if valid is not None else jnp.ones((b, n), bool),
                        self.num_tokens[list(self.ats_layers).index(i)] - p)
      return masked(valid) if valid is not None else None

    def after_attention(i, x, info, carry):
      if i not in self.ats_layers:
        return x, carry
      _, positions = carry
      positions = F.gather_tokens(positions, info['picked'])
      aux['kept_indices'].append(jnp.where(info['keep'], positions, -1))
      aux['kept_count'].append(info['keep'].sum(axis=-1))
      valid = jnp.concatenate([jnp.ones((b, p), bool), info['keep']], axis=1)
      return x, (valid, positions)

    x, _ = self.run_blocks(x, not train, carry, attention_fn=attention_fn,
                           after_attention=after_attention)
    return self.finish(x, aux)
