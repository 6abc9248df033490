"""Checkpoints with orbax, and the one way to load weights: `load_variables(path, config)`.

Layout: `<workdir>/checkpoints/<step>/{state,config,meta}`: the unreplicated train state, the
config, and what a reader needs to know about the state (its variable collections). Saves are
atomic (orbax writes to a temporary folder and renames it when complete), so an interrupted
save never leaves a checkpoint that fails to restore. Restoring uses an abstract target, so a
run can resume on another device count.

    config, variables, info = checkpoint.load_variables('runs/vit_fashion_mnist')
    config, variables, info = checkpoint.load_variables('deit_small.pth', config)

A work directory gives its saved config (old-style fields migrated, tokensparse.configs) and
the variables of its latest checkpoint ({'params': ..., and e.g. 'scores'}); a timm / DeiT /
vit_jax file needs the config of the model it holds and is converted by tokensparse.convert.
Train (init_from), inference, evaluate, export and the VTP pruning tool all load through it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from tokensparse import configs, convert, methods

ITEMS = ('state', 'config', 'meta')


def manager(workdir: str, keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
  """The work directory's checkpoint manager; `create=False` (for readers) writes nothing and
  fails with FileNotFoundError where there is no checkpoints/ folder."""
  if not create and not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise FileNotFoundError(f'{workdir}: no checkpoint (expected {workdir}/checkpoints/<step>)')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=options, item_names=ITEMS)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config,
         collections: Sequence[str] = ('params',)) -> None:
  """Save `state` (unreplicated; copied to host), the config JSON and the meta JSON at `step`.
  `collections` names the variable collections of `state['params']`: ('params',) when it is
  the 'params' tree itself, several when it is {collection: tree}."""
  host_state = jax.tree.map(np.asarray, jax.device_get(state))
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(host_state),
      config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
      meta=ocp.args.JsonSave({'collections': list(collections)})))
  mngr.wait_until_finished()


def abstract(tree: Any) -> Any:
  """Shapes and dtypes of `tree` (arrays or ShapeDtypeStructs), as orbax restore targets."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def restore(mngr: ocp.CheckpointManager, target: Any, step: int | None = None):
  """(state, step) restored onto the structure of `target`; step None means the latest."""
  step = mngr.latest_step() if step is None else step
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract(target))))
  # orbax restores onto the target's structure without checking shapes: check them here, so a
  # work directory of another architecture is refused instead of failing later (or silently).
  problems = []
  for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(target)[0],
                               jax.tree.leaves(restored['state'])):
    if np.shape(want) != np.shape(got):
      problems.append(f'{jax.tree_util.keystr(path)}: checkpoint {np.shape(got)}, '
                      f'this config {np.shape(want)}')
  if problems:
    raise ValueError(
        f'the checkpoint at step {step} in {mngr.directory} is of another architecture than '
        f'this config ({len(problems)} arrays differ):\n  - ' + '\n  - '.join(problems[:10]) +
        '\nUse a new --workdir, or start from it with init_from.path.')
  return restored['state'], step


def _latest(workdir: str) -> tuple[ocp.CheckpointManager, int]:
  mngr = manager(workdir, create=False)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f'{workdir}: no checkpoint (expected {workdir}/checkpoints/<step>)')
  return mngr, step


def load_config(workdir: str, step: int | None = None) -> dict:
  """The config saved beside the latest (or the given) checkpoint of a work directory, with
  old-style fields moved to where they live now (tokensparse.configs.migrate)."""
  mngr, latest = _latest(workdir)
  step = latest if step is None else step
  saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']
  return configs.migrate(saved)


def _collections(mngr: ocp.CheckpointManager, step: int, config) -> tuple[str, ...]:
  """The variable collections recorded with a checkpoint; checkpoints written before they were
  recorded hold those of the saved config's method."""
  if os.path.isdir(os.path.join(str(mngr.directory), str(step), 'meta')):
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    return tuple(meta['collections'])
  return methods.get(config.model.get('name', 'vit')).collections


def load_variables(path: str, config=None, *, step: int | None = None,
                   skip: tuple[str, ...] = ()) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(config, variables, info) from a tokensparse work directory (its latest checkpoint, or
  `step`) or from a timm / DeiT / vit_jax file (see the module docstring).

  For a work directory the saved config is returned (`config` is not needed); for a file,
  `config` says which architecture it holds and is returned as given. `skip` (files only):
  parameter prefixes left out of the conversion. info: 'format' ('tokensparse', 'timm',
  'vit_jax'), 'path', and for files the normalisation the checkpoint expects ('mean', 'std')."""
  if os.path.isdir(path):
    mngr, latest = _latest(path)
    step = latest if step is None else step
    saved = ml_collections.ConfigDict(load_config(path, step))
    state = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))['state']
    collections = _collections(mngr, step, saved)
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
