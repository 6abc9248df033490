"""Optimizer: AdamW, warm-up + cosine schedule, clipping, per-parameter-group learning rates.

Groups come from `config.optimizer.lr_groups`: a list of `(regex, multiplier[, freeze_steps])`
matched in order against '/'-joined parameter paths (first match wins, default multiplier 1).
A group's multiplier scales its final update, which for AdamW is the same as scaling its
learning rate; `freeze_steps` (a step count, or 'warmup' for the warm-up length) holds it at 0
until then (DynamicViT freezes the backbone during warm-up); multiplier 0 freezes a group for
good (cls token, position embedding).
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util


def schedule(config, total_steps: int, warmup_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `optimizer.lr`, then cosine to `optimizer.min_lr`."""
  opt = config.optimizer
  if warmup_steps >= total_steps:
    return optax.linear_schedule(0.0, opt.lr, max(total_steps, 1))
  return optax.warmup_cosine_decay_schedule(0.0, opt.lr, warmup_steps, total_steps, opt.min_lr)


def path_labels(params, groups: list) -> Any:
  """A tree like `params` whose leaves are the index of the first matching group (or -1)."""
  flat = traverse_util.flatten_dict(params)
  labels = {}
  for path in flat:
    name = '/'.join(path)
    labels[path] = next((i for i, g in enumerate(groups) if re.search(g[0], name)), -1)
  return traverse_util.unflatten_dict(labels)


def decay_mask(params) -> Any:
  """Weight decay on kernels only: not on biases, norms, tokens or position embeddings."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({p: p[-1] == 'kernel' for p in flat})


class ScaleByGroupState(NamedTuple):
  count: jax.Array


def scale_by_group(labels, groups: list) -> optax.GradientTransformation:
  """Multiply each leaf's update by its group's multiplier (0 before its freeze_steps)."""

  def init(params):
    del params
    return ScaleByGroupState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params

    def scale(u, label):
      if label < 0:
        return u
      mult, freeze = groups[label][1], (groups[label][2] if len(groups[label]) > 2 else 0)
      factor = jnp.where(state.count < freeze, 0.0, mult)
      return u * factor.astype(u.dtype)

    return jax.tree.map(scale, updates, labels), ScaleByGroupState(state.count + 1)

  return optax.GradientTransformation(init, update)


def make(config, params, total_steps: int, warmup_steps: int):
  """(optax transformation, learning-rate schedule) for `config.optimizer`."""
  opt = config.optimizer
  lr = schedule(config, total_steps, warmup_steps)
  parts = []
  if opt.get('grad_clip_norm'):
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == 'adamw':
    parts.append(optax.adamw(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay,
                             mask=decay_mask(params)))
  elif opt.name == 'sgd':
    parts.append(optax.sgd(lr, momentum=opt.get('momentum') or None))
  else:
    raise ValueError(f'optimizer.name={opt.name!r}: expected adamw or sgd')
  groups = [tuple(g[:2]) + ((warmup_steps if g[2] == 'warmup' else int(g[2])),) if len(g) > 2
            else tuple(g) for g in (opt.get('lr_groups') or [])]
  if groups:
    parts.append(scale_by_group(path_labels(params, groups), groups))
  return optax.chain(*parts), lr
