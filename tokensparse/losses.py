"""Loss terms. Each returns per-example values [B] so callers can mask and average."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0):
  """logits [B, K], integer labels [B] -> per-example cross-entropy [B] (fp32)."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """[B, K], [B] -> 1.0 where the top-1 prediction is right, else 0.0; [B]."""
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def keep_ratio_loss(masks, targets) -> jax.Array:
  """DynamicViT ratio loss: mean over stages and batch of (mean_i m_i - target_s)^2.

  masks: per stage [B, N] keep masks over the original patch positions; targets: the cumulative
  keep ratios (rho, rho^2, ...). -> per-example [B] (averaged over stages).
  """
  terms = [(m.mean(axis=1) - t) ** 2 for m, t in zip(masks, targets)]
  return sum(terms) / len(terms)


def kl_to_teacher(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """KL(teacher || student) per example [B]; its mean is PyTorch's kl_div(..., 'batchmean',
  log_target=True) on log-softmaxes, as in DynamicViT's distillation loss."""
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), -1)
  log_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), -1)
  return (jnp.exp(log_t) * (log_t - log_s)).sum(-1)


def kept_token_mse(student: jax.Array, teacher: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean squared error over kept tokens and channels (scalar; 0 when nothing is kept).

  student, teacher: [B, N, C] final normed patch tokens; mask: [B, N] kept at the end.
  """
  sq = ((student.astype(jnp.float32) - teacher.astype(jnp.float32)) ** 2).mean(-1)
  kept = mask.sum()
  return jnp.where(kept > 0, (sq * mask).sum() / jnp.maximum(kept, 1.0), 0.0)
