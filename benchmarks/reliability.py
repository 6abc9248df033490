"""Nothing lost, ever: the hostile cases of issue 26 run for real, each judged on two counts.

    python benchmarks/reliability.py

Every case runs train.py (in a subprocess, as users run it) or the library on tiny fake
Fashion-MNIST runs (a 2-block width-32 ViT). Each case is judged on
- how it ended: 'one line' (a failure reported in one line and nothing else on stderr; exit
  status not 0), 'correct result' (it did what it should: a resumed run ends equal to an
  uninterrupted one, a reader falls back to the newest intact checkpoint, ...), or a failure of
  the case ('traceback', 'accepted' for an input that should have been refused, 'wrong result');
- data lost: checkpoints that restored and verified before the case and no longer do (and no
  newer intact checkpoint took their place), plus any non-finite checkpoint saved.
Writes the 'reliability' section of BENCHMARKS.md: cases tried, handled, data lost (must be 0).
kill -9 at random moments is benchmarks/crash_consistency.py; bad config values and other
mistaken inputs are benchmarks/bad_inputs.py.
"""
import contextlib
import glob
import io
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from common import ROOT, table, write_section

import jax
import numpy as np

sys.path.insert(0, ROOT)
from tests.cli_runs import env, train_cmd, write_config  # noqa: E402
from tests import fake_data  # noqa: E402
from tokensparse import checkpoint, evaluate, export, inference  # noqa: E402
from tokensparse.train import loop  # noqa: E402

TMP = pathlib.Path(tempfile.mkdtemp(prefix='reliability-'))


# ---------------------------------------------------------------------------------------------
# What a work directory holds, and what a case did to it.

def intact(workdir) -> dict[int, bool]:
  """{step: restores, verifies and is finite} for every checkpoint of a work directory."""
  ckpts = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpts):
    return {}
  out = {}
  with contextlib.redirect_stderr(io.StringIO()):
    mngr = checkpoint.manager(str(workdir), create=False)
    for step in mngr.all_steps():
      try:
        _, variables, _ = checkpoint.load_variables(str(workdir), step=step)
        out[step] = checkpoint.nonfinite(variables) is None
      except Exception:  # pylint: disable=broad-except
        out[step] = False
  return out


def lost(before: dict[int, bool], after: dict[int, bool]) -> int:
  """Intact checkpoints gone or damaged without a newer intact one, plus non-finite saves."""
  newest_good = max((s for s, ok in after.items() if ok), default=-1)
  gone = [s for s, ok in before.items() if ok and not after.get(s) and s >= newest_good]
  new_bad = [s for s, ok in after.items() if not ok and before.get(s, True)]
  return len(gone) + len(new_bad)


def params_of(workdir, step=None):
  with contextlib.redirect_stderr(io.StringIO()):
    return checkpoint.load_variables(str(workdir), step=step)[1]['params']


def same_params(a, b) -> bool:
  return all(np.allclose(x, y, atol=1e-6, rtol=0) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def cli(cfg, workdir, *flags, devices=2, timeout=600):
  return subprocess.run(train_cmd(cfg, str(workdir), *flags), env=env(devices),
                        capture_output=True, text=True, timeout=timeout)


def one_line(r) -> tuple[str, str]:
  """(how it ended, message) of a failed subprocess."""
  lines = r.stderr.strip().splitlines()
  if r.returncode == 0:
    return 'accepted', '(exit 0)'
  if len(lines) == 1:
    return 'one line', lines[0]
  return f'traceback ({len(lines)} lines)', lines[-1] if lines else ''


def refused(fn) -> tuple[str, str]:
  """(how it ended, message) of an in-process call that should raise one line."""
  try:
    with contextlib.redirect_stderr(io.StringIO()):
      fn()
  except Exception as e:  # pylint: disable=broad-except
    text = str(e).strip()
    return ('one line' if len(text.splitlines()) == 1 else 'traceback'), \
        f'{type(e).__name__}: {text.splitlines()[0] if text else ""}'
  return 'accepted', '(no error)'


def trained(name, steps=4, stop_at=None, **overrides):
  """A tiny run in TMP/name of `steps` total steps, preempted after `stop_at` when given."""
  workdir = TMP / name
  config = fake_data.tiny_config(TMP, total_steps=steps, **overrides)
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    if stop_at is None:
      loop.train_and_evaluate(config, str(workdir))
    else:
      real = loop.Preemption.stop_at
      loop.Preemption.stop_at = lambda self, step: step >= stop_at
      try:
        loop.train_and_evaluate(config, str(workdir))
      finally:
        loop.Preemption.stop_at = real
  return workdir


# ---------------------------------------------------------------------------------------------
# The cases. Each returns (how it ended, message, data lost).

def config_value(field, value):
  def case():
    workdir = trained(f'value-{field}')
    cfg, before = write_config(TMP), intact(workdir)
    ended, message = one_line(cli(cfg, workdir, f'--config.{field}={value}'))
    return ended, message, lost(before, intact(workdir))
  return case


def config_file_raises():
  workdir = trained('raises')
  bad = TMP / 'raising_config.py'
  bad.write_text('def get_config():\n  return undefined_name\n')
  before = intact(workdir)
  ended, message = one_line(cli(str(bad), workdir))
  return ended, message, lost(before, intact(workdir))


def diverging_config(**overrides):
  fields = {**dict(log_every_steps=5, checkpoint_every_steps=2), **overrides}
  return write_config(TMP, **{**fields, 'optimizer.lr': 1e6, 'optimizer.min_lr': 0.0,
                              'optimizer.grad_clip_norm': 0.0, 'total_steps': 12})


def divergence_between_logs():
  """The log interval (5) does not divide the checkpoint interval (2)."""
  workdir = TMP / 'diverge'
  r = cli(diverging_config(), workdir)
  ended, message = one_line(r)
  after = intact(workdir)
  found = re.search(r'The last checkpoint, step (\d+)', message)
  named = int(found.group(1)) if found else None
  DIVERGED['step'] = int(re.search(r'at step (\d+)', message).group(1)) if found else None
  if ended == 'one line' and (named is None or not after.get(named)):
    ended = 'wrong result (names a bad checkpoint)'
  return ended, message, lost({}, after)


DIVERGED = {}


def stop_request_after_divergence():
  """A stop request (SIGTERM, SIGINT, SIGHUP: Preemption) during the step whose loss is the
  first non-finite one, as found by the case before: nothing of it may be saved."""
  workdir = TMP / 'diverge-stop'
  if DIVERGED.get('step') is None:
    return 'not run', 'needs the divergence step of the case before', 0
  config = fake_data.tiny_config(TMP, total_steps=12, log_every_steps=1000,
                                 checkpoint_every_steps=1000)
  with config.unlocked():
    config.optimizer.update(lr=1e6, min_lr=0.0, grad_clip_norm=0.0)
  real = loop.Preemption.stop_at
  loop.Preemption.stop_at = lambda self, step: step >= DIVERGED['step']
  try:
    ended, message = refused(lambda: loop.train_and_evaluate(config, str(workdir)))
  finally:
    loop.Preemption.stop_at = real
  return ended, message, lost({}, intact(workdir))


def _wait_for_first_step(proc, workdir, timeout=300):
  """Block until train.py has run its first step (its 'compiled and ran' line)."""
  deadline = time.time() + timeout
  seen = ''
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
      raise RuntimeError(f'{workdir}: ended before its first step: {proc.stderr.read()[-2000:]}')
    seen += line
    if 'compiled and ran the first step' in line:
      return seen
  raise RuntimeError(f'{workdir}: no first step within {timeout}s')


STRAIGHT = {}


def straight(steps=6):
  if steps not in STRAIGHT:
    STRAIGHT[steps] = params_of(trained(f'straight-{steps}', steps=steps))
  return STRAIGHT[steps]


def damage(kind, step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'), recursive=True)
           if os.path.isfile(f)]
  biggest = max(files, key=os.path.getsize)
  if kind == 'one flipped bit':
    data = bytearray(open(biggest, 'rb').read())
    data[len(data) // 2] ^= 0x10
    open(biggest, 'wb').write(bytes(data))
  elif kind == 'a truncated data file':
    data = open(biggest, 'rb').read()
    open(biggest, 'wb').write(data[:len(data) // 3])
  elif kind == 'a data file of garbage':
    size = os.path.getsize(biggest)
    open(biggest, 'wb').write(np.random.default_rng(0).bytes(size))
  elif kind == 'its state/ deleted':
    shutil.rmtree(os.path.join(step_dir, 'state'))
  elif kind == 'an empty newer step folder':
    os.makedirs(os.path.join(os.path.dirname(step_dir), '5'))
  else:
    raise ValueError(kind)


DAMAGES = ('one flipped bit', 'a truncated data file', 'a data file of garbage',
           'its state/ deleted', 'an empty newer step folder')


def damaged_workdir(kind, tool):
  workdir = trained(f'damaged-{tool}-{kind.replace(" ", "_").replace("/", "")}', steps=6,
                    stop_at=4)
  damage(kind, str(workdir / 'checkpoints' / '4'))
  return workdir


def reader_falls_back(kind, tool):
  """inference.load / evaluate / export on a damaged latest checkpoint use the newest intact
  one (step 2 below a damaged step 4; step 4 below an empty folder of step 5), saying so."""
  fallback = 4 if kind == 'an empty newer step folder' else 2
  def case():
    workdir = damaged_workdir(kind, tool)
    before = intact(workdir)
    err, out = io.StringIO(), io.StringIO()
    try:
      with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        if tool == 'inference.load':
          predictor = inference.load(str(workdir))
          ok = same_params(predictor.variables['params'], params_of(workdir, step=fallback))
        elif tool == 'evaluate':
          r = evaluate.evaluate(str(workdir))
          ok = 0.0 <= r['accuracy'] <= 1.0
        else:
          path = TMP / f'export-{kind.replace(" ", "_").replace("/", "")}.stablehlo'
          export.main(['--workdir', str(workdir), '--out', str(path)])
          ok = path.exists() and path.stat().st_size > 0
    except BaseException as e:  # pylint: disable=broad-except
      return 'traceback', f'{type(e).__name__}: {str(e).splitlines()[0]}', \
          lost(before, intact(workdir))
    said = [l for l in err.getvalue().splitlines() if 'trying the one before' in l]
    ended = 'correct result' if ok and said else 'wrong result'
    return ended, (said[0].split('] ', 1)[-1] if said else err.getvalue()[-200:]), \
        lost(before, intact(workdir))
  return case


def trainer_falls_back(kind):
  def case():
    workdir = damaged_workdir(kind, 'train')
    before = intact(workdir)
    r = cli(write_config(TMP, total_steps=6), workdir)
    moved = [l for l in r.stderr.splitlines() if 'moved it to' in l]
    ok = (r.returncode == 0 and moved and same_params(params_of(workdir), straight(6)) and
          len(r.stderr.strip().splitlines()) == 1)
    return ('correct result' if ok else f'wrong result (exit {r.returncode})'), \
        (moved[0].split('] ', 1)[-1] if moved else r.stderr[-300:]), lost(before, intact(workdir))
  return case


def changed_on_resume(field, value):
  def case():
    workdir = trained(f'changed-{field}', steps=4, stop_at=2)
    before = intact(workdir)
    ended, message = one_line(cli(write_config(TMP, **{field: value}), workdir))
    if ended == 'one line' and f'{field}:' not in message:
      ended = 'wrong result (does not name the field)'
    return ended, message, lost(before, intact(workdir))
  return case


def harmless_change():
  workdir = trained('harmless', steps=4, stop_at=2)
  before = intact(workdir)
  r = cli(write_config(TMP, log_every_steps=1, checkpoint_every_steps=1), workdir)
  ok = r.returncode == 0 and same_params(params_of(workdir), straight(4))
  return ('correct result' if ok else 'wrong result'), \
      'resumed with log_every_steps 2 -> 1, checkpoint_every_steps 2 -> 1', \
      lost(before, intact(workdir))


def allowed_change():
  workdir = trained('allowed', steps=4, stop_at=2)
  before = intact(workdir)
  r = cli(write_config(TMP, **{'batch_size': 8}), workdir, '--allow_config_change')
  lines = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  change = [l for l in lines if l.get('split') == 'config_change']
  ok = r.returncode == 0 and change and change[0]['batch_size'] == {'old': 16, 'new': 8}
  return ('correct result' if ok else 'wrong result'), \
      f'metrics.jsonl: {json.dumps(change[0]) if change else "(no record)"}', \
      lost(before, intact(workdir))


def signalled(sigs, name):
  """Send `sigs` (one after another) to a long run after its first step."""
  def case():
    workdir = TMP / f'signal-{name}'
    cfg = write_config(TMP, total_steps=400, checkpoint_every_steps=1000, log_every_steps=1)
    proc = subprocess.Popen(train_cmd(cfg, str(workdir)), env=env(2), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_first_step(proc, workdir)
    for s in sigs:
      proc.send_signal(s)
      time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    after = intact(workdir)
    if len(sigs) == 1:  # saves and exits 0; the same command resumes from it
      said = [l for l in out.splitlines() if 'preempted' in l]
      ok = proc.returncode == 0 and said and after and all(after.values()) and not err.strip()
      return ('correct result' if ok else f'wrong result (exit {proc.returncode})'), \
          (said[0].split('] ', 1)[-1] if said else err[-300:]), lost({}, after)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    ended, message = one_line(r)
    if ended == 'one line' and proc.returncode != 130:
      ended = f'wrong result (exit {proc.returncode})'
    return ended, message, lost({}, after)
  return case


def unwritable(kind):
  def case():
    if kind == 'under a regular file':
      (TMP / 'a_file').write_text('')
      workdir = TMP / 'a_file' / 'run'
      return (*one_line(cli(write_config(TMP), workdir)), 0)
    workdir = trained('readonly')
    before = intact(workdir)
    if os.geteuid() == 0:  # root writes through file modes: mount it read-only instead
      r = subprocess.run(['mount', '--bind', '-o', 'ro', str(workdir), str(workdir)],
                         capture_output=True, text=True)
      if r.returncode:
        return 'not run', f'needs a read-only bind mount: {r.stderr.strip()}', 0
      undo = ['umount', str(workdir)]
    else:
      os.chmod(workdir, 0o555)
      undo = ['chmod', '755', str(workdir)]
    try:
      result = one_line(cli(write_config(TMP, total_steps=6), workdir))
    finally:
      subprocess.run(undo, check=True)
    return (*result, lost(before, intact(workdir)))
  return case


def disk_full():
  """A 2 MiB tmpfs fills up during a save; after it grows the same command resumes and ends
  equal to an uninterrupted run."""
  mount = TMP / 'small'
  mount.mkdir()
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mount)],
                     capture_output=True, text=True)
  if r.returncode:
    return 'not run', f'needs a small tmpfs mount (root): {r.stderr.strip()}', 0
  try:
    fields = dict(total_steps=40, checkpoint_every_steps=2, log_every_steps=2,
                  keep_checkpoints=20)
    cfg, workdir = write_config(TMP, **fields), mount / 'run'
    ended, message = one_line(cli(cfg, workdir))
    if 'no space left on device' not in message:
      ended = 'wrong result' if ended == 'one line' else ended
    before = intact(workdir)
    subprocess.run(['mount', '-o', 'remount,size=64m', str(mount)], check=True)
    resumed = cli(cfg, workdir)
    want = params_of(trained('straight-diskfull', steps=fields.pop('total_steps'), **fields))
    if resumed.returncode or not same_params(params_of(workdir), want):
      ended = f'wrong result (resumed run: exit {resumed.returncode})'
    return ended, message, lost(before, intact(workdir))
  finally:
    subprocess.run(['umount', str(mount)], check=False)


def concurrent_first_runs():
  """Two first runs build the same dataset into the same data_dir at once."""
  tmp = TMP / 'concurrent'
  tmp.mkdir()
  fake_data.make_fashion_like(str(tmp / 'idx'))  # the source files; the build is left to them
  cfg = write_config_unbuilt(tmp)
  procs = [subprocess.Popen(train_cmd(cfg, str(tmp / f'run{i}')), env=env(2), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  codes = [p.returncode for p in procs]
  waited = any('waiting for another process' in o for o, _ in outs)
  built = sum('built fashion_mnist' in o for o, _ in outs)
  ok = codes == [0, 0] and built == 1 and not any(e.strip() for _, e in outs)
  return ('correct result' if ok else f'wrong result (exits {codes})'), \
      f'both runs finished; the dataset was built {built} time(s)' + \
      ('; one run waited for the other\'s build' if waited else ''), 0


def write_config_unbuilt(tmp):
  """A config file like cli_runs.write_config's whose dataset is not built yet."""
  from tests.cli_runs import CONFIG, REPO  # pylint: disable=g-import-not-at-top
  path = tmp / 'config.py'
  path.write_text(CONFIG.format(repo=REPO, tmp=str(tmp), overrides={'total_steps': 2}))
  return str(path)


CALLS = 300


def readers_racing_deletion():
  """A live run saves every step and keeps one checkpoint; readers load it again and again."""
  workdir = TMP / 'live'
  cfg = write_config(TMP, total_steps=100000, checkpoint_every_steps=1, keep_checkpoints=1,
                     log_every_steps=50)
  proc = subprocess.Popen(train_cmd(cfg, str(workdir)), env=env(2), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  _wait_for_first_step(proc, workdir)
  threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
  while not any(n.isdigit() for n in os.listdir(workdir / 'checkpoints')):
    time.sleep(0.01)  # readers start once there is a checkpoint to read
  calls, failures, first = 0, 0, ''
  t = time.time()
  try:
    while calls < CALLS and time.time() - t < 600:
      try:
        with contextlib.redirect_stderr(io.StringIO()):
          (checkpoint.load_variables if calls % 10 else inference.load)(str(workdir))
      except Exception as e:  # pylint: disable=broad-except
        failures += 1
        first = first or f'{type(e).__name__}: {str(e).splitlines()[0]}'
      calls += 1
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
  return ('correct result' if failures == 0 else f'wrong result ({failures} failed)'), \
      f'{calls} loads (load_variables, every 10th inference.load) while the run saved and ' \
      f'deleted: {failures} failed' + (f' ({first})' if first else ''), 0


def predict_refuses(name, images):
  def case():
    predictor = inference.load(str(trained('predict')))
    return (*refused(lambda: predictor.predict(images)), 0)
  return case


def main():
  started = time.time()
  pixels = np.full((2, 28, 28, 1), 100, np.uint8)
  nan = pixels.astype(np.float32)
  nan[0, 0, 0, 0] = np.nan
  inf = pixels.astype(np.float32)
  inf[1, 3, 3, 0] = np.inf
  cases = [
      ('validation', '`--config.keep_checkpoints=0`', config_value('keep_checkpoints', 0)),
      ('validation', '`--config.eval_batch_size=0`', config_value('eval_batch_size', 0)),
      ('validation', '`--config.checkpoint_every_steps=-1`',
       config_value('checkpoint_every_steps', -1)),
      ('validation', '`--config.total_steps=-5`', config_value('total_steps', -5)),
      ('validation', 'a config file that raises (NameError)', config_file_raises),
      ('divergence', 'NaN loss between log steps (log every 5, checkpoint every 2)',
       divergence_between_logs),
      ('divergence', 'a stop request (SIGTERM) in the step the loss diverged',
       stop_request_after_divergence),
  ]
  for kind in DAMAGES:
    cases.append(('integrity', f'train.py resumes; latest checkpoint: {kind}',
                  trainer_falls_back(kind)))
    for tool in ('inference.load', 'evaluate', 'export'):
      cases.append(('integrity', f'{tool}; latest checkpoint: {kind}',
                    reader_falls_back(kind, tool)))
  cases += [
      ('integrity', 'readers while a live run saves and deletes checkpoints',
       readers_racing_deletion),
      ('config on resume', 'batch size 16 -> 8', changed_on_resume('batch_size', 8)),
      ('config on resume', 'learning rate 2e-3 -> 1e-3', changed_on_resume('optimizer.lr',
                                                                            1e-3)),
      ('config on resume', 'total steps 4 -> 8', changed_on_resume('total_steps', 8)),
      ('config on resume', "data.train_split 'train' -> 'test'",
       changed_on_resume('data.train_split', 'test')),
      ('config on resume', 'model width 32 -> 64 (another architecture)',
       changed_on_resume('model.width', 64)),
      ('config on resume', 'log and checkpoint intervals (harmless)', harmless_change),
      ('config on resume', 'batch size with --allow_config_change', allowed_change),
      ('signals', 'SIGTERM', signalled([signal.SIGTERM], 'term')),
      ('signals', 'SIGINT (Ctrl-C)', signalled([signal.SIGINT], 'int')),
      ('signals', 'SIGHUP (terminal closed)', signalled([signal.SIGHUP], 'hup')),
      ('signals', 'SIGINT twice', signalled([signal.SIGINT, signal.SIGINT], 'int2')),
      ('file system', 'work directory under a regular file', unwritable('under a regular file')),
      ('file system', 'read-only work directory', unwritable('read-only')),
      ('file system', 'disk full during a save', disk_full),
      ('file system', 'two first runs build the dataset at once', concurrent_first_runs),
  ]
  for name, images in (('int8 pixels', pixels.astype(np.int8)),
                       ('bool pixels', pixels > 0),
                       ('negative float pixels', pixels.astype(np.float32) - 200),
                       ('float pixels above 255', pixels.astype(np.float32) * 3),
                       ('a NaN pixel', nan), ('an infinite pixel', inf),
                       ('an empty batch', pixels[:0])):
    cases.append(('predict', name, predict_refuses(name, images)))

  rows, tally = [], {'handled': 0, 'lost': 0, 'not run': 0}
  for group, label, fn in cases:
    t = time.time()
    try:
      ended, message, n_lost = fn()
    except Exception as e:  # pylint: disable=broad-except  (the harness itself)
      ended, message, n_lost = 'harness error', f'{type(e).__name__}: {e}'.splitlines()[0], 0
    handled = ended in ('one line', 'correct result')
    tally['handled'] += handled
    tally['lost'] += n_lost
    tally['not run'] += ended == 'not run'
    message = message.replace(str(TMP), '<tmp>').replace('|', '\\|')
    rows.append([group, label, ended if handled else f'**{ended}**', message[:240], n_lost])
    print(f'[{time.strftime("%H:%M:%S")}] {group}: {label}: {ended}, lost {n_lost} '
          f'({time.time() - t:.0f}s) | {message[:160]}', flush=True)
  tried = len(rows) - tally['not run']
  body = (
      '## Reliability: nothing lost\n\n'
      '`python benchmarks/reliability.py`: hostile cases run for real on tiny fake-data runs '
      '(train.py in subprocesses, the library in-process). "one line": refused or stopped with '
      'one line on stderr and nothing else; "correct result": did what it should (a resumed '
      'run ends equal to an uninterrupted one within 1e-6, a reader falls back to the newest '
      'intact checkpoint and says so). "lost": checkpoints that restored and verified before the '
      'case and no longer do with no newer intact one, plus non-finite checkpoints saved. '
      'kill -9 is the crash_consistency section.\n\n'
      f'**{tried} cases tried, {tally["handled"]} handled in one line or with the correct '
      f'result, {tally["lost"]} checkpoints lost**' +
      (f' ({tally["not run"]} not run on this machine)' if tally['not run'] else '') +
      f'; {(time.time() - started) / 60:.1f} min.\n\n' +
      table(['group', 'case', 'ended', 'message (first line)', 'lost'], rows))
  write_section('reliability', body)
  print(body)
  if tally['handled'] < tried or tally['lost']:
    raise SystemExit('reliability: some cases were not handled or lost data')


if __name__ == '__main__':
  main()
