"""kill -9 a short training run at many moments; every restart must resume and the end must equal
an uninterrupted run.

    python benchmarks/crash_consistency.py [--random 40] [--during-save 20]

Runs train.py in subprocesses on tiny fake Fashion-MNIST (2-block width-32 ViT, 24 steps, a
checkpoint every 2 steps) with the harness of tests/cli_runs.py: first SIGKILL at moments drawn
uniformly over the length of an uninterrupted run (start-up, data, compilation, steps, saves,
evaluation), then SIGKILL as soon as a checkpoint write is seen in progress. After the last
kill the same command runs to the end; its parameters are compared with the uninterrupted
run's. Writes the 'crash_consistency' section of BENCHMARKS.md.
"""
import argparse
import collections
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from common import ROOT, write_section

import jax
import numpy as np

sys.path.insert(0, ROOT)
from tests.cli_runs import (env, final_params, kill_and_resume, partial_saves, train_cmd,  # noqa: E402
                            write_config)
from tokensparse.train import lock  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--random', type=int, default=40, help='kills at random moments')
  parser.add_argument('--during-save', type=int, default=20, help='kills during saves')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  tmp = pathlib.Path(tempfile.mkdtemp())
  cfg = write_config(tmp, total_steps=24, checkpoint_every_steps=2, log_every_steps=2)
  start = time.time()
  straight = subprocess.run(train_cmd(cfg, str(tmp / 'straight')), env=env(2),
                            capture_output=True, text=True, timeout=600)
  assert straight.returncode == 0, straight.stderr[-3000:]
  duration = time.time() - start
  print(f'uninterrupted run: {duration:.1f}s', flush=True)
  workdir = str(tmp / 'killed')
  want = jax.tree.leaves(final_params(str(tmp / 'straight')))
  diffs, locks_left, partials_left = [], [], []

  def check(workdir):  # each chain of kills and restarts that reached the end
    diffs.append(max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                     for a, b in zip(jax.tree.leaves(final_params(workdir)), want)))
    locks_left.append(os.path.exists(os.path.join(workdir, lock.NAME)))
    partials_left.append(len(partial_saves(workdir)))
    print(f'chain {len(diffs)} ended: largest parameter difference {diffs[-1]:.1e}', flush=True)
  t0 = time.time()
  records = kill_and_resume(train_cmd(cfg, workdir), env(2), workdir, check,
                            random_kills=args.random, save_kills=args.during_save,
                            duration=duration, seed=args.seed)
  elapsed = time.time() - t0
  diff, lock_left = max(diffs), any(locks_left)
  kinds = collections.Counter(r['kind'] for r in records)
  kills = [r for r in records if r['kind'] != 'finished']
  in_save = sum(r['during_save'] for r in kills)
  before_first = sum(r['latest_step'] is None for r in kills)
  steps = collections.Counter(r['latest_step'] for r in kills if r['latest_step'] is not None)
  for r in records:
    print(r)
  body = (
      '## Crash consistency (kill -9)\n\n'
      '`python benchmarks/crash_consistency.py`: train.py on a tiny fake-data run (24 steps, a '
      'checkpoint every 2) killed with SIGKILL again and again, each time restarted by the same '
      'command, then run to the end.\n\n'
      f'- kill points tried: **{len(kills)}** ({kinds["random"]} at moments drawn uniformly '
      f'over the {duration:.0f} s of an uninterrupted run, {kinds["save"]} '
      'as soon as a checkpoint write was seen in progress)\n'
      f'- kills that landed while a checkpoint was being written: {in_save}; before the first '
      f'checkpoint existed: {before_first}; newest finished checkpoint at the kills: '
      f'steps {", ".join(str(s) for s in sorted(steps))}\n'
      f'- every restart resumed; {len(diffs)} chains of kills and restarts reached the end '
      '(a chain ends when a resumed run finishes before its kill moment; the next kill starts a '
      f'fresh run), and their final parameters differ from the uninterrupted run by at most '
      f'**{diff:.1e}** (largest absolute difference over all parameters)\n'
      f'- the dead runs\' locks were taken over; lock file left at the end of a chain: '
      f'{"yes (bug)" if lock_left else "no"}; partly written checkpoint folders left at the end '
      f'of a chain: {max(partials_left)}\n'
      f'- {elapsed / 60:.1f} min in all\n')
  write_section('crash_consistency', body)
  print(body)
  if diff > 1e-6 or lock_left:
    raise SystemExit('crash consistency FAILED')


if __name__ == '__main__':
  main()
