"""Checkpoints with orbax: the unreplicated train state plus the config, in the work directory.

Layout: `<workdir>/checkpoints/<step>/{state,config}`. Saves are atomic (orbax writes to a
temporary folder and renames it when complete), so an interrupted save never leaves a
checkpoint that fails to restore. Restoring uses an abstract target, so a run can resume on
another device count.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
  """The work directory's checkpoint manager; `create=False` (for readers) writes nothing and
  fails with FileNotFoundError where there is no checkpoints/ folder."""
  if not create and not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise FileNotFoundError(f'{workdir}: no checkpoint (expected {workdir}/checkpoints/<step>)')
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=options, item_names=('state', 'config'))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config) -> None:
  """Save `state` (unreplicated; copied to host) and the config JSON at `step`."""
  host_state = jax.tree.map(np.asarray, jax.device_get(state))
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(host_state),
      config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))))
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


def load_config(workdir_or_step_dir: str) -> dict:
  """The config JSON saved beside the latest checkpoint of a work directory."""
  mngr = manager(workdir_or_step_dir, create=False)
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f'no checkpoint under {workdir_or_step_dir}/checkpoints')
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']
