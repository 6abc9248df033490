"""Loss terms. Each returns per-example values [B] so callers can mask and average."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0):
  """logits [B, K], integer labels [B] -> per-example cross-entropy [B] (fp32). Soft targets
  [B, K] (Mixup/CutMix; already smoothed by the pipeline) are used as they are."""
  if labels.ndim == logits.ndim:
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels.astype(jnp.float32))
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """[B, K], [B] -> 1.0 where the top-1 prediction is right, else 0.0; [B]. For soft targets
  [B, K] the right class is the one with the largest weight."""
  if labels.ndim == logits.ndim:
    labels = jnp.argmax(labels, -1)
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def kl_to_teacher(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """KL(teacher || student) per example [B]; its mean is PyTorch's kl_div(..., 'batchmean',
  log_target=True) on log-softmaxes, as in DynamicViT's distillation loss."""
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), -1)
  log_t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), -1)
  return (jnp.exp(log_t) * (log_t - log_s)).sum(-1)
