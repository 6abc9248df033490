"""train.py as users run it, in subprocesses: two processes == one, SIGTERM, kill -9."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tokensparse.data import pipeline
from tokensparse.train import checkpoint, loop
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
                    '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
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


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process_with_as_many_devices(tmp_path):
  """2 processes x 2 emulated CPU devices (jax.distributed over 127.0.0.1) train two steps to
  the same parameters as 1 process x 4 devices on the same global batch."""
  cfg = write_config(tmp_path, total_steps=2, checkpoint_every_steps=2)
  one = subprocess.run(train_cmd(cfg, str(tmp_path / 'one')), env=env(4), timeout=300,
                       capture_output=True, text=True)
  assert one.returncode == 0, one.stderr[-3000:]
  port = free_port()
  procs = [subprocess.Popen(
      train_cmd(cfg, str(tmp_path / 'two'), f'--coordinator_address=127.0.0.1:{port}',
                '--num_processes=2', f'--process_id={i}'),
      env=env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=300)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  assert '4 devices (cpu), 2 local, process 0 of 2' in outs[0]
  assert_trees_close(final_params(str(tmp_path / 'two')), final_params(str(tmp_path / 'one')),
                     atol=1e-6)
  # Metrics are written once, by process 0.
  lines = open(tmp_path / 'two' / 'metrics.jsonl').read().splitlines()
  assert len([l for l in lines if '"train"' in l]) == 1


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path):
  cfg = write_config(tmp_path, total_steps=400, checkpoint_every_steps=1000,
                     log_every_steps=1)
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen(train_cmd(cfg, workdir), env=env(2), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 120
  while not os.path.exists(os.path.join(workdir, 'metrics.jsonl')) and time.time() < deadline:
    time.sleep(0.2)
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out[-3000:]
  assert 'preempted (SIGTERM): saved the checkpoint of step' in out
  step = checkpoint.manager(workdir).latest_step()
  assert 0 < step < 400  # saved where it stopped, not at a periodic checkpoint
  final_params(workdir)   # restorable


def test_kill_9_loses_only_unsaved_steps_and_resumes_exactly(tmp_path):
  cfg = write_config(tmp_path, total_steps=60, checkpoint_every_steps=5, log_every_steps=5)
  straight = subprocess.run(train_cmd(cfg, str(tmp_path / 'straight')), env=env(2),
                            timeout=300, capture_output=True, text=True)
  assert straight.returncode == 0, straight.stderr[-3000:]
  workdir = str(tmp_path / 'killed')
  proc = subprocess.Popen(train_cmd(cfg, workdir), env=env(2), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpts = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + 120
  while time.time() < deadline and not (
      os.path.isdir(ckpts) and any(d.isdigit() and int(d) >= 10 for d in os.listdir(ckpts))):
    time.sleep(0.05)
  proc.kill()  # SIGKILL, possibly in the middle of a save
  proc.wait()
  mngr = checkpoint.manager(workdir)
  assert mngr.all_steps(), 'no finished checkpoint'
  for step in mngr.all_steps():  # every checkpoint orbax lists restores
    final_params(workdir, step)
  resumed = subprocess.run(train_cmd(cfg, workdir), env=env(2), timeout=300,
                           capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed from checkpoint at step' in resumed.stdout + resumed.stderr
  assert_trees_close(final_params(workdir), final_params(str(tmp_path / 'straight')), atol=1e-6)


def test_in_process_sigterm_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
  config = fake_data.tiny_config(tmp_path, total_steps=6, checkpoint_every_steps=100)
  loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  real_log = loop.log

  def log_and_signal(msg):
    real_log(msg)
    if msg.startswith('compiled and ran the first step'):
      os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(loop, 'log', log_and_signal)
  result = loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert result == {'preempted': True, 'step': 1}
  monkeypatch.setattr(loop, 'log', real_log)
  loop.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert_trees_close(final_params(str(tmp_path / 'resumed')),
                     final_params(str(tmp_path / 'straight')), atol=1e-6)


def test_cli_config_mistakes_name_the_flag_and_write_nothing(tmp_path):
  cfg = write_config(tmp_path)
  workdir = str(tmp_path / 'never')
  for flag, message in (('--config.model.widht=64',
                         'error: --config.model.widht: no such field in the config. Did you '
                         'mean "width" instead of "widht"?'),
                        ('--config.batch_size=abc', "flag --config.batch_size=abc: invalid "
                                                    "literal for int() with base 10: 'abc'"),
                        ('--config.model.patch_size=5',
                         'error: model.image_size=28: not divisible by model.patch_size=5')):
    r = subprocess.run(train_cmd(cfg, workdir, flag), env=env(2), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and message in r.stderr, r.stderr[-2000:]
    assert not os.path.exists(workdir)


def test_resuming_with_another_architecture_is_refused(tmp_path):
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path), str(tmp_path / 'w'))
  before = sorted(os.listdir(tmp_path / 'w' / 'checkpoints'))
  with pytest.raises(ValueError, match=r'the checkpoint at step 4 in .* is of another '
                                       r'architecture than this config \(111 arrays differ\)'):
    loop.train_and_evaluate(fake_data.tiny_config(tmp_path, **{'model.width': 64}),
                            str(tmp_path / 'w'))
  assert sorted(os.listdir(tmp_path / 'w' / 'checkpoints')) == before
