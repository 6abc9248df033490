"""Temporal-only fine-tuning of an Eventful video model, the Eventful paper's recipe: cache the
eventful spatial encoder's step features over the data set once per policy and budget, then
train only the temporal encoder and head on the cache (minutes on a CPU).

    python -m tokensparse.methods.eventful.temporal \
        --config configs/eventful/fashion_mnist_actions_temporal.py:capacity=12 \
        --workdir runs/vivit_actions_r12

The config names the dense video work directory (`init_from.path`, a model with
model.video='factorised' or 'frames'), the policy (`model.eventful`: capacity, variant,
threshold) and the recipe (batch_size, num_epochs, optimizer). Into --workdir go:
`features/{train,test}.npz` (the cache: step features [n, T', D] and labels; reused when the
policy is the same), `metrics.jsonl` (loss and accuracy per epoch), `temporal.json` (test clip
accuracy off the shelf and after fine-tuning) and a checkpoint of the whole model as
model.name='eventful' with the tuned temporal encoder, which evaluate, inference and export
read like any work directory. This is a command-line tool that lives with its method: it reads
and writes work directories (tokensparse.checkpoint) and nothing imports it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np
import optax

from tokensparse import checkpoint, configs, inference, losses, methods
from tokensparse.methods.eventful.model import EventfulViT, scan_steps
from tokensparse.train import optim

TUNED = ('TemporalTransformer', 'temporal_cls', 'head')   # what the recipe trains


def log(msg: str) -> None:
  print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def eventful_config(config, source_config) -> ml_collections.ConfigDict:
  """The source model's config made the Eventful model of `config.model.eventful`."""
  c = ml_collections.ConfigDict(source_config.to_dict())
  c.model.name = 'eventful'
  c.model.eventful = methods.get('eventful').fields(config.model)
  return configs.complete(c)


def policy(config) -> dict:
  f = methods.get('eventful').fields(config.model)
  return {'capacity': f.capacity, 'variant': f.variant, 'threshold': f.threshold}


def cache_features(model: EventfulViT, variables, config, split: str, path: str,
                   key: dict) -> tuple[np.ndarray, np.ndarray]:
  """Step features [n, T', D] and labels [n] of every clip of `split` by the eventful spatial
  encoder; read back from `path` when it was written for the same policy (`key`)."""
  if os.path.exists(path):
    with np.load(path) as f:
      if json.loads(str(f['key'])) == key:
        return f['features'], f['labels']
  c = ml_collections.ConfigDict(config.to_dict())
  c.data.eval_split = split
  data = inference.data_for(c)
  steps = lambda clips: clips.reshape(clips.shape[0], model.steps, model.tubelet,
                                      *clips.shape[2:])
  run = jax.jit(lambda v, clips: scan_steps(model, v, steps(clips))[0])
  features, labels, start = [], [], time.time()
  for batch in data.eval_iter():
    clips = batch['image'].reshape(-1, *batch['image'].shape[2:])
    keep = batch['mask'].reshape(-1) > 0
    features.append(np.asarray(run(variables, clips))[keep])
    labels.append(batch['label'].reshape(-1)[keep])
  features, labels = np.concatenate(features), np.concatenate(labels)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path + '.tmp.npz', features=features, labels=labels, key=json.dumps(key))
  os.replace(path + '.tmp.npz', path)
  log(f'cached {split}: {features.shape} step features in {time.time() - start:.0f}s ({path})')
  return features, labels


def split_params(params: dict) -> tuple[dict, dict]:
  """(trained part, frozen part) of a video model's params."""
  return ({k: v for k, v in params.items() if k in TUNED},
          {k: v for k, v in params.items() if k not in TUNED})


def accuracy(model, params, features, labels, batch: int = 500) -> float:
  fn = jax.jit(lambda p, f: model.apply({'params': p}, f, method=EventfulViT.temporal)[0])
  correct = sum(int((np.asarray(fn(params, features[i:i + batch])).argmax(-1) ==
                     labels[i:i + batch]).sum()) for i in range(0, len(features), batch))
  return correct / len(features)


def train(model, params: dict, features, labels, config, log_to: str) -> dict:
  """Train the temporal encoder and head on cached features; returns the new params."""
  tuned, frozen = split_params(params)
  steps_per_epoch = max(len(features) // config.batch_size, 1)
  total = int(np.ceil(config.num_epochs * steps_per_epoch))
  tx, lr_fn = optim.make(config, tuned, total, int(config.get('warmup_epochs', 0) * steps_per_epoch))
  opt_state = tx.init(tuned)
  smoothing = config.get('label_smoothing', 0.0)

  @jax.jit
  def step(tuned, opt_state, f, y, rng):
    def loss_fn(t):
      logits, _ = model.apply({'params': {**frozen, **t}}, f, False,
                              method=EventfulViT.temporal, rngs={'dropout': rng})
      return losses.cross_entropy(logits, y, smoothing).mean(), logits
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(tuned)
    updates, opt_state = tx.update(grads, opt_state, tuned)
    return optax.apply_updates(tuned, updates), opt_state, loss, (logits.argmax(-1) == y).mean()

  rng = np.random.default_rng(config.seed)
  key = jax.random.PRNGKey(config.seed)
  for epoch in range(int(np.ceil(config.num_epochs))):
    order = rng.permutation(len(features))
    sums = []
    for i in range(min(steps_per_epoch, total - epoch * steps_per_epoch)):
      idx = order[i * config.batch_size:(i + 1) * config.batch_size]
      key, sub = jax.random.split(key)
      tuned, opt_state, loss, acc = step(tuned, opt_state, features[idx], labels[idx], sub)
      sums.append((float(loss), float(acc)))
    loss, acc = np.mean(sums, axis=0)
    with open(log_to, 'a') as f:
      f.write(json.dumps({'epoch': epoch + 1, 'split': 'train', 'loss': loss,
                          'accuracy': acc}) + '\n')
    log(f'epoch {epoch + 1}: loss {loss:.4f} | train accuracy {100 * acc:.2f}%')
  return {**frozen, **tuned}


def run(config, workdir: str) -> dict:
  """The whole recipe (see the module docstring); returns the summary written to
  temporal.json."""
  source = configs.resolve(config.init_from.path)
  if not source or not os.path.isdir(source):
    raise FileNotFoundError(f'init_from.path={source!r}: no such work directory (the dense '
                            'video model to fine-tune)')
  if os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ValueError(f'--workdir {workdir}: already holds a checkpoint; choose another directory')
  source_config, variables, _ = checkpoint.load_variables(source)
  c = eventful_config(config, source_config)
  configs.validate_model(c)
  model = methods.build(c.model)
  if not model.factorised:
    raise ValueError(f'init_from.path={source!r} holds model.video='
                     f'{source_config.model.get("video", "joint")!r}, num_frames='
                     f'{source_config.model.get("num_frames", 0)}: temporal-only fine-tuning '
                     "needs a video model with model.video='factorised' or 'frames'")
  if not model.temporal_depth:
    log("model.video='frames' has no temporal encoder: only the head is tuned")
  os.makedirs(workdir, exist_ok=True)
  key = {'source': os.path.abspath(source), **policy(config)}
  cached = {split: cache_features(model, variables, c, split,
                                  os.path.join(workdir, 'features', f'{split}.npz'), key)
            for split in (c.data.train_split, c.data.eval_split)}
  test_f, test_y = cached[c.data.eval_split]
  before = accuracy(model, variables['params'], test_f, test_y)
  log(f'off the shelf ({policy(config)}): test clip accuracy {100 * before:.2f}%')
  recipe = ml_collections.ConfigDict(config.to_dict())
  params = train(model, variables['params'], *cached[c.data.train_split], recipe,
                 os.path.join(workdir, 'metrics.jsonl'))
  after = accuracy(model, params, test_f, test_y)
  log(f'after temporal-only fine-tuning: test clip accuracy {100 * after:.2f}%')
  mngr = checkpoint.manager(workdir)
  checkpoint.save(mngr, 0, {'step': np.zeros([], np.int32), 'params': params}, c)
  mngr.close()
  channels = int(np.shape(params['embedding']['kernel'])[-2])
  summary = {'source': source, **policy(config), 'clips': int(len(test_y)),
             'accuracy_off_the_shelf': before, 'accuracy_fine_tuned': after,
             # A threshold's cost depends on the clips (benchmarks/eventful_vivit.py counts it).
             'macs_per_clip': None if c.model.eventful.get('threshold') is not None else
                              int(methods.macs(model, channels)['total'])}
  with open(os.path.join(workdir, 'temporal.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True, help='path[:argument] of the recipe config')
  parser.add_argument('--workdir', required=True, help='where the cache and the tuned model go')
  args = parser.parse_args(argv)
  path, _, arg = args.config.partition(':')
  try:
    configs.check_command_line(args.config, [])
    config = configs.load(path, arg)
    summary = run(config, args.workdir)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
