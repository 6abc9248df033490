"""Checkpoints with orbax, and the one way to load weights: `load_variables(path, config)`.

Layout: `<workdir>/checkpoints/<step>/{state,config,meta}`: the unreplicated train state, the
config, and what a reader needs to know about the state (its variable collections and a CRC-32
of every array). Saves are atomic (orbax writes to a temporary folder and renames it when
complete). Every restore checks the arrays against their checksums; a checkpoint that fails
(flipped bits, a truncated or missing file, an empty step folder, one deleted while it was being
read) is named in one line and the newest one that verifies is used instead; the trainer moves
the bad one to `<workdir>/corrupt_checkpoints/`. Restoring uses an abstract target, so a run can
resume on another device count.

    config, variables, info = checkpoint.load_variables('runs/vit_fashion_mnist')
    config, variables, info = checkpoint.load_variables('deit_small.pth', config)

A work directory gives its saved config (old-style fields migrated, tokensparse.configs) and
the variables of its latest checkpoint ({'params': ..., and e.g. 'scores'}); a timm / DeiT /
vit_jax file needs the config of the model it holds and is converted by tokensparse.convert.
Train (init_from), inference, evaluate, export and the VTP pruning tool all load through it.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zlib
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from tokensparse import configs, convert, methods

def manager(workdir: str, keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
  """The work directory's checkpoint manager; `create=False` (for readers) writes nothing and
  fails with FileNotFoundError where there is no checkpoints/ folder."""
  if not create and not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise FileNotFoundError(f'{workdir}: no checkpoint (expected {workdir}/checkpoints/<step>)')
  with _absl_level(logging.ERROR):  # a read-only manager warns that it is read-only
    # A reader (create=False) is read-only: it never deletes or tidies what a live run writes.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep if create else None, create=create, read_only=not create,
        save_interval_steps=1 if create else 0, enable_async_checkpointing=False)
    # Handlers named up front, not item_names: a fresh reader's item_metadata needs them.
    handlers = {'state': ocp.StandardCheckpointHandler(), 'config': ocp.JsonCheckpointHandler(),
                'meta': ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                 options=options, item_handlers=handlers)


@contextlib.contextmanager
def _absl_level(level: int):
  """The level of the 'absl' logger (orbax logs through it) within the block."""
  logger = logging.getLogger('absl')
  before = logger.level
  logger.setLevel(level)
  try:
    yield
  finally:
    logger.setLevel(before)


class _StepFolderNoise(logging.Filter):
  """Drops orbax's warning about a step folder without metadata (an interrupted or damaged
  checkpoint, or one a live run is still writing): orbax logs it from its worker threads at any
  later call, and tokensparse names such a step itself, in one line, where it matters."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(('Metadata file does not exist',
                                           'Failed to read Metadata file'))


logging.getLogger('absl').addFilter(_StepFolderNoise())


class Corrupt(ValueError):
  """A checkpoint that cannot be read back as it was written."""


def _key(path) -> str:
  """'params/Transformer/...': a tree path the same for the saved state, its stored metadata
  and a plain-dict restore (attribute, dict and sequence keys alike)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def checksums(tree: Any) -> dict[str, int]:
  """CRC-32 of every array of a host tree, by its path."""
  return {_key(path): zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8))
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nonfinite(tree: Any) -> str | None:
  """The path of the first floating-point array of `tree` with a NaN or inf, or None."""
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    x = np.asarray(x)
    if x.dtype.kind == 'f' and not np.isfinite(x).all():
      return jax.tree_util.keystr(path)
  return None


@contextlib.contextmanager
def _quiet_orbax():
  """An orbax read or write whose failure is reported by the caller in one line: orbax's
  error logs and the tracebacks tensorstore's callbacks print from their threads ('Event loop
  is closed') are held back, replayed after success and dropped after a failure."""
  held = _HeldStderr()
  try:
    with _absl_level(logging.CRITICAL):
      yield
  except BaseException:
    time.sleep(1.0)  # the failed operation's threads finish printing into the held stderr
    asyncio_log = logging.getLogger('asyncio')
    level, asyncio_log.level = asyncio_log.level, logging.CRITICAL
    gc.collect()  # its failed tasks say 'Task exception was never retrieved' when collected
    asyncio_log.setLevel(level)
    held.release(replay=False)
    raise
  finally:
    held.release(replay=True)


class _HeldStderr:
  """File descriptor 2 sent to a temporary file until release(): replayed after a good save,
  dropped after a failed one (whose error is raised in one line instead)."""

  def __init__(self):
    sys.stderr.flush()
    self._file = tempfile.TemporaryFile()
    self._saved = os.dup(2)
    os.dup2(self._file.fileno(), 2)

  def release(self, replay: bool) -> None:
    if self._saved is None:
      return
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    self._saved = None
    if replay:
      self._file.seek(0)
      text = self._file.read()
      if text:
        os.write(2, text)
    self._file.close()


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config,
         collections: Sequence[str] = ('params',)) -> None:
  """Save `state` (unreplicated; copied to host), the config JSON and the meta JSON (variable
  collections, array checksums) at `step`. `collections` names the variable collections of
  `state['params']`: ('params',) when it is the 'params' tree itself, several when it is
  {collection: tree}. A failed write (a full disk, a read-only directory) raises one OSError
  naming the step and the directory."""
  host_state = jax.tree.map(np.asarray, jax.device_get(state))
  meta = {'collections': list(collections), 'checksums': checksums(host_state)}
  try:
    with _quiet_orbax():
      mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(host_state),
          config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
          meta=ocp.args.JsonSave(meta)))
      mngr.wait_until_finished()
  except Exception as e:  # orbax wraps the OS error in its own layers
    cause = e
    while cause.__cause__ is not None or cause.__context__ is not None:
      if isinstance(cause, OSError):
        break
      cause = cause.__cause__ or cause.__context__
    text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    for partial in glob.glob(os.path.join(str(mngr.directory), f'{step}.orbax-checkpoint-tmp*')):
      shutil.rmtree(partial, ignore_errors=True)  # give back what the failed write took
    if getattr(cause, 'errno', None) == errno.ENOSPC or 'No space left on device' in text:
      need = sum(np.asarray(x).nbytes for x in jax.tree.leaves(host_state))
      free = shutil.disk_usage(str(mngr.directory)).free
      text = (f'no space left on device (a checkpoint needs about {need / 2**20:.3g} MiB, '
              f'{free / 2**20:.3g} MiB are free); the checkpoints before it are intact')
    raise OSError(f'saving the checkpoint of step {step} in {mngr.directory} failed: '
                  f'{text}') from None


def abstract(tree: Any) -> Any:
  """Shapes and dtypes of `tree` (arrays or ShapeDtypeStructs), as orbax restore targets."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _meta(mngr: ocp.CheckpointManager, step: int) -> dict | None:
  """A checkpoint's meta record, None for checkpoints written before there was one."""
  if not os.path.isdir(os.path.join(str(mngr.directory), str(step), 'meta')):
    return None
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def _check_architecture(mngr: ocp.CheckpointManager, step: int, target: Any) -> None:
  """Compare the stored arrays' paths and shapes (metadata only) with `target`'s: ValueError
  for another architecture (the user's mistake, not a corrupt checkpoint)."""
  try:
    with _quiet_orbax():
      metadata = mngr.item_metadata(step)['state']
    stored = {_key(p): tuple(m.shape)
              for p, m in jax.tree_util.tree_flatten_with_path(metadata)[0]}
  except Exception as e:  # pylint: disable=broad-except
    raise Corrupt(f'checkpoint step {step} in {mngr.directory} has no readable metadata '
                  f'({type(e).__name__})') from None
  want = {_key(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  problems = [f'{k}: checkpoint {stored.get(k, "absent")}, this config {want.get(k, "absent")}'
              for k in sorted(set(stored) | set(want)) if stored.get(k) != want.get(k)]
  if problems:
    raise ValueError(
        f'the checkpoint at step {step} in {mngr.directory} is of another architecture than '
        f'this config ({len(problems)} arrays differ, e.g. {problems[0]}); use a new --workdir, '
        'or start from it with init_from.path')


def _verified(mngr: ocp.CheckpointManager, step: int, target: Any = None) -> Any:
  """The state of checkpoint `step` (onto `target`'s structure, or as stored), checked
  against its checksums; Corrupt names what is wrong (ValueError: another architecture)."""
  if target is not None:
    _check_architecture(mngr, step, target)
  try:
    with _quiet_orbax():
      meta = _meta(mngr, step)
      args = ocp.args.StandardRestore(abstract(target)) if target is not None else \
          ocp.args.StandardRestore()
      state = mngr.restore(step, args=ocp.args.Composite(state=args))['state']
  except Exception as e:  # orbax / tensorstore raise many kinds for unreadable files
    reason = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
    raise Corrupt(f'checkpoint step {step} in {mngr.directory} cannot be read ({reason})') \
        from None
  if meta is not None and 'checksums' in meta:
    want = meta['checksums']
    got = checksums(jax.tree.map(np.asarray, state))
    bad = [k for k, v in got.items() if k in want and want[k] != v]
    missing = [k for k in want if k not in got and (target is not None or k.startswith('params'))]
    if bad or missing:
      raise Corrupt(f'checkpoint step {step} in {mngr.directory} does not match its checksums '
                    f'({len(bad)} arrays differ, {len(missing)} missing; e.g. '
                    f'{(bad + missing)[0]})')
  return state


def note(message: str) -> None:
  print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def newest_valid(mngr: ocp.CheckpointManager, target: Any = None,
                 quarantine: str | None = None) -> tuple[Any, int] | None:
  """(state, step) of the newest checkpoint that reads back and verifies, newest first; each one
  that fails is named in one line (and, with `quarantine`, moved into that folder so a resumed
  run can write its step again). None when none is left."""
  mngr.reload()
  found, moved_any = None, False
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      found = _verified(mngr, step, target), step
      break
    except Corrupt as e:
      if quarantine:
        os.makedirs(quarantine, exist_ok=True)
        moved = os.path.join(quarantine, f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
        shutil.move(os.path.join(str(mngr.directory), str(step)), moved)
        moved_any = True
        note(f'{e}; moved it to {moved}, trying the one before')
      else:
        note(f'{e}; trying the one before')
  if moved_any:
    mngr.reload()
  return found


def restore(mngr: ocp.CheckpointManager, target: Any, step: int | None = None,
            quarantine: str | None = None):
  """(state, step) restored onto the structure of `target` and verified: `step`, or (None) the
  newest checkpoint that verifies (see newest_valid)."""
  if step is None:
    found = newest_valid(mngr, target, quarantine)
    if found is None:
      raise FileNotFoundError(f'no checkpoint in {mngr.directory} reads back intact')
    state, step = found
  else:
    state = _verified(mngr, step, target)
  return state, step


def _step_folders(mngr: ocp.CheckpointManager) -> list[int]:
  """The step folders in the checkpoints directory now, newest first: read from the directory
  itself, not from orbax's list (which stats every step, and fails when a live run deletes one
  under it). Unfinished saves are named <step>.orbax-checkpoint-tmp-*, so are left out."""
  return sorted((int(n) for n in os.listdir(mngr.directory) if n.isdigit()), reverse=True)


def _reader(workdir: str) -> ocp.CheckpointManager:
  """A read-only manager; its listing is retried while a live run deletes a step under it."""
  for attempt in range(50):
    try:
      return manager(workdir, create=False)
    except OSError:
      if attempt == 49 or not os.path.isdir(os.path.join(workdir, 'checkpoints')):
        raise
      time.sleep(0.1)


def _latest(workdir: str) -> tuple[ocp.CheckpointManager, int]:
  mngr = _reader(workdir)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f'{workdir}: no checkpoint (expected {workdir}/checkpoints/<step>)')
  return mngr, step


def _read_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']


def load_config(workdir: str, step: int | None = None) -> dict:
  """The config saved beside the latest (or the given) checkpoint of a work directory, with
  old-style fields moved to where they live now (tokensparse.configs.migrate)."""
  mngr, latest = _latest(workdir)
  if step is not None:
    return configs.migrate(_read_config(mngr, step))
  for step in sorted(mngr.all_steps(), reverse=True):  # the newest that reads
    try:
      with _quiet_orbax():
        return configs.migrate(_read_config(mngr, step))
    except Exception:  # pylint: disable=broad-except
      continue
  raise FileNotFoundError(f'{workdir}: no checkpoint config reads back')


def _collections(mngr: ocp.CheckpointManager, step: int, config) -> tuple[str, ...]:
  """The variable collections recorded with a checkpoint; checkpoints written before they were
  recorded hold those of the saved config's method."""
  meta = _meta(mngr, step)
  if meta is not None:
    return tuple(meta['collections'])
  return methods.get(config.model.get('name', 'vit')).collections


def _first_readable(mngr, candidates, tried, explicit):
  """(state, config, collections, step) of the first of `candidates` that reads back whole,
  or None; each failure is named in one line (raised for an explicit step)."""
  for candidate in candidates:
    tried.add(candidate)
    try:
      state = _verified(mngr, candidate)
      try:
        saved = ml_collections.ConfigDict(configs.migrate(_read_config(mngr, candidate)))
        collections = _collections(mngr, candidate, saved)
      except Exception as e:  # pylint: disable=broad-except
        raise Corrupt(f'checkpoint step {candidate} in {mngr.directory}: its config cannot be '
                      f'read ({type(e).__name__})') from None
    except Corrupt as e:
      if explicit:
        raise
      note(f'{e}; trying the one before')
      continue
    return state, saved, collections, candidate
  return None


def load_variables(path: str, config=None, *, step: int | None = None,
                   skip: tuple[str, ...] = ()) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(config, variables, info) from a tokensparse work directory (its latest checkpoint, or
  `step`) or from a timm / DeiT / vit_jax file (see the module docstring).

  For a work directory the saved config is returned (`config` is not needed); for a file,
  `config` says which architecture it holds and is returned as given. `skip` (files only):
  parameter prefixes left out of the conversion. info: 'format' ('tokensparse', 'timm',
  'vit_jax'), 'path', and for files the normalisation the checkpoint expects ('mean', 'std')."""
  if os.path.isdir(path):
    mngr = _reader(path)
    tried, found, listing = set(), None, None
    for _ in range(50):  # newest first; a live run may delete a step meanwhile and add a newer
      candidates = [step] if step is not None else \
          [s for s in _step_folders(mngr) if s not in tried]
      found = candidates and _first_readable(mngr, candidates, tried, explicit=step is not None)
      before, listing = listing, sorted(os.listdir(mngr.directory))
      if found or step is not None or not listing or (tried and listing == before):
        break  # read, or nothing is there, or nothing is being written
      time.sleep(0.1)  # a live run is between saving one step and deleting another
    if not found:
      raise FileNotFoundError(f'{path}: no checkpoint reads back intact' if tried else
                              f'{path}: no checkpoint (expected {path}/checkpoints/<step>)')
    state, saved, collections, step = found
    params = state['params']
    variables = {'params': params} if collections == ('params',) else \
        {c: params[c] for c in collections}
    return saved, variables, {'format': 'tokensparse', 'path': path, 'step': step}
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such work directory or checkpoint file')
  if config is None:
    raise ValueError(f'{path} is a checkpoint file: pass config= (model and data fields) to '
                     'say which architecture it holds')
  params, info = convert.load_checkpoint(path, config, skip=skip)
  return config, {'params': params}, {**info, 'path': path}
