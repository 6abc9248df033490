"""DynamicViT's training objective: CE + ratio loss + KL to the frozen dense teacher + MSE of
the kept final tokens against the teacher's; the pooling baseline's CE + KL."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from tokensparse import backbone, losses, objectives

PARAM_PREFIXES = ('predictor_', 'static_scores_')  # what the dense teacher does not have


def keep_ratio_loss(masks, targets) -> jax.Array:
  """DynamicViT ratio loss: mean over stages and batch of (mean_i m_i - target_s)^2.

  masks: per stage [B, N] keep masks over the original patch positions; targets: the cumulative
  keep ratios (rho, rho^2, ...). -> per-example [B] (averaged over stages).
  """
  terms = [(m.mean(axis=1) - t) ** 2 for m, t in zip(masks, targets)]
  return sum(terms) / len(terms)


def kept_token_mse(student: jax.Array, teacher: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean squared error over kept tokens and channels (scalar; 0 when nothing is kept).

  student, teacher: [B, N, C] final normed patch tokens; mask: [B, N] kept at the end.
  """
  sq = ((student.astype(jnp.float32) - teacher.astype(jnp.float32)) ** 2).mean(-1)
  kept = mask.sum()
  return jnp.where(kept > 0, (sq * mask).sum() / jnp.maximum(kept, 1.0), 0.0)


def teacher_variables(config, params) -> dict[str, Any]:
  """{'teacher': the dense part of the freshly loaded params} (frozen in the train state)."""
  if not config.init_from.get('path'):
    raise ValueError(f'init_from.path is empty: {config.model.name} fine-tunes a dense '
                     'checkpoint, which is also its frozen teacher')
  return {'teacher': {k: v for k, v in params.items() if not k.startswith(PARAM_PREFIXES)}}


def with_teacher(config, terms: Callable, needed: bool = True) -> Callable:
  """A loss_fn that evaluates as plain classification and, in training, runs the student and
  the frozen dense teacher and returns terms(batch, logits, aux, t_logits, t_aux, ce). Not
  `needed` (every distillation weight 0): the teacher's forward is skipped, t_logits and t_aux
  are None."""
  teacher = backbone.ViT(**backbone.backbone_kwargs(config.model))
  smoothing = config.get('label_smoothing', 0.0)
  evaluate = objectives.classification_loss(config)

  def fn(model, params, batch, rng, train, frozen=None):
    if not train:
      return evaluate(model, params, batch, rng, train)
    logits, aux = model.apply({'params': params}, batch['image'], train=True,
                              rngs=objectives.rngs(rng, True, ('gumbel',)))
    t_logits, t_aux = jax.lax.stop_gradient(
        teacher.apply({'params': frozen['teacher']}, batch['image'])) if needed else (None, None)
    ce = losses.cross_entropy(logits, batch['label'], smoothing)
    loss, extra = terms(batch, logits, aux, t_logits, t_aux, ce)
    metrics = objectives.classification_metrics(logits, batch['label'], ce, jnp.ones_like(ce))
    metrics.update(extra)
    return loss, metrics

  return fn


def distilled_classification_loss(config, weights) -> Callable:
  """CE + distill_weight * KL(teacher || student), for students whose tokens differ from the
  teacher's (the pooling baseline); `weights` = config.loss.<method> with its defaults."""
  weight = weights.distill_weight

  def terms(batch, logits, aux, t_logits, t_aux, ce):
    if t_logits is None:
      return ce.mean(), {}
    kl = losses.kl_to_teacher(logits, t_logits)
    return (ce + weight * kl).mean(), {'kl': kl.sum()}

  return with_teacher(config, terms, needed=weight != 0)


def dynamic_vit_loss(config, fields, dv) -> Callable:
  """CE + ratio_weight * ratio loss + distill_weight * KL(teacher || student)
  + token_weight * MSE(kept final patch tokens, teacher's), as in DynamicViT's reference.
  `fields` = config.model.dynamic_vit, `dv` = config.loss.dynamic_vit (defaults filled)."""
  targets = [fields.keep_ratio ** (s + 1) for s in range(len(fields.prune_layers))]
  # Prefix tokens (cls, dist; none with classifier='gap') are never pruned nor distilled.
  p = backbone.num_prefix(backbone.backbone_kwargs(config.model))

  def terms(batch, logits, aux, t_logits, t_aux, ce):
    ratio = keep_ratio_loss(aux['masks'], targets)
    if t_logits is None:
      return (ce + dv.ratio_weight * ratio).mean(), {
          'ratio_loss': ratio.sum(), 'kept_fraction': aux['final_mask'].mean(1).sum()}
    kl = losses.kl_to_teacher(logits, t_logits)
    # The reference detaches the final mask here: token distillation must not steer the keep
    # decisions (only the attention masks and the ratio loss do).
    final_mask = jax.lax.stop_gradient(aux['final_mask'])
    token = kept_token_mse(aux['tokens'][:, p:], t_aux['tokens'][:, p:], final_mask)
    loss = (ce + dv.ratio_weight * ratio + dv.distill_weight * kl).mean() + dv.token_weight * token
    return loss, {'ratio_loss': ratio.sum(), 'kl': kl.sum(), 'token_mse': token * ce.shape[0],
                  'kept_fraction': aux['final_mask'].mean(1).sum()}

  return with_teacher(config, terms, needed=dv.distill_weight != 0 or dv.token_weight != 0)
