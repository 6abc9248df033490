"""train.py run as users run it, in subprocesses on tiny fake data: config files, commands,
environments, final parameters, and a harness that kills a run with SIGKILL at chosen moments
and restarts it (used by tests/test_scale_out.py and benchmarks/crash_consistency.py)."""
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np

from tokensparse.data import pipeline
from tokensparse import checkpoint, cpu
from tests import fake_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '''
import pathlib, sys
sys.path.insert(0, {repo!r})
from tests import fake_data

def get_config():
  return fake_data.tiny_config(pathlib.Path({tmp!r}), **{overrides!r})
'''


def write_config(tmp_path, **overrides) -> str:
  config = fake_data.tiny_config(tmp_path, **overrides)
  pipeline.get_builder(config.data)  # build the fake dataset once, before any subprocess
  path = tmp_path / f'config_{len(os.listdir(tmp_path))}.py'
  path.write_text(CONFIG.format(repo=REPO, tmp=str(tmp_path), overrides=overrides))
  return str(path)


def train_cmd(config_path, workdir, *extra):
  return [sys.executable, os.path.join(REPO, 'train.py'), '--config', config_path,
          '--workdir', workdir, *extra]


def env(devices: int) -> dict:
  e = dict(os.environ, PYTHONPATH=REPO)
  e['XLA_FLAGS'] = (f'--xla_force_host_platform_device_count={devices} '
                    '--xla_cpu_multi_thread_eigen=false ' + cpu.COLLECTIVE_PATIENCE)
  return e


def final_params(workdir, step=None):
  mngr = checkpoint.manager(workdir)
  step = mngr.latest_step() if step is None else step
  return mngr.restore(step, args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardRestore()))['state']['params']


def assert_trees_close(a, b, atol):
  import jax  # pylint: disable=g-import-not-at-top
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def partial_saves(workdir: str) -> set[str]:
  """Checkpoint folders being written (orbax writes into a '*tmp*' folder, then renames it),
  or left by a killed save."""
  ckpts = os.path.join(workdir, 'checkpoints')
  try:
    return {d for d in os.listdir(ckpts) if 'tmp' in d}
  except FileNotFoundError:
    return set()


def kill_and_resume(cmd, environ, workdir, check, *, random_kills: int, save_kills: int,
                    duration: float, seed: int = 0, timeout: float = 300) -> list[dict]:
  """Start `cmd` and SIGKILL it, again and again, each start resuming from what the last one
  left: `random_kills` times at a moment drawn uniformly from [0, duration] seconds after its
  start, then `save_kills` times as soon as a checkpoint write is seen in progress. When a
  resumed run finishes before its kill moment, `check(workdir)` verifies it, the work directory
  is removed and the kill is tried on a fresh run. At the end the command runs to completion
  (it must exit 0) and `check(workdir)` verifies it. Returns one record per kill: its kind, when,
  whether a save was in progress, the newest finished checkpoint before it."""
  rng = random.Random(seed)
  plan = [('random', rng.uniform(0, duration)) for _ in range(random_kills)]
  plan += [('save', None)] * save_kills
  records = []
  while plan:
    kind, moment = plan[0]
    proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    start, left_over = time.time(), partial_saves(workdir)  # by an earlier killed save
    while proc.poll() is None and time.time() - start < timeout:
      if (kind == 'random' and time.time() - start >= moment) or (
          kind == 'save' and partial_saves(workdir) - left_over):
        break
      time.sleep(0.002)
    during_save = bool(partial_saves(workdir) - left_over)
    if proc.poll() is not None:  # finished first: verify this chain, start a fresh one
      if proc.returncode != 0:
        raise RuntimeError(f'a resumed run failed (exit {proc.returncode}):\n'
                           + proc.stderr.read()[-3000:])
      check(workdir)
      records.append({'kind': 'finished', 'after_s': round(time.time() - start, 2)})
      shutil.rmtree(workdir)
      continue
    proc.kill()
    proc.wait()
    plan.pop(0)
    ckpts = os.path.join(workdir, 'checkpoints')  # listed by hand: opening a manager tidies
    steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
    records.append({'kind': kind, 'after_s': round(time.time() - start, 2),
                    'during_save': during_save, 'latest_step': max(steps, default=None)})
  done = subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=timeout)
  if done.returncode != 0:
    raise RuntimeError(f'the final resume failed (exit {done.returncode}):\n'
                       + done.stderr[-3000:])
  check(workdir)
  return records
