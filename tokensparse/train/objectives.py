"""Training objectives per model: `loss_fn(config)` and `frozen_variables(config, params)`.

A loss function has the signature used by `steps.train_step` / `steps.eval_step`:
    loss_fn(model, params, batch, rng, train, frozen) -> (mean loss, metric sums)
Evaluation (train=False) is plain classification for every model, in its inference mode.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from tokensparse import losses, models
from tokensparse.models.vit import ViT
from tokensparse.train import steps


def loss_fn(config) -> Callable:
  name = config.model.name
  if name == 'vit':
    return steps.classification_loss(config)
  if name == 'dynamic_vit':
    return dynamic_vit_loss(config)
  if name == 'pooled_vit':
    return distilled_classification_loss(config)
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


def distilled_classification_loss(config) -> Callable:
  """CE + distill_weight * KL(teacher || student), for students whose tokens differ from the
  teacher's (the pooling baseline)."""
  teacher = ViT(**models.backbone_kwargs(config.model))
  weight = config.dynamic_vit.distill_weight
  smoothing = config.get('label_smoothing', 0.0)
  evaluate = steps.classification_loss(config)

  def fn(model, params, batch, rng, train, frozen=None):
    if not train:
      return evaluate(model, params, batch, rng, train)
    logits, _ = model.apply({'params': params}, batch['image'], train=True,
                            rngs=steps.rngs(rng, True))
    t_logits = jax.lax.stop_gradient(teacher.apply({'params': frozen['teacher']},
                                                   batch['image'])[0])
    ce = losses.cross_entropy(logits, batch['label'], smoothing)
    kl = losses.kl_to_teacher(logits, t_logits)
    metrics = steps.classification_metrics(logits, batch['label'], ce, jnp.ones_like(ce))
    metrics['kl'] = kl.sum()
    return (ce + weight * kl).mean(), metrics

  return fn


def dynamic_vit_loss(config) -> Callable:
  """CE + ratio_weight * ratio loss + distill_weight * KL(teacher || student)
  + token_weight * MSE(kept final patch tokens, teacher's), as in DynamicViT's reference."""
  dv = config.dynamic_vit
  teacher = ViT(**models.backbone_kwargs(config.model))
  model_cfg = config.model
  targets = [model_cfg.keep_ratio ** (s + 1) for s in range(len(model_cfg.prune_layers))]
  smoothing = config.get('label_smoothing', 0.0)
  evaluate = steps.classification_loss(config)

  def fn(model, params, batch, rng, train, frozen=None):
    if not train:
      return evaluate(model, params, batch, rng, train)
    logits, aux = model.apply({'params': params}, batch['image'], train=True,
                              rngs=steps.rngs(rng, True))
    t_logits, t_aux = teacher.apply({'params': frozen['teacher']}, batch['image'])
    t_logits, t_tokens = jax.lax.stop_gradient((t_logits, t_aux['tokens']))
    p = teacher.num_prefix
    ce = losses.cross_entropy(logits, batch['label'], smoothing)
    ratio = losses.keep_ratio_loss(aux['masks'], targets)
    kl = losses.kl_to_teacher(logits, t_logits)
    token = losses.kept_token_mse(aux['tokens'][:, p:], t_tokens[:, p:], aux['final_mask'])
    per_example = ce + dv.ratio_weight * ratio + dv.distill_weight * kl
    loss = per_example.mean() + dv.token_weight * token
    mask = jnp.ones_like(ce)
    metrics = steps.classification_metrics(logits, batch['label'], ce, mask)
    n = mask.sum()
    metrics.update(ratio_loss=ratio.sum(), kl=kl.sum(), token_mse=token * n,
                   kept_fraction=aux['final_mask'].mean(1).sum())
    return loss, metrics

  return fn
