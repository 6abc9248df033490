"""The training loop, top to bottom: config -> data -> model -> optimizer -> restore or init ->
pmapped steps with progress lines, evaluation, checkpoints and JSON-lines metrics.

Data-parallel in the Scenic way: the state is replicated on the local devices, batches are
[local_devices, per_device_batch, ...], gradients are averaged with `lax.pmean`. Each process
reads its own shard; with several processes (`jax.distributed.initialize`) only process 0
writes metrics, and orbax coordinates the checkpoint writes.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from tokensparse import backbone, checkpoint, methods
from tokensparse import configs as config_lib
from tokensparse import functional as F
from tokensparse.data import Data
from tokensparse.train import lock, optim, steps


def config_dict(config) -> dict:
  """A config as the plain dict a checkpoint stores (JSON types: tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def log(msg: str) -> None:
  if jax.process_index() == 0:
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


class MetricWriter:
  """Appends {'step', 'split', ...metrics} as JSON lines to <workdir>/metrics.jsonl."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = jax.process_index() == 0

  def write(self, step: int, split: str, metrics: dict) -> None:
    if self.enabled:
      with open(self.path, 'a') as f:
        f.write(json.dumps({'step': step, 'split': split, **metrics}) + '\n')


class Preemption:
  """SIGTERM (what schedulers send before taking a machine), SIGHUP (a closed terminal) and
  SIGINT (Ctrl-C) ask the loop to stop: it saves a checkpoint at the end of the current step
  and returns. A second SIGINT stops at once, without saving (KeyboardInterrupt). With several
  processes they agree on the stop step through jax's preemption sync point, so no process is
  left in a collective."""
  SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.signal_name = ''
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.requested = True
    self.signal_name = signal.Signals(signum).name
    log(f'{self.signal_name}: stopping after this step with a checkpoint '
        + ('(Ctrl-C again stops at once, without saving)' if signum == signal.SIGINT else ''))

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)

  def stop_at(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


def format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


def init_params(model, config, rng, channels: int):
  """Fresh trainable variables: the 'params' tree, or {collection: tree} for a method that
  trains several collections."""
  variables = jax.jit(model.init)(rng, backbone.dummy_input(config.model, channels))
  collections = methods.get(config.model.name).collections
  if len(collections) > 1:
    return {c: variables[c] for c in collections}
  return variables['params']


def load_pretrained(params, config, model) -> Any:
  """Replace `params` entries with those of `config.init_from.path` (a tokensparse work
  directory or a timm/DeiT/vit_jax file); prefixes in `init_from.skip` keep their init.
  Only the 'params' collection comes from a checkpoint (a VTP model's scores start fresh)."""
  if len(methods.get(config.model.name).collections) > 1:
    return {**params, 'params': load_pretrained_params(params['params'], config, model)}
  return load_pretrained_params(params, config, model)


def load_pretrained_params(params, config, model) -> Any:
  path = config_lib.resolve(config.init_from.path)
  skip = tuple(config.init_from.get('skip') or ())
  try:
    _, variables, info = checkpoint.load_variables(path, config, skip=skip)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'init_from.path={path!r}: {e}') from None
  flat = traverse_util.flatten_dict(params)
  new = traverse_util.flatten_dict(variables['params'])
  problems = []
  for key, value in new.items():
    name = '/'.join(key)
    if any(name.startswith(s) for s in skip):
      continue
    if key not in flat:
      problems.append(f'{name} is not a parameter of this model')
      continue
    if key == ('Transformer', 'posembed_input', 'pos_embedding') and \
        flat[key].shape != np.shape(value):
      value = F.resample_posemb(np.asarray(value), model.num_prefix, model.grid)
    if key == ('embedding', 'kernel') and np.ndim(value) + 1 == flat[key].ndim:
      value = F.inflate_kernel(np.asarray(value), flat[key].shape[0])   # image -> tubelet
    if flat[key].shape != np.shape(value):
      hint = ' (set data.to_rgb=True for an RGB checkpoint)' if name == 'embedding/kernel' else ''
      problems.append(f'{name}: checkpoint {np.shape(value)}, model {flat[key].shape}{hint}')
    else:
      flat[key] = np.asarray(value, flat[key].dtype)
  if problems:
    raise ValueError(f'init_from.path={path!r} does not fit the model:\n  - ' +
                     '\n  - '.join(problems))
  log(f'initialised from {path} ({info["format"]}; skipped: {list(skip) or "nothing"})')
  if 'mean' in info and tuple(info['mean']) != tuple(config.data.mean)[:3]:
    log(f'note: the checkpoint expects mean {info["mean"]} / std {info["std"]}, the data config '
        f'normalises with mean {tuple(config.data.mean)} / std {tuple(config.data.std)}')
  return traverse_util.unflatten_dict(flat)


def evaluate(p_eval, rstate, data: Data) -> dict:
  """Metric means over every eval example. One batch runs while the next is dispatched: the
  host never queues more (see `_train`)."""
  sums, pending = None, None
  for batch in data.eval_iter():
    m = p_eval(rstate, batch)
    if pending is not None:
      sums = steps.add_metrics(sums, steps.host_metrics(pending))
    pending = m
  if pending is not None:
    sums = steps.add_metrics(sums, steps.host_metrics(pending))
  return steps.summarize(sums)


def adopt_model_fields(config):
  """`config` with the model fields named in `init_from.model_fields` taken from the saved
  config of the `init_from.path` work directory (unchanged when none are named)."""
  fields = tuple(config.get('init_from', {}).get('model_fields') or ())
  if not fields:
    return config
  path = config_lib.resolve(config.init_from.path)
  if not os.path.isdir(path):
    raise ValueError(f'init_from.model_fields={fields}: init_from.path={path!r} must be a '
                     'tokensparse work directory')
  try:
    saved = checkpoint.load_config(path)['model']
  except FileNotFoundError as e:
    raise FileNotFoundError(f'init_from.path={path!r}: no checkpoint in that work directory '
                            f'to take init_from.model_fields={fields} from') from e
  d = config.to_dict()  # rebuilt, not assigned: a per-layer list replaces an int-typed width
  for field in fields:
    if field not in saved:
      raise ValueError(f'init_from.model_fields: {field!r} is not a model field of {path}')
    d['model'][field] = saved[field]
  return ml_collections.ConfigDict(d)


# Fields a resumed run may change freely: they change neither what is trained nor how.
HARMLESS = ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
            'eval_batch_size', 'data.threads', 'data.data_dir', 'data.source_dir',
            'data.eval_split', 'init_from')


def config_changes(saved: dict, config: dict, prefix: str = '') -> dict[str, tuple]:
  """{'a.b': (old, new)} for every field of both config dicts that differs, except the
  HARMLESS ones (a field only one has came or went with a new version of tokensparse)."""
  out = {}
  for key in sorted(set(saved) & set(config)):
    name = f'{prefix}{key}'
    if any(name == h or name.startswith(h + '.') for h in HARMLESS):
      continue
    old, new = saved.get(key), config.get(key)
    if isinstance(old, dict) and isinstance(new, dict):
      out.update(config_changes(old, new, name + '.'))
    elif old != new and not (isinstance(old, (list, tuple)) and isinstance(new, (list, tuple))
                             and list(old) == list(new)):
      out[name] = (old, new)
  return out


def check_writable(workdir: str) -> None:
  """OSError in one line when the work directory cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise OSError(f'--workdir {workdir}: cannot be written ({e.strerror or e})') from None


def train_and_evaluate(config, workdir: str, allow_config_change: bool = False) -> dict:
  """Train `config` in `workdir`, resuming from its latest checkpoint that verifies; returns
  the final evaluation. A resumed run whose config changes what is trained or how (see
  HARMLESS for what it may change) is refused unless `allow_config_change`, which records the
  change in metrics.jsonl."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir}: is a file, not a directory')
  config = config_lib.complete(adopt_model_fields(config))
  config_lib.validate(config)
  local_devices = jax.local_device_count()
  log(f'{jax.device_count()} devices ({jax.devices()[0].platform}), {local_devices} local, '
      f'process {jax.process_index()} of {jax.process_count()}')

  data = Data(config, local_devices=local_devices, process_index=jax.process_index(),
              process_count=jax.process_count())
  meta = data.meta
  if meta.num_classes != config.model.num_classes:
    raise ValueError(f'model.num_classes={config.model.num_classes}, but {meta.name} has '
                     f'{meta.num_classes} classes')
  steps_per_epoch = max(meta.num_train // config.batch_size, 1)
  total_steps = config.get('total_steps') or int(math.ceil(config.num_epochs * steps_per_epoch))
  warmup_steps = config.get('warmup_steps') or int(config.warmup_epochs * steps_per_epoch)

  method = methods.get(config.model.name)
  model = method.build(config.model)
  rng = jax.random.PRNGKey(config.seed)
  channels = 3 if config.data.get('to_rgb') else meta.image_shape[-1]
  params = init_params(model, config, rng, channels)
  if config.get('init_from') and config.init_from.get('path'):
    params = load_pretrained(params, config, model)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  tx, lr_fn = optim.make(config, params, total_steps, warmup_steps)
  state = steps.TrainState.create(params, tx, jax.random.fold_in(rng, 1),
                                  frozen=method.frozen_variables(config, params))

  check_writable(workdir)  # only now: a bad config or dataset writes nothing
  with contextlib.ExitStack() as held:
    if jax.process_index() == 0:  # one lock per run; the other processes belong to it
      note = held.enter_context(lock.WorkdirLock(workdir)).takeover_note()
      if note:
        log(note)
    mngr = checkpoint.manager(workdir, config.get('keep_checkpoints', 3))
    writer = MetricWriter(workdir)
    if mngr.latest_step() is not None:
      # The configs first (the newest readable one): a changed field is named as a field, a
      # changed architecture included, before any state is read.
      try:
        changes = config_changes(checkpoint.load_config(workdir), config_dict(config))
      except FileNotFoundError:  # no config reads back: newest_valid below says so
        changes = {}
      listed = '; '.join(f'{k}: {old!r} -> {new!r}' for k, (old, new) in changes.items())
      if changes and not allow_config_change:
        raise ValueError(f'--workdir {workdir} was trained with another config: {listed}. '
                         'Rerun with the saved config (the fields as before), use a new '
                         '--workdir, or pass --allow_config_change to change them and record '
                         'it in metrics.jsonl')
      found = checkpoint.newest_valid(mngr, state, os.path.join(workdir, 'corrupt_checkpoints'))
      if found is None:
        raise FileNotFoundError(f'--workdir {workdir}: none of its checkpoints reads back intact '
                                '(they are in corrupt_checkpoints/); use a new --workdir')
      state, step = found
      if changes:
        writer.write(step, 'config_change', {k: {'old': old, 'new': new}
                                             for k, (old, new) in changes.items()})
        log(f'config changed on resume (recorded in metrics.jsonl): {listed}')
      log(f'resumed from checkpoint at step {step} in {workdir}')
    start = int(state.step)
    log(f'{meta.name}: {meta.num_train} train / {meta.num_eval} eval examples, '
        f'{meta.num_classes} classes; model {config.model.name} with {n_params:,} parameters; '
        f'{total_steps} steps of batch {config.batch_size} ({steps_per_epoch} per epoch)')

    loss_fn = method.loss_fn(config)
    p_train = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx, loss_fn=loss_fn,
                                         lr_fn=lr_fn), axis_name=steps.AXIS, donate_argnums=(0,))
    p_eval = jax.pmap(functools.partial(steps.eval_step, model=model, loss_fn=loss_fn),
                      axis_name=steps.AXIS)
    rstate = steps.replicate(state)
    batches = data.train_iter(start)
    with Preemption() as preemption:
      return _train(config, workdir, state=rstate, start=start, total_steps=total_steps,
                    batches=batches, p_train=p_train, p_eval=p_eval, data=data, mngr=mngr,
                    writer=writer, preemption=preemption)


def diverged(config, workdir, mngr, step: int, loss) -> None:
  """Raise the one-line FloatingPointError of a divergence at `step` (nothing of it saved)."""
  last = mngr.latest_step()
  raise FloatingPointError(
      f'training diverged: the loss is {loss} at step {step}; stopped without saving it. ' +
      (f'The last checkpoint, step {last} in {workdir}, is finite: a rerun resumes from it '
       f'(lower optimizer.lr={config.optimizer.lr:g} or clip gradients with '
       'optimizer.grad_clip_norm)' if last is not None else
       f'No checkpoint had been saved yet in {workdir}'))


def _train(config, workdir, *, state, start, total_steps, batches, p_train, p_eval, data, mngr,
           writer, preemption) -> dict:
  """The step loop of `train_and_evaluate` (state replicated over the local devices)."""
  rstate = state
  log_every, eval_every = config.log_every_steps, config.get('eval_every_steps') or 0
  ckpt_every = config.get('checkpoint_every_steps') or 0
  # Throughput counts training only: time spent evaluating and saving is subtracted.
  sums, t_last, seen, paused, t_start, result = None, time.time(), 0, 0.0, time.time(), {}
  # The host runs one step ahead at most: it reads a step's metrics right after dispatching the
  # next one. With more in flight, XLA's CPU client can deadlock (each emulated device's queued
  # launches wait for threads that its peers hold inside a cross-device all-reduce).
  # Every step's loss is checked as it is read: the first non-finite one stops the run before
  # anything after it is saved (checkpoints hold finite states only).
  pending = None

  def read(pending, sums):
    if pending is None:
      return sums
    at, m = pending
    m = steps.host_metrics(m)
    loss = float(m['loss']) / max(float(m['count']), 1.0)
    if not np.isfinite(loss):
      diverged(config, workdir, mngr, at, loss)
    return steps.add_metrics(sums, m)

  for step in range(start + 1, total_steps + 1):
    rstate, m = p_train(rstate, next(batches))
    sums = read(pending, sums)
    pending = (step, m)
    seen += config.batch_size
    if step == start + 1:  # keep compilation out of the images/s figure
      jax.block_until_ready(m)
      log(f'compiled and ran the first step in {time.time() - t_last:.1f}s')
      t_last, seen = time.time(), 0
    if step % log_every == 0 or step == total_steps:
      sums, pending = read(pending, sums), None
      train = steps.summarize(sums)
      now = time.time()
      ips = seen / max(now - t_last - paused, 1e-9) if seen else float('nan')  # nan: step 1 only
      eta = (total_steps - step) * config.batch_size / ips if seen else 0.0
      writer.write(step, 'train', {**train, 'images_per_sec': ips})
      log(f'step {step}/{total_steps} | loss {train["loss"]:.4f} | acc '
          f'{100 * train["accuracy"]:.2f}% | lr {train["lr"]:.2e} | '
          + (f'{ips:.0f} img/s' if seen else 'img/s after the first step') + ' | '
          f'ETA {format_eta(eta)}')
      sums, t_last, seen, paused = None, now, 0, 0.0
    if (eval_every and step % eval_every == 0) or step == total_steps:
      t_pause = time.time()
      result = evaluate(p_eval, rstate, data)
      writer.write(step, 'eval', result)
      log(f'eval at step {step}: accuracy {100 * result["accuracy"]:.2f}% loss '
          f'{result["loss"]:.4f} ({int(result["count"])} examples)')
      paused += time.time() - t_pause
    stop = preemption.stop_at(step)
    if (ckpt_every and step % ckpt_every == 0) or step == total_steps or stop:
      t_pause = time.time()
      sums, pending = read(pending, sums), None     # this step's loss is finite
      host = steps.unreplicate(rstate)
      bad = checkpoint.nonfinite(host.params)
      if bad:
        diverged(config, workdir, mngr, step, f'finite, but {bad} is not')
      checkpoint.save(mngr, step, host, config, methods.get(config.model.name).collections)
      paused += time.time() - t_pause
    if stop and step < total_steps:
      mngr.close()
      log(f'preempted ({preemption.signal_name}): saved the checkpoint of step {step} in '
          f'{workdir}; run the same command again to resume')
      return {'preempted': True, 'step': step}
  if start >= total_steps:
    log(f'nothing to do: the checkpoint in {workdir} is already at step {start}')
    result = evaluate(p_eval, rstate, data)
  mngr.close()
  log(f'done in {format_eta(time.time() - t_start)}: eval accuracy '
      f'{100 * result.get("accuracy", float("nan")):.2f}%')
  return result
