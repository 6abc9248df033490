"""Visual Transformer Pruning, VTP (Zhu, Tang, Han 2021): importance scores on attention and
MLP channels trained with an L1 penalty (`model.name='vtp'`, `config.vtp.l1_weight`), then
`python -m tokensparse.methods.vtp.prune` writes a physically smaller plain ViT work directory
that is fine-tuned like any checkpoint.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tokensparse import losses
from tokensparse.methods.base import Method, fail
from tokensparse.methods.vtp import ops
from tokensparse.methods.vtp.model import VTPViT


def vtp_loss(config) -> Callable:
  """CE + l1_weight * sum |s| over the importance scores (VTP's sparsity training). `params` is
  {'params': ..., 'scores': ...}; evaluation is plain classification with the scores applied."""
  from tokensparse.train import steps  # pylint: disable=g-import-not-at-top
  smoothing, weight = config.get('label_smoothing', 0.0), config.vtp.l1_weight

  def fn(model, params, batch, rng, train, frozen=None):
    del frozen
    logits, _ = model.apply(params, batch['image'], train=train, rngs=steps.rngs(rng, train))
    per_example = losses.cross_entropy(logits, batch['label'], smoothing if train else 0.0)
    mask = batch.get('mask', jnp.ones_like(per_example))
    metrics = steps.classification_metrics(logits, batch['label'], per_example, mask)
    l1 = ops.l1_penalty(params['scores'], weight)
    metrics['l1'] = l1 * mask.sum()
    metrics['mean_score'] = jnp.mean(jnp.concatenate(
        [jnp.abs(s).ravel() for s in jax.tree.leaves(params['scores'])])) * mask.sum()
    return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0) + l1, metrics

  return fn


class VTPMethod(Method):
  name = 'vtp'
  summary = 'learns channel importance with an L1 penalty, then prunes to a smaller ViT'
  model_class = VTPViT
  collections = ('params', 'scores')

  def validate(self, config, kw):
    l1 = config.get('vtp', {}).get('l1_weight', -1)
    if not l1 >= 0:
      fail('vtp.l1_weight', config.get('vtp', {}).get('l1_weight'),
           'must be set and >= 0 (the paper: 1e-4)')

  def loss_fn(self, config):
    return vtp_loss(config)


METHODS = (VTPMethod(),)
