"""train.py as users run it, in subprocesses: two processes == one, SIGTERM, kill -9."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from tokensparse import checkpoint
from tokensparse.train import lock, loop
from tests import fake_data
from tests.cli_runs import (assert_trees_close, env, final_params, kill_and_resume, partial_saves,
                            train_cmd, write_config)


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
  typo = os.path.join(os.path.dirname(cfg), os.path.basename(cfg).replace('config_', 'confg_'))
  (tmp_path / 'a_file').write_text('')
  for args, message in (
      (['--config.model.widht=64'], 'error: --config.model.widht: no such field in the '
                                    'config; did you mean --config.model.width?\n'),
      (['--config.optimizer.learning_rate=1'], 'error: --config.optimizer.learning_rate: no '
                                               'such field in the config (optimizer has b1, b2,'),
      (['--config.optimiser.lr=1'], 'error: --config.optimiser.lr: no such field in the config; '
                                    'did you mean --config.optimizer?\n'),
      (['--config.batch_size=abc'], 'error: --config.batch_size=abc: batch_size is an int '
                                    '(now 16)\n'),
      (['--config.model.patch_size=5'],
       'error: model.image_size=28: not divisible by model.patch_size=5\n'),
      (['--config.data.flip=maybe'], 'error: --config.data.flip=maybe: data.flip is a boolean: '
                                     'true or false (now True)\n')):
    r = subprocess.run(train_cmd(cfg, workdir, *args), env=env(2), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, no traceback
    assert not os.path.exists(workdir)
  for cmd, message in (
      (train_cmd(typo, workdir), f'error: --config {typo}: no such file; did you mean {cfg}?'),
      (train_cmd(cfg + ':fast', workdir),
       f"error: --config {cfg}:fast: get_config() takes 0 positional arguments but 1 was given"),
      (train_cmd(cfg, str(tmp_path / 'a_file')),
       f'error: --workdir {tmp_path / "a_file"}: is a file, not a directory'),
      (train_cmd(cfg, workdir)[:4],   # no --workdir
       'error: --workdir is required: the work directory for checkpoints and metrics')):
    r = subprocess.run(cmd, env=env(2), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.startswith(message), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.exists(workdir)
  assert (tmp_path / 'a_file').read_text() == ''


def test_a_live_work_directory_is_refused_and_a_dead_runs_lock_taken_over(tmp_path, capsys):
  config = fake_data.tiny_config(tmp_path, total_steps=2)
  workdir = tmp_path / 'w'
  loop.train_and_evaluate(config, str(workdir))
  assert not (workdir / lock.NAME).exists()  # released at the end
  before = sorted((str(p), p.stat().st_mtime_ns) for p in workdir.rglob('*'))
  with lock.WorkdirLock(str(workdir)):  # a live holder (flock conflicts across open files)
    with pytest.raises(lock.Busy, match=rf'{workdir} is in use by another training run \(pid '
                                        rf'{os.getpid()} on host {socket.gethostname()}, started '):
      loop.train_and_evaluate(config, str(workdir))
    holder = json.loads((workdir / lock.NAME).read_text())
    assert holder['pid'] == os.getpid()
    after = sorted((str(p), p.stat().st_mtime_ns) for p in workdir.rglob('*')
                   if p.name != lock.NAME)
    assert after == before  # the refused run wrote nothing
  # A lock file whose holder died (no flock on it) is taken over, and the takeover said.
  (workdir / lock.NAME).write_text(json.dumps({'pid': 999999, 'host': 'gone', 'started': 'then'}))
  capsys.readouterr()
  loop.train_and_evaluate(config, str(workdir))
  assert ('took over the lock of a run that ended without releasing it (pid 999999 on host '
          'gone, started then)') in capsys.readouterr().out
  assert not (workdir / lock.NAME).exists()


def test_kill_9_at_random_moments_and_during_saves_resumes_to_the_same_parameters(tmp_path):
  """Crash consistency: SIGKILL at random moments and in the middle of checkpoint writes; every
  restart resumes (taking over the dead run's lock) and the end equals an uninterrupted run.
  benchmarks/crash_consistency.py runs the same harness with many more kill points."""
  cfg = write_config(tmp_path, total_steps=24, checkpoint_every_steps=2, log_every_steps=2)
  start = time.time()
  straight = subprocess.run(train_cmd(cfg, str(tmp_path / 'straight')), env=env(2),
                            timeout=300, capture_output=True, text=True)
  assert straight.returncode == 0, straight.stderr[-3000:]
  want = final_params(str(tmp_path / 'straight'))

  def check(workdir):  # after each completed chain of kills and restarts
    assert_trees_close(final_params(workdir), want, atol=1e-6)
    assert not os.path.exists(os.path.join(workdir, lock.NAME))
    assert not partial_saves(workdir)  # what killed saves left is cleared
  workdir = str(tmp_path / 'killed')
  records = kill_and_resume(train_cmd(cfg, workdir), env(2), workdir, check, random_kills=3,
                            save_kills=2, duration=time.time() - start)
  assert sum(r.get('during_save', False) for r in records) >= 2, records


def test_resuming_with_another_architecture_is_refused(tmp_path):
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path), str(tmp_path / 'w'))
  before = sorted(os.listdir(tmp_path / 'w' / 'checkpoints'))
  wider = fake_data.tiny_config(tmp_path, **{'model.width': 64})
  with pytest.raises(ValueError, match=r'was trained with another config: model\.width: 32 -> 64'):
    loop.train_and_evaluate(wider, str(tmp_path / 'w'))
  # Allowed to change, an architecture still cannot: one line, one example of the arrays.
  with pytest.raises(ValueError, match=r'^the checkpoint at step 4 in .* is of another '
                                       r'architecture than this config \(111 arrays differ, '
                                       r'e\.g\. opt_state/[^\n]*\); use a new --workdir[^\n]*$'):
    loop.train_and_evaluate(wider, str(tmp_path / 'w'), allow_config_change=True)
  assert sorted(os.listdir(tmp_path / 'w' / 'checkpoints')) == before
