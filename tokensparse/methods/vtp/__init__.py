"""Visual Transformer Pruning, VTP (Zhu, Tang, Han 2021): importance scores on attention and
MLP channels trained with an L1 penalty (`model.name='vtp'`, weight `loss.vtp.l1_weight`),
then `python -m tokensparse.methods.vtp.prune` writes a physically smaller plain ViT work
directory that is fine-tuned like any checkpoint.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tokensparse import losses, objectives
from tokensparse.fields import fail
from tokensparse.methods.base import Method, Variant
from tokensparse.methods.vtp import ops
from tokensparse.methods.vtp.model import VTPViT


def vtp_loss(config, l1_weight: float) -> Callable:
  """CE + l1_weight * sum |s| over the importance scores (VTP's sparsity training). `params` is
  {'params': ..., 'scores': ...}; evaluation is plain classification with the scores applied."""
  smoothing = config.get('label_smoothing', 0.0)

  def fn(model, params, batch, rng, train, frozen=None):
    del frozen
    logits, _ = model.apply(params, batch['image'], train=train,
                            rngs=objectives.rngs(rng, train))
    per_example = losses.cross_entropy(logits, batch['label'], smoothing if train else 0.0)
    mask = batch.get('mask', jnp.ones_like(per_example))
    metrics = objectives.classification_metrics(logits, batch['label'], per_example, mask)
    l1 = ops.l1_penalty(params['scores'], l1_weight)
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
  legacy_fields = {'vtp.l1_weight': 'loss.vtp.l1_weight'}

  def loss_defaults(self):
    return ml_collections.ConfigDict(dict(l1_weight=1e-4))   # the paper's lambda

  def validate(self, config, kw):
    l1 = self.loss_fields(config).l1_weight
    if not (isinstance(l1, (int, float)) and l1 >= 0):
      fail('loss.vtp.l1_weight', l1, 'must be >= 0 (the paper: 1e-4)')

  def loss_fn(self, config):
    return vtp_loss(config, self.loss_fields(config).l1_weight)

  def variants(self):
    return (Variant('vtp', 'VTP', None),)  # sparsity training, pruning, fine-tuning

  def budget_knobs(self, kw):
    """Pruning rates (of the scored channels); the pruning tool applies them, and the pruned
    widths (so the MACs) follow from the learned scores."""
    return [dict(rate=float(r)) for r in np.linspace(0.02, 0.95, 94)]


METHODS = (VTPMethod(),)
