"""Per-device train and eval steps, written for `jax.pmap(..., axis_name='batch')`, around a
method's loss function (tokensparse.objectives says its signature).

Gradients are averaged across devices with `lax.pmean`; metrics are (sum, count) pairs summed
with `lax.psum` and divided only when logged, so padded eval batches count every example once.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

AXIS = 'batch'


@flax.struct.dataclass
class TrainState:
  """`frozen` holds variables the loss reads but the optimizer never touches (a teacher)."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  frozen: Any = None

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, rng: jax.Array,
             frozen: Any = None) -> 'TrainState':
    return cls(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params), rng=rng,
               frozen=frozen if frozen is not None else {})


def replicate(tree, devices=None):
  """Copy `tree` to each device with a leading device axis named like the pmap axis (another
  name gives the state a different sharding than the step's output: a recompile on step 2)."""
  return flax.jax_utils.replicate(tree, devices=devices, axis_name=AXIS)


def unreplicate(tree):
  """The first device's copy of a replicated tree, on the host (numpy): read from device 0's
  shard of each array, so no computation is dispatched per leaf (hundreds of small gathers
  queued on the devices can exhaust XLA's CPU launch threads), for any device count."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)


def host_metrics(metrics) -> dict:
  """Metric sums of a pmapped step (identical on every device after psum) as numpy values,
  from device 0's shard: this waits for the step to finish."""
  return {k: np.asarray(v.addressable_data(0))[0] for k, v in metrics.items()}


def add_metrics(sums: dict | None, metrics: dict) -> dict:
  """Running sums of host metric dicts (numpy, in the metrics' own float32)."""
  return dict(metrics) if sums is None else {k: sums[k] + metrics[k] for k in sums}


def train_step(state: TrainState, batch, *, model, tx, loss_fn, lr_fn):
  """One optimisation step on this device's shard; returns the new state and metric sums."""
  # Independent dropout/noise per device and step, reproducible from the state alone.
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS))

  def compute(params):
    return loss_fn(model, params, batch, rng, True, state.frozen)

  (loss, metrics), grads = jax.value_and_grad(compute, has_aux=True)(state.params)
  grads = lax.pmean(grads, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = lax.psum(metrics, AXIS)
  metrics['grad_norm'] = optax.global_norm(grads) * metrics['count']  # summed like the rest
  metrics['lr'] = lr_fn(state.step) * metrics['count']
  del loss
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(state: TrainState, batch, *, model, loss_fn):
  """Metric sums over this device's shard, summed over all devices (padding masked out)."""
  _, metrics = loss_fn(model, state.params, batch, jax.random.PRNGKey(0), False, state.frozen)
  return lax.psum(metrics, AXIS)


def summarize(metric_sums: dict) -> dict:
  """{'loss': sum, 'correct': sum, 'count': n, ...} -> means, with 'accuracy'."""
  count = max(float(metric_sums['count']), 1.0)
  out = {k: float(v) / count for k, v in metric_sums.items() if k not in ('count', 'correct')}
  if 'correct' in metric_sums:
    out['accuracy'] = float(metric_sums['correct']) / count
  out['count'] = float(metric_sums['count'])
  return out
