"""Accuracy, FLOPs and throughput of a trained model on its eval split.

    python -m tokensparse.evaluate --workdir runs/vit_fashion_mnist

Loads the latest checkpoint and config of the work directory, runs every example of the
config's eval split through the jitted model in inference mode (pmapped over the local
devices), counts MACs with the method's counter (`tokensparse.methods.macs`), times the
forward pass at the eval batch size, prints a summary and writes it to
<workdir>/evaluation.json (with `--method NAME:...`, the weights run through that method, to
evaluation-NAME....json).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time

from tokensparse import cpu

cpu.use_host_devices()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tokensparse import inference, methods  # noqa: E402
from tokensparse.train import loop, steps  # noqa: E402


def evaluate(workdir: str, batch_size: int | None = None, timing_iters: int = 5,
             method: str | None = None) -> dict:
  """Accuracy on every eval example (the trainer's own evaluation), MACs and inputs/s; with
  `method` ('name:key=value'), of the weights run through that method."""
  predictor = inference.load(workdir, method=method)
  config = predictor.config
  if batch_size:
    with config.unlocked():
      config.eval_batch_size = batch_size
  data = inference.data_for(config)
  model, variables = predictor.model, predictor.variables
  m = methods.get(config.model.name)
  m.check_evaluation(model, clips=len(data.meta.image_shape) == 4)
  trainable = variables['params'] if len(m.collections) == 1 else \
      {c: variables[c] for c in m.collections}
  p_eval = jax.pmap(functools.partial(steps.eval_step, model=model, loss_fn=m.loss_fn(config)),
                    axis_name=steps.AXIS)
  state = steps.TrainState(step=jnp.zeros([], jnp.int32), params=trainable, opt_state=None,
                           rng=jax.random.PRNGKey(0), frozen={})
  metrics = loop.evaluate(p_eval, steps.replicate(state), data)
  # Throughput on one eval-sized batch (compilation excluded, median of timed calls).
  forward = jax.pmap(lambda v, x: model.apply(v, x)[0], in_axes=(None, 0))
  x = jnp.asarray(next(iter(data.eval_iter()))['image'])
  jax.block_until_ready(forward(variables, x))
  times = []
  for _ in range(timing_iters):
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, x))
    times.append(time.perf_counter() - start)
  macs = methods.macs(model, predictor.channels)
  result = {'workdir': workdir, 'model': config.model.name, 'method': method or '',
            'split': config.data.eval_split, 'examples': int(metrics['count']),
            'accuracy': metrics['accuracy'], 'gmacs_per_input': macs['total'] / 1e9,
            'inputs_per_sec': x.shape[0] * x.shape[1] / float(np.median(times)),
            'devices': f'{jax.local_device_count()} x {jax.devices()[0].device_kind}'}
  name = 'evaluation.json' if not method else \
      'evaluation-' + ''.join(c if c.isalnum() or c in '=.' else '_' for c in method) + '.json'
  with open(os.path.join(workdir, name), 'w') as f:
    json.dump(result, f, indent=1)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--batch_size', type=int, default=0, help='default: eval_batch_size')
  parser.add_argument('--method', default='', help='NAME[:key=value,...]: evaluate the weights '
                      'run through this method (python -m tokensparse.viz --list names them)')
  args = parser.parse_args(argv)
  try:
    r = evaluate(args.workdir, args.batch_size or None, method=args.method or None)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None
  print(f'{r["workdir"]} ({r["model"]}): accuracy {100 * r["accuracy"]:.2f} % on '
        f'{r["examples"]} {r["split"]} examples | {r["gmacs_per_input"] * 1e3:.2f} MMACs per '
        f'input | {r["inputs_per_sec"]:.0f} inputs/s on {r["devices"]}')


if __name__ == '__main__':
  main()
