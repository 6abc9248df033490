"""Training and evaluation of a detection config (configs/vitdet/), Scenic-style: a pmapped
train step (tokensparse.train.steps) over the local devices, AdamW with warm-up and cosine
decay, checkpoints that resume, the work-directory lock. `train.py` hands a config with a
`detector` group here:

    python train.py --config configs/vitdet/fashion_mnist_detection.py --workdir runs/vitdet

Training draws single frames (and their boxes) from the train clips, flipped at random; the
evaluation runs the dense detector on every frame of the first `data.eval_clips` test clips
and reports COCO-style mAP and mAP50 (detection/metrics.py). Into --workdir go checkpoints/,
metrics.jsonl and config.json, as for every tokensparse run.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import checkpoint, detection
from tokensparse.data import fashion_mnist, fashion_mnist_detection
from tokensparse.detection import fcos, metrics
from tokensparse.train import lock, optim, steps
from tokensparse.train.loop import MetricWriter, check_writable, config_changes, config_dict, \
    format_eta, log


def load_data(config, split: str, limit: int | None = None) -> dict:
  d = config.data
  if d.name != 'fashion_mnist_detection':
    raise ValueError(f"data.name={d.name!r}: detection reads 'fashion_mnist_detection'")
  return fashion_mnist_detection.load(split, limit, d.config, d.data_dir,
                                      d.source_dir or fashion_mnist.DEFAULT_SOURCE_DIR)


def loss_fn(config, cells):
  """A loss function of the train-step signature: (model, params, batch, rng, train, frozen)
  -> (mean loss, metric sums)."""
  points, stride, ranges = (jnp.asarray(a) for a in cells)

  def fn(model, params, batch, rng, train, frozen=None):
    del rng, frozen
    images = detection.normalize(batch['image'], config.data.mean, config.data.std)
    out = model.apply({'params': params}, images, train)
    parts = fcos.losses(out, points, stride, ranges, batch, config.detector.center_radius)
    loss = parts['cls'] + parts['box'] + parts['centerness']
    n = jnp.asarray(images.shape[0], jnp.float32)
    return loss, {'loss': loss * n, 'count': n, **{k: v * n for k, v in parts.items()}}
  return fn


def frames_of(clips: dict) -> dict:
  """Clips {'video' [n, T, ...], 'boxes' [n, T, G, 4], ...} -> frames [n*T, ...]."""
  flat = lambda a: a.reshape(-1, *a.shape[2:])
  return {'image': flat(clips['video']), 'boxes': flat(clips['boxes']),
          'labels': flat(clips['labels']), 'valid': flat(clips['valid'])}


def batches(frames: dict, batch: int, devices: int, rng: np.random.Generator, flip: bool):
  """Endless random batches of frames, [devices, batch / devices, ...], flipped at random."""
  n, width = len(frames['image']), frames['image'].shape[2]
  while True:
    idx = rng.integers(0, n, batch)
    out = {k: v[idx].copy() for k, v in frames.items()}
    if flip:
      f = rng.random(batch) < 0.5
      out['image'][f] = out['image'][f][:, :, ::-1]
      b = out['boxes'][f]
      out['boxes'][f] = np.stack([width - b[..., 2], b[..., 1], width - b[..., 0], b[..., 3]], -1)
    yield {k: v.reshape(devices, batch // devices, *v.shape[1:]) for k, v in out.items()}


def detect_fn(model, config):
  """jit: (variables, uint8 frames [B, H, W, C]) -> detections (fcos.decode)."""
  points = jnp.asarray(model.cells()[0])
  d = config.detector

  def fn(variables, frames):
    out = model.apply(variables, detection.normalize(frames, config.data.mean, config.data.std))
    return fcos.decode(out, points, max_candidates=d.max_candidates,
                       max_detections=d.max_detections, score_threshold=d.score_threshold,
                       iou=d.nms_iou)
  return jax.jit(fn)


def as_lists(dets: dict, frames: dict) -> tuple[list, list]:
  """Batched detections and ground truth (numpy) -> per-image dicts for metrics.evaluate."""
  det, gt = [], []
  for i in range(len(frames['boxes'])):
    v = np.asarray(dets['valid'][i])
    det.append({k: np.asarray(dets[k][i])[v] for k in ('boxes', 'scores', 'classes')})
    g = frames['valid'][i]
    gt.append({'boxes': frames['boxes'][i][g], 'classes': frames['labels'][i][g]})
  return det, gt


def evaluate_frames(run, variables, frames: dict, num_classes: int, batch: int = 64) -> dict:
  """COCO-style mAP of a detection function `run(variables, images)` on frames."""
  dets = []
  for s in range(0, len(frames['image']), batch):
    dets.append(jax.device_get(run(variables, frames['image'][s:s + batch])))
  dets = {k: np.concatenate([d[k] for d in dets]) for k in dets[0]}
  return metrics.evaluate(*as_lists(dets, frames), num_classes)


def train_and_evaluate(config, workdir: str, allow_config_change: bool = False) -> dict:
  """Train the dense detector of `config` in `workdir` (resuming), evaluate mAP; -> the last
  evaluation {'mAP', 'mAP50', ...}."""
  kw = detection.validate(config)
  model = detection.build(config)
  devices = jax.local_device_count()
  if config.batch_size % devices:
    raise ValueError(f'batch_size={config.batch_size} is not divisible by the {devices} '
                     'local devices')
  train_frames = frames_of(load_data(config, 'train'))
  test_frames = frames_of(load_data(config, 'test', config.data.eval_clips))
  rng = jax.random.PRNGKey(config.seed)  # a raw key: checkpoints store it as an array
  size, channels = kw['image_size'], train_frames['image'].shape[-1]
  if train_frames['image'].shape[1] != size:
    raise ValueError(f'model.image_size={size}: the {config.data.name}/{config.data.config} '
                     f'frames are {train_frames["image"].shape[1]} px')
  params = jax.jit(model.init)(rng, jnp.zeros((1, size, size, channels)))['params']
  total = config.num_steps
  tx, lr_fn = optim.make(config, params, total, config.warmup_steps)
  state = steps.TrainState.create(params, tx, jax.random.fold_in(rng, 1))
  cells = model.cells()
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  check_writable(workdir)
  with contextlib.ExitStack() as held:
    note = held.enter_context(lock.WorkdirLock(workdir)).takeover_note()
    if note:
      log(note)
    mngr = checkpoint.manager(workdir, config.get('keep_checkpoints', 3))
    writer = MetricWriter(workdir)
    if mngr.latest_step() is not None:
      changes = config_changes(checkpoint.load_config(workdir), config_dict(config))
      if changes and not allow_config_change:
        listed = '; '.join(f'{k}: {old!r} -> {new!r}' for k, (old, new) in changes.items())
        raise ValueError(f'--workdir {workdir} was trained with another config: {listed}. '
                         'Rerun with the saved config, use a new --workdir, or pass '
                         '--allow_config_change')
      found = checkpoint.newest_valid(mngr, state, os.path.join(workdir, 'corrupt_checkpoints'))
      if found is None:
        raise FileNotFoundError(f'--workdir {workdir}: none of its checkpoints reads back intact')
      state, step = found
      log(f'resumed from checkpoint at step {step} in {workdir}')
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config_dict(config), f, indent=1)
    start = int(state.step)
    log(f'{config.data.name}/{config.data.config}: {len(train_frames["image"])} train frames, '
        f'{len(test_frames["image"])} eval frames, {kw["num_classes"]} classes; detector with '
        f'{n_params:,} parameters; {total} steps of batch {config.batch_size} on {devices} '
        'devices')
    p_train = jax.pmap(functools.partial(steps.train_step, model=model, tx=tx,
                                         loss_fn=loss_fn(config, cells), lr_fn=lr_fn),
                       axis_name=steps.AXIS, donate_argnums=(0,))
    rstate = steps.replicate(state)
    data = batches(train_frames, config.batch_size, devices,
                   np.random.default_rng([config.seed, start]), config.data.flip)
    run = detect_fn(model, config)
    sums, t_last, seen, result, t_start = None, time.time(), 0, {}, time.time()
    eval_every, ckpt_every = config.eval_every_steps, config.checkpoint_every_steps
    for step in range(start + 1, total + 1):
      rstate, m = p_train(rstate, next(data))
      m = steps.host_metrics(m)
      loss = float(m['loss']) / max(float(m['count']), 1.0)
      if not np.isfinite(loss):
        raise FloatingPointError(f'the loss is {loss} at step {step}; the checkpoints in '
                                 f'{workdir} hold the finite states before it')
      sums = steps.add_metrics(sums, m)
      seen += config.batch_size
      if step == start + 1:
        log(f'compiled and ran the first step in {time.time() - t_last:.1f}s')
        t_last, seen = time.time(), 0
      if step % config.log_every_steps == 0 or step == total:
        train = steps.summarize(sums)
        ips = seen / max(time.time() - t_last, 1e-9) if seen else float('nan')
        writer.write(step, 'train', {**train, 'images_per_sec': ips})
        log(f'step {step}/{total} | loss {train["loss"]:.4f} (class {train["cls"]:.3f}, box '
            f'{train["box"]:.3f}, centerness {train["centerness"]:.3f}) | lr {train["lr"]:.2e}'
            + (f' | {ips:.0f} img/s | ETA {format_eta((total - step) * config.batch_size / ips)}'
               if seen else ''))
        sums, t_last, seen = None, time.time(), 0
      if (eval_every and step % eval_every == 0) or step == total:
        host = steps.unreplicate(rstate)
        result = evaluate_frames(run, {'params': host.params}, test_frames, kw['num_classes'])
        writer.write(step, 'eval', {k: v for k, v in result.items() if k != 'AP50_per_class'})
        log(f'eval at step {step}: mAP50 {100 * result["mAP50"]:.1f}, mAP '
            f'{100 * result["mAP"]:.1f} ({len(test_frames["image"])} frames)')
        t_last = time.time()
      if (ckpt_every and step % ckpt_every == 0) or step == total:
        checkpoint.save(mngr, step, steps.unreplicate(rstate), config)
        t_last = time.time()
    if start >= total:
      host = steps.unreplicate(rstate)
      result = evaluate_frames(run, {'params': host.params}, test_frames, kw['num_classes'])
      log(f'nothing to do: the checkpoint in {workdir} is already at step {start}')
    mngr.close()
  log(f'done in {format_eta(time.time() - t_start)}: mAP50 {100 * result.get("mAP50", 0):.1f}, '
      f'mAP {100 * result.get("mAP", 0):.1f}')
  return result


def load(workdir: str):
  """(config, detector, variables) of a trained detection work directory (newest checkpoint
  that verifies)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(checkpoint.load_config(workdir))
  model = detection.build(config)
  found = checkpoint.newest_valid(checkpoint.manager(workdir, create=False))
  if found is None:
    raise FileNotFoundError(f'{workdir}: no checkpoint reads back intact')
  params = jax.tree.map(jnp.asarray, found[0]['params'])
  return config, model, {'params': params}
