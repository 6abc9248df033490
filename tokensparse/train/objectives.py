"""Training objectives per model: `loss_fn(config)` and `frozen_variables(config, params)`.

A loss function has the signature used by `steps.train_step` / `steps.eval_step`:
    loss_fn(model, params, batch, rng, train, frozen) -> (mean loss, metric sums)
Evaluation (train=False) is plain classification for every model, in its inference mode.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from tokensparse import functional as F
from tokensparse import losses, models
from tokensparse.models.vit import ViT
from tokensparse.train import steps


def loss_fn(config) -> Callable:
  name = config.model.name
  if name in ('vit', 'token_learner'):
    return steps.classification_loss(config)
  if name == 'dynamic_vit':
    return dynamic_vit_loss(config)
  if name == 'pooled_vit':
    return distilled_classification_loss(config)
  if name == 'vtp':
    return vtp_loss(config)
  raise ValueError(f'model.name={name!r}: no training objective')


def frozen_variables(config, params) -> dict[str, Any]:
  """Variables the loss reads but never trains, taken from the freshly loaded params."""
  if config.model.name in ('dynamic_vit', 'pooled_vit'):
    if not config.init_from.get('path'):
      raise ValueError(f'init_from.path is empty: {config.model.name} fine-tunes a dense '
                       'checkpoint, which is also its frozen teacher')
    return {'teacher': {k: v for k, v in params.items()
                        if not k.startswith(('predictor_', 'static_scores_'))}}
  return {}


def _with_teacher(config, terms: Callable) -> Callable:
  """A loss_fn that evaluates as plain classification and, in training, runs the student and
  the frozen dense teacher and returns terms(batch, logits, aux, t_logits, t_aux, ce)."""
  teacher = ViT(**models.backbone_kwargs(config.model))
  smoothing = config.get('label_smoothing', 0.0)
  evaluate = steps.classification_loss(config)

  def fn(model, params, batch, rng, train, frozen=None):
    if not train:
      return evaluate(model, params, batch, rng, train)
    logits, aux = model.apply({'params': params}, batch['image'], train=True,
                              rngs=steps.rngs(rng, True))
    t_logits, t_aux = jax.lax.stop_gradient(
        teacher.apply({'params': frozen['teacher']}, batch['image']))
    ce = losses.cross_entropy(logits, batch['label'], smoothing)
    loss, extra = terms(batch, logits, aux, t_logits, t_aux, ce)
    metrics = steps.classification_metrics(logits, batch['label'], ce, jnp.ones_like(ce))
    metrics.update(extra)
    return loss, metrics

  return fn


def distilled_classification_loss(config) -> Callable:
  """CE + distill_weight * KL(teacher || student), for students whose tokens differ from the
  teacher's (the pooling baseline)."""
  weight = config.dynamic_vit.distill_weight

  def terms(batch, logits, aux, t_logits, t_aux, ce):
    kl = losses.kl_to_teacher(logits, t_logits)
    return (ce + weight * kl).mean(), {'kl': kl.sum()}

  return _with_teacher(config, terms)


def dynamic_vit_loss(config) -> Callable:
  """CE + ratio_weight * ratio loss + distill_weight * KL(teacher || student)
  + token_weight * MSE(kept final patch tokens, teacher's), as in DynamicViT's reference."""
  dv, m = config.dynamic_vit, config.model
  targets = [m.keep_ratio ** (s + 1) for s in range(len(m.prune_layers))]
  p = 2 if m.get('distilled') else 1  # prefix tokens (cls, dist) are never pruned

  def terms(batch, logits, aux, t_logits, t_aux, ce):
    ratio = losses.keep_ratio_loss(aux['masks'], targets)
    kl = losses.kl_to_teacher(logits, t_logits)
    # The reference detaches the final mask here: token distillation must not steer the keep
    # decisions (only the attention masks and the ratio loss do).
    final_mask = jax.lax.stop_gradient(aux['final_mask'])
    token = losses.kept_token_mse(aux['tokens'][:, p:], t_aux['tokens'][:, p:], final_mask)
    loss = (ce + dv.ratio_weight * ratio + dv.distill_weight * kl).mean() + dv.token_weight * token
    return loss, {'ratio_loss': ratio.sum(), 'kl': kl.sum(), 'token_mse': token * ce.shape[0],
                  'kept_fraction': aux['final_mask'].mean(1).sum()}

  return _with_teacher(config, terms)


def vtp_loss(config) -> Callable:
  """CE + l1_weight * sum |s| over the importance scores (VTP's sparsity training). `params` is
  {'params': ..., 'scores': ...}; evaluation is plain classification with the scores applied."""
  smoothing, weight = config.get('label_smoothing', 0.0), config.vtp.l1_weight

  def fn(model, params, batch, rng, train, frozen=None):
    del frozen
    logits, _ = model.apply(params, batch['image'], train=train, rngs=steps.rngs(rng, train))
    per_example = losses.cross_entropy(logits, batch['label'], smoothing if train else 0.0)
    mask = batch.get('mask', jnp.ones_like(per_example))
    metrics = steps.classification_metrics(logits, batch['label'], per_example, mask)
    l1 = F.l1_penalty(params['scores'], weight)
    metrics['l1'] = l1 * mask.sum()
    metrics['mean_score'] = jnp.mean(jnp.concatenate(
        [jnp.abs(s).ravel() for s in jax.tree.leaves(params['scores'])])) * mask.sum()
    return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0) + l1, metrics

  return fn
