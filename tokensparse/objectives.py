"""Training objectives every method builds on: the classification loss and its metric sums,
and the named RNG streams of a training forward pass.

A loss function has the signature the trainer calls (written per device, for `jax.pmap`):

    loss_fn(model, params, batch, rng, train, frozen) -> (mean loss, metric sums)

Metrics are (sum, count) pairs, summed across devices and divided only when logged, so padded
evaluation batches (batch['mask']) count every example exactly once. A method's own objective
(tokensparse/methods/<name>/) wraps or replaces `classification_loss`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tokensparse import losses


def rngs(rng: jax.Array, train: bool, streams: tuple[str, ...] = ()) -> dict[str, jax.Array]:
  """Named RNG streams for a training forward pass: 'dropout', plus the `streams` a method's
  model draws from (stream i from fold_in(rng, i + 1))."""
  if not train:
    return {}
  return {'dropout': rng, **{s: jax.random.fold_in(rng, i + 1) for i, s in enumerate(streams)}}


def classification_metrics(logits, labels, per_example_loss, mask) -> dict:
  """(sum, count) metrics: masked sums of loss and correct predictions, and the count."""
  return {'loss': (per_example_loss * mask).sum(),
          'correct': (losses.correct(logits, labels) * mask).sum(), 'count': mask.sum()}


def classification_loss(config) -> Callable:
  """loss_fn(model, params, batch, rng, train, frozen) -> (mean loss, metric sums)."""
  smoothing = config.get('label_smoothing', 0.0)

  def loss_fn(model, params, batch, rng, train, frozen=None):
    del frozen
    logits, _ = model.apply({'params': params}, batch['image'], train=train, rngs=rngs(rng, train))
    per_example = losses.cross_entropy(logits, batch['label'], smoothing if train else 0.0)
    mask = batch.get('mask', jnp.ones_like(per_example))
    metrics = classification_metrics(logits, batch['label'], per_example, mask)
    return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0), metrics

  return loss_fn
