"""Accuracy, FLOPs and throughput of a trained model on its eval split.

    python -m tokensparse.evaluate --workdir runs/vit_fashion_mnist

Loads the latest checkpoint and config of the work directory, runs every example of the
config's eval split through the jitted model in inference mode (pmapped over the local
devices), counts MACs with `tokensparse.flops`, times the forward pass at the eval batch size,
prints a summary and writes it to <workdir>/evaluation.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from tokensparse import cpu

cpu.use_host_devices()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tokensparse import flops, inference  # noqa: E402


def evaluate(workdir: str, batch_size: int | None = None, timing_iters: int = 5) -> dict:
  predictor = inference.load(workdir)
  config = predictor.config
  if batch_size:
    with config.unlocked():
      config.eval_batch_size = batch_size
  data = inference.data_for(config)
  model, variables = predictor.model, predictor.variables
  forward = jax.pmap(lambda v, x: model.apply(v, x)[0], in_axes=(None, 0))
  correct = count = 0.0
  for batch in data.eval_iter():
    logits = forward(variables, batch['image'])
    hit = np.asarray(jnp.argmax(logits, -1) == batch['label'], np.float32)
    correct += float((hit * batch['mask']).sum())
    count += float(batch['mask'].sum())
  # Throughput on one eval-sized batch (compilation excluded, median of timed calls).
  x = jnp.asarray(batch['image'])
  jax.block_until_ready(forward(variables, x))
  times = []
  for _ in range(timing_iters):
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, x))
    times.append(time.perf_counter() - start)
  macs = flops.model_macs(model, predictor.channels)
  result = {'workdir': workdir, 'model': config.model.name, 'split': config.data.eval_split,
            'examples': int(count), 'accuracy': correct / max(count, 1.0),
            'gmacs_per_input': macs['total'] / 1e9,
            'inputs_per_sec': x.shape[0] * x.shape[1] / float(np.median(times)),
            'devices': f'{jax.local_device_count()} x {jax.devices()[0].device_kind}'}
  with open(os.path.join(workdir, 'evaluation.json'), 'w') as f:
    json.dump(result, f, indent=1)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--batch_size', type=int, default=0, help='default: eval_batch_size')
  args = parser.parse_args(argv)
  r = evaluate(args.workdir, args.batch_size or None)
  print(f'{r["workdir"]} ({r["model"]}): accuracy {100 * r["accuracy"]:.2f} % on '
        f'{r["examples"]} {r["split"]} examples | {r["gmacs_per_input"] * 1e3:.2f} MMACs per '
        f'input | {r["inputs_per_sec"]:.0f} inputs/s on {r["devices"]}')


if __name__ == '__main__':
  main()
