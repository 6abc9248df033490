"""Which method at which budget: every method fine-tuned from one converged dense model with one
recipe and three seeds, at three MAC budgets; accuracy against MACs and against measured speed.

    python benchmarks/compare.py               # the full comparison (hours; resumable)
    python benchmarks/compare.py --quick       # a smoke run of the same machinery (8 min, 2 cores)
    python benchmarks/compare.py --rows ats    # one method's lines beside the full table
    python benchmarks/compare.py --report_only # the tables from what has finished so far

Resumable: every run lives in its own work directory under runs/compare/ (runs/compare-quick/
for --quick). A finished run whose config is unchanged is skipped, an interrupted one resumes,
and one whose config changed is moved aside (<workdir>.replaced-<time>) and trained again.
Resumable on another machine too: every finished run's request config and result is kept in
the committed ledger docs/compare/ledger/ (<workdir>.json; the teacher's weights as
teacher.npz), with the off-the-shelf, Eventful and speed results and run.json (the commit the
comparison started at and the time of every session that worked on it). A run missing from
runs/compare/ whose ledger entry has the same config and start is taken from the ledger, not
trained again; the teacher's work directory is rebuilt from it (`--report_only` does that on a
fresh clone, so a row's committed config trains again at once). Stages:

1. The teacher: the README's default run (runs/vit_fashion_mnist, trained if missing), then the
   canvas model (Fashion-MNIST items at random positions on a 56x56 canvas, 64 patch tokens +
   cls) trained for --teacher_epochs from it with its own schedule, evaluated after every
   epoch. Its test-accuracy curve is drawn (docs/compare/teacher.png) and called converged
   when each of its last two epochs changed it by less than the seed-to-seed standard
   deviation of the dense reference row (two-sided: a drop fails as a rise does), or, failing
   that, when the curve's next point does: the dense reference, the one recipe on top of the
   teacher, changes it by less than that deviation on average (drawn on the curve).
2. The rows are the registry's: every method's `variants()` (tokensparse/methods/<name>/),
   e.g. DynamicViT and static selection, 2x2 pooling, TokenLearner, VTP, ToMe, EViT, ATS. For
   each budget (fractions of dense MACs, default 0.5, 0.65, 0.8) the method's `budget_knobs`
   setting whose MACs (by its own counter) come closest is chosen; a row more than 2 % from its
   budget is marked.
3. One fine-tuning recipe for every trained row, the dense reference included (RECIPE below):
   from the teacher, AdamW for --epochs, the teacher's own parameters at 0.1x the learning rate
   of the parameters the method adds (its predictors, learners, scores), a short warm-up to
   that low rate, cosine decay, no distillation (each method's distillation weights, its
   `distillation_fields`, set to 0; its other losses kept). VTP splits the epochs into sparsity
   training (half) and fine-tuning after pruning (half). Every trained row runs with seeds 0, 1
   and 2 (data order, augmentation, new parameters): mean and standard deviation. DynamicViT
   is also trained with its paper's recipe (distillation, backbone at 0.01x, frozen warm-up;
   configs/dynamic_vit/), as a labelled extra row. Training-free methods (ToMe, EViT, ATS) are
   also evaluated off the shelf.
4. Eventful Transformer, off the shelf on Moving Fashion-MNIST test clips (42 px frames at the
   centre of the 56 px canvas): the teacher's clip accuracy at capacities matched to the budgets
   in MACs per frame averaged over every frame of the clip, the dense first frame included.
5. Speed: each method at each budget (knob solved for the same MAC fraction on that model) on
   DeiT-S/16 at 224 px, fp32, inference, batch 32 (over all host devices) and batch 1, timed
   interleaved with dense DeiT-S in the same rounds (median of same-round ratios). VTP's widths
   are every layer pruned by the same rate (the speed depends on the widths only).

Writes the 'compare' section of BENCHMARKS.md, docs/compare/ (pareto.png, speed.png,
teacher.png, results.json and rows/<row>.json: each row's full config, metrics and accuracy;
`python train.py --config configs/saved.py:docs/compare/rows/<row>.json --workdir DIR` trains
that row again from runs/compare/teacher, which --report_only rebuilds on a fresh clone), and
ledger/ (above). --quick writes COMPARE.md and its pictures into runs/compare-quick/, leaving
BENCHMARKS.md alone. `--rows KEY,...` runs the teacher, the dense reference and only those lines
(a method added after the full run), into the section 'compare_KEY'; the Eventful table is
left out.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import sys
import time

from common import (README_MD, ROOT, device_description, git_revision, line_plot, table,
                    time_per_call, write_section)

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

sys.path.insert(0, ROOT)
from tokensparse import backbone, checkpoint, configs, evaluate, inference, methods  # noqa: E402
from tokensparse.methods.vtp import model as vtp  # noqa: E402
from tokensparse.methods.vtp import prune as vtp_prune  # noqa: E402
from tokensparse.train import loop  # noqa: E402

BUDGETS = (0.5, 0.65, 0.8)
SEEDS = (0, 1, 2)
TOLERANCE = 0.02       # a row's MACs within 2 % of its budget, or it is marked
LENGTH_FIELDS = ('num_epochs', 'total_steps', 'init_from')
# Every line of the comparison, from the registry: variant key -> (Method, Variant).
ROWS = {v.key: (m, v) for m in methods.REGISTRY.values() for v in m.variants()}
# Lines also trained with their paper's recipe (the variant's config as it is), labelled.
PAPER_RECIPES = ('dynamic_vit',)
# The one fine-tuning recipe of every trained row. The teacher ends its cosine schedule at
# lr 1e-5; its parameters continue at 1e-4 (0.1x), the method's new ones learn at 1e-3.
RECIPE = dict(lr=1e-3, min_lr=1e-6, weight_decay=0.05, grad_clip_norm=1.0, teacher_params=0.1,
              warmup_epochs=0.05, label_smoothing=0.1)


@dataclasses.dataclass
class Settings:
  """What one comparison runs: a full run, --quick, or the test's tiny version."""
  root: str                              # work directories of every run
  teacher: ml_collections.ConfigDict     # the dense model's config (trained first)
  teacher_before: tuple = ()             # (config, workdir) runs the teacher starts from
  epochs: float = 1.0                    # every row's training (steps: row_steps if > 0)
  row_steps: int = 0
  budgets: tuple = BUDGETS
  seeds: tuple = SEEDS
  paper_recipes: tuple = PAPER_RECIPES
  clips: int = 2000                      # Eventful test clips (0: no Eventful table)
  clip_config: str = 'default'
  speed_model: dict = dataclasses.field(default_factory=lambda: dict(
      variant='S/16', image_size=224, num_classes=1000))
  speed_batches: tuple = (32, 1)
  rounds: int = 3
  iters: int = 2
  report: str = ''                       # markdown file; '' = BENCHMARKS.md section 'compare'
  plot: str = os.path.normpath(os.path.join(ROOT, 'docs', 'compare', 'pareto.png'))
  rows: tuple = ()                       # the lines to run (keys of ROWS); () = all
  quick: bool = False                    # a smoke run: said in the report's heading
  epoch_steps: int = 60000 // 128        # the teacher's steps per epoch (its curve's x axis)

  @property
  def out(self) -> str:
    """Where the pictures and the row records go (beside the plot)."""
    return os.path.dirname(self.plot)

  @property
  def ledger(self) -> str:
    """The record of every finished run, kept beside the pictures (committed for a full run)."""
    return os.path.join(self.out, 'ledger')


def log(msg):
  print(f'[{time.strftime("%H:%M:%S")}] compare: {msg}', flush=True)


# ----------------------------------------------------------------------------- configs

def merge(base: ml_collections.ConfigDict, delta: dict) -> None:
  """Set every field of `delta` (nested dict) on `base`, adding groups `base` lacks."""
  for key, value in delta.items():
    if isinstance(value, dict) and key in base and isinstance(base[key], ml_collections.ConfigDict):
      merge(base[key], value)
    else:
      base[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def difference(a: dict, b: dict) -> dict:
  """The fields of `a` that `b` lacks or holds with another value (nested)."""
  out = {}
  for key, value in a.items():
    if key in LENGTH_FIELDS:
      continue
    if isinstance(value, dict) and isinstance(b.get(key), dict):
      sub = difference(value, b[key])
      if sub:
        out[key] = sub
    elif key not in b or b[key] != value:
      out[key] = value
  return out


def recipe(key: str) -> dict:
  """What the variant's recipe config adds to the dense canvas config (its model fields,
  losses and learning-rate groups), without the training length and the initialisation."""
  _, variant = ROWS[key]
  if variant.recipe is None:
    return {}
  path, _, arg = variant.recipe.partition(':')
  dense = configs.from_file('vit/fashion_mnist_canvas.py').to_dict()
  return difference(configs.from_file(path, arg).to_dict(), dense)


def method_model(model_cfg, key: str, knob: dict | None = None) -> ml_collections.ConfigDict:
  """The dense model config made into the variant `key`'s model: its method's name, the
  method's default fields, the variant's fields and the budget `knob` (model.<name> fields)."""
  method, variant = ROWS[key]
  c = ml_collections.ConfigDict(model_cfg.to_dict())
  c.name = method.name
  if method.defaults() is not None:
    c[method.name] = method.fields(c)
    c[method.name].update({**variant.fields, **(knob or {})})
  return c


def dense_model(model_cfg) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**model_cfg.to_dict(), 'name': 'vit'})


def macs(model_cfg, channels: int) -> float | None:
  """MACs of a model config in inference mode; None where the setting is invalid."""
  try:
    configs.validate_model(ml_collections.ConfigDict({'model': model_cfg}))
  except ValueError:
    return None
  return methods.macs(methods.build(model_cfg), channels)['total']


def closest(fractions: list[tuple[object, float | None]], budget: float) -> tuple[object, float]:
  """The (setting, MAC fraction) pair nearest the budget; None fractions (invalid) are skipped."""
  valid = [(k, f) for k, f in fractions if f is not None]
  if not valid:
    raise ValueError(f'no valid setting for budget {budget}')
  return min(valid, key=lambda kf: abs(kf[1] - budget))


def solve(model_cfg, key: str, budget: float, channels: int) -> tuple[dict, float]:
  """The variant's knob setting whose MAC fraction is closest to `budget`: (fields, fraction)."""
  method, _ = ROWS[key]
  dense = macs(dense_model(model_cfg), channels)
  fractions = []
  for knob in method.budget_knobs(backbone.backbone_kwargs(model_cfg)):
    m = macs(method_model(model_cfg, key, knob), channels)
    fractions.append((knob, None if m is None else m / dense))
  return closest(fractions, budget)


def vtp_fractions(model_cfg) -> list[tuple[float, float]]:
  """(rate, MAC fraction) of `vtp_model` at rates 0, 0.01, .. 0.95: for `closest`."""
  dense = macs(model_cfg, 3)
  return [(float(r), macs(vtp_model(model_cfg, r), 3) / dense) for r in np.linspace(0.0, 0.95, 96)]


def vtp_model(model_cfg, rate: float) -> ml_collections.ConfigDict:
  """A ViT with every layer's attention and MLP channels pruned by `rate` (for speed only)."""
  kw = backbone.backbone_kwargs(model_cfg)
  head_dim = kw['width'] // kw['num_heads']
  return ml_collections.ConfigDict({
      **model_cfg.to_dict(), 'head_dim': [max(1, round(head_dim * (1 - rate)))] * kw['depth'],
      'mlp_dim': [max(1, round(kw['mlp_dim'] * (1 - rate)))] * kw['depth'],
      'attn_scale': head_dim ** -0.5})


def method_part(key: str) -> dict:
  """What the one recipe takes from the variant's config: its model and loss fields (the method
  and its own losses), with every distillation weight set to 0."""
  method, _ = ROWS[key]
  part = {k: v for k, v in recipe(key).items() if k in ('model', 'loss')}
  losses = part.get('loss', {}).get(method.name)
  if losses is not None or method.distillation_fields:
    filled = (method.loss_defaults() or ml_collections.ConfigDict()).to_dict()
    filled.update(losses or {})
    filled.update({f: 0.0 for f in method.distillation_fields})
    part.setdefault('loss', {})[method.name] = filled
  return part


def new_parameters(model_cfg, channels: int) -> list[str]:
  """The '/'-joined parameter paths a method's model has and the dense model lacks, cut at the
  first missing name: what the method adds (predictors, learners, scores)."""
  def paths(c):
    kw = backbone.backbone_kwargs(c)
    x = jnp.zeros((1, kw['image_size'], kw['image_size'], channels))
    shapes = jax.eval_shape(methods.build(c).init, jax.random.PRNGKey(0), x)['params']
    return set(traverse_util.flatten_dict(shapes))
  dense = paths(dense_model(model_cfg))
  prefixes = {p[:i] for p in dense for i in range(1, len(p) + 1)}
  out = set()
  for path in paths(model_cfg) - dense:
    i = next(i for i in range(1, len(path) + 1) if path[:i] not in prefixes)
    out.add('/'.join(path[:i]))
  return sorted(out)


def one_recipe(c, new: list[str]) -> None:
  """Set the one fine-tuning recipe (RECIPE) on config `c`: new parameters at the full
  learning rate, the teacher's at RECIPE['teacher_params'] times it."""
  with c.unlocked():
    c.optimizer.update(lr=RECIPE['lr'], min_lr=RECIPE['min_lr'],
                       weight_decay=RECIPE['weight_decay'],
                       grad_clip_norm=RECIPE['grad_clip_norm'])
    groups = [('^(' + '|'.join(new) + ')(/|$)', 1.0)] if new else []
    c.optimizer.lr_groups = groups + [('.*', RECIPE['teacher_params'])]
    c.warmup_epochs = RECIPE['warmup_epochs']
    c.warmup_steps = 0
    c.label_smoothing = RECIPE['label_smoothing']


# ----------------------------------------------------------------------------- training rows

def length(c, settings: Settings) -> None:
  with c.unlocked():
    c.num_epochs = settings.epochs
    c.total_steps = settings.row_steps


def finished(workdir: str) -> dict | None:
  """The record of a finished run (compare.json: accuracy, examples, config, ...), or None."""
  path = os.path.join(workdir, 'compare.json')
  return json.load(open(path)) if os.path.exists(path) else None


def changed(saved: dict, config) -> dict:
  """The fields that differ between a run's saved request and `config` (HARMLESS ones aside;
  both as JSON reads them back, so a tuple equals its list)."""
  return loop.config_changes(json.loads(json.dumps(saved)),
                             json.loads(json.dumps(config.to_dict())))


def trained_with(workdir: str, config) -> dict | None:
  """How the config a run was trained with differs from `config` (None: nothing trained yet).
  Read from its newest checkpoint, completed as the trainer completes it, else from the
  request.json the comparison wrote when it started the run."""
  try:
    saved = checkpoint.load_config(workdir)
  except (FileNotFoundError, OSError, ValueError):
    saved = None
  if saved is not None:
    full = configs.complete(loop.adopt_model_fields(config))
    return loop.config_changes(saved, loop.config_dict(full))
  request = os.path.join(workdir, 'request.json')
  return changed(json.load(open(request)), config) if os.path.exists(request) else None


def set_aside(workdir: str, why: str) -> None:
  """Move a run trained with another config out of the way (kept, never deleted)."""
  dest = f'{workdir}.replaced-{time.strftime("%Y%m%d-%H%M%S")}'
  while os.path.exists(dest):
    dest += '+'
  shutil.move(workdir, dest)
  log(f'{os.path.basename(workdir)}: {why}; moved to {os.path.basename(dest)}, training again')


def origin(config) -> dict | None:
  """What a run starts from: the record of its init_from run (compare.json, or source.json of a
  pruned model), so a row trained from an older teacher is told apart from one trained from
  the current teacher (init_from's path itself may stay the same)."""
  path = configs.resolve(config.get('init_from', {}).get('path') or '')
  for name in ('compare.json', 'source.json'):
    if path and os.path.exists(os.path.join(path, name)):
      return json.load(open(os.path.join(path, name)))
  return None


def new_start(done: dict, config) -> bool:
  """Whether the run `config` starts from was trained again since `done` was recorded (only
  where that run is here to tell: a teacher rebuilt from the ledger has no start of its own)."""
  start = origin(config)
  return start is not None and done.get('start') != start


def why_stale(workdir: str, config, done: dict | None) -> str | None:
  """Why the run in `workdir` cannot stand for `config` (None: it can, or nothing is there):
  another config, no config to check, or a start that was trained again."""
  diff = trained_with(workdir, config) if os.path.isdir(workdir) else None
  if diff:
    return 'its config changed (' + '; '.join(
        f'{k}: {a!r} -> {b!r}' for k, (a, b) in sorted(diff.items())[:4]) + ')'
  if diff is None and done:  # a result without any config to check it against
    return 'it has no recorded config'
  if done and new_start(done, config):
    return 'the run it starts from was trained again'
  return None


# ----------------------------------------------------------------------------- the ledger

def entry_path(ledger: str, workdir: str) -> str:
  return os.path.join(ledger, os.path.basename(workdir) + '.json')


def remember(ledger: str, workdir: str, config, done: dict) -> None:
  """Keep a finished run's request config and result in the ledger (unchanged ones as they are:
  the teacher's entry carries more)."""
  path = entry_path(ledger, workdir)
  entry = json.load(open(path)) if os.path.exists(path) else {}
  if entry.get('done') == done and not changed(entry.get('config', {}), config):
    return
  os.makedirs(ledger, exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'config': json.loads(json.dumps(config.to_dict())), 'done': done}, f, indent=1)


def recall(ledger: str, workdir: str, config) -> dict | None:
  """The ledger's result of the run `workdir` where it was trained with `config` from the same
  start; None where there is no entry or it was trained otherwise."""
  path = entry_path(ledger, workdir)
  if not os.path.exists(path):
    return None
  entry = json.load(open(path))
  if changed(entry['config'], config) or new_start(entry['done'], config):
    return None
  return entry['done']


def train(config, workdir: str, label: str, state: 'Journal | None' = None,
          ledger: str = '', use_ledger: bool = True) -> dict:
  """Train (or resume) and evaluate once; a finished run with the same config and the same
  starting run is read back, one with another config or start is set aside and trained
  again. With a `ledger`, a finished run is kept in it, and a run that is not here is taken
  from it where it was trained with the same config and start (unless not `use_ledger`: a
  run whose checkpoint is needed)."""
  done = finished(workdir)
  why = why_stale(workdir, config, done)
  if why:
    set_aside(workdir, why)
    done = None
  if done:
    log(f'{label}: done before ({100 * done["accuracy"]:.2f} %), skipped')
    if ledger:
      remember(ledger, workdir, config, done)
    return done
  kept = (recall(ledger, workdir, config)
          if ledger and use_ledger and not os.path.isdir(workdir) else None)
  if kept:
    log(f'{label}: kept in {portable(ledger)} ({100 * kept["accuracy"]:.2f} %), not trained '
        'again')
    return kept
  log(f'{label}: training in {workdir}')
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'request.json'), 'w') as f:
    json.dump(config.to_dict(), f, indent=1)
  t0 = time.time()
  result = loop.train_and_evaluate(config, workdir)
  if result.get('preempted'):
    raise SystemExit('preempted: run the same command again to resume')
  done = {'accuracy': float(result['accuracy']), 'examples': int(result['count']),
          'eval_loss': float(result.get('loss', float('nan'))),
          'train_seconds': round(time.time() - t0, 1), 'commit': git_revision(),
          'start': origin(config)}
  with open(os.path.join(workdir, 'compare.json'), 'w') as f:
    json.dump(done, f)
  if ledger:
    remember(ledger, workdir, config, done)
  if state is not None:
    state.save()
  return done


class Journal:
  """<ledger>/run.json: the commit the comparison started at and every session's time, so a
  report can name both across resumes."""

  def __init__(self, ledger: str, record: bool = True):
    self.path, self.record = os.path.join(ledger, 'run.json'), record
    self.data = (json.load(open(self.path)) if os.path.exists(self.path) else
                 {'started_commit': git_revision(), 'started': time.strftime('%Y-%m-%d %H:%M'),
                  'sessions': []})
    self.t0 = time.time()
    if record:  # a --report_only look is not a session of the comparison
      self.data['sessions'].append({'commit': git_revision(),
                                    'started': time.strftime('%Y-%m-%d %H:%M'), 'seconds': 0.0})
    self.save()

  def save(self) -> None:
    if not self.record:
      return
    self.data['sessions'][-1]['seconds'] = round(time.time() - self.t0, 1)
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    with open(self.path, 'w') as f:
      json.dump(self.data, f, indent=1)

  @property
  def seconds(self) -> float:
    return sum(s['seconds'] for s in self.data['sessions'])


def teacher(settings: Settings, state: Journal | None = None) -> str:
  """The teacher's work directory: trained (after the runs it starts from), read back, or
  rebuilt from the ledger where it is not here; kept in the ledger with its weights."""
  workdir = os.path.join(settings.root, 'teacher')
  if not os.path.isdir(workdir):
    restore_teacher(settings.ledger, workdir, settings.teacher)
  if finished(workdir) is None:
    for config, start in settings.teacher_before:
      train(config, start, f'teacher\'s start ({os.path.basename(start)})', state)
  train(settings.teacher, workdir, 'teacher', state, ledger=settings.ledger, use_ledger=False)
  keep_teacher(settings.ledger, workdir)
  return workdir


def keep_teacher(ledger: str, workdir: str) -> None:
  """Add to the teacher's ledger entry what rebuilding its work directory takes: its weights
  (teacher.npz), the config its checkpoint holds, the step and its evaluations (the curve)."""
  path = entry_path(ledger, workdir)
  entry = json.load(open(path))
  if 'saved_config' in entry and os.path.exists(os.path.join(ledger, 'teacher.npz')):
    return
  saved, variables, info = checkpoint.load_variables(workdir)
  flat = traverse_util.flatten_dict(jax.device_get(variables['params']))
  np.savez_compressed(os.path.join(ledger, 'teacher.npz'),
                      **{'/'.join(k): np.asarray(v) for k, v in flat.items()})
  metrics = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  entry.update(saved_config=saved.to_dict(), step=info['step'],
               evaluations=[m for m in metrics if m.get('split') == 'eval'])
  with open(path, 'w') as f:
    json.dump(entry, f, indent=1)


def restore_teacher(ledger: str, workdir: str, config) -> bool:
  """Rebuild the teacher's work directory (one checkpoint of its weights, its config, result
  and evaluations) from the ledger where the ledger's teacher was trained with `config`."""
  path, weights = entry_path(ledger, workdir), os.path.join(ledger, 'teacher.npz')
  if not (os.path.exists(path) and os.path.exists(weights)):
    return False
  entry = json.load(open(path))
  diff = changed(entry['config'], config)
  if diff or 'saved_config' not in entry:
    log(f'the teacher in {portable(ledger)} was trained with another config '
        f'({", ".join(sorted(diff)[:4]) or "no checkpoint config"}); not rebuilt')
    return False
  with np.load(weights) as f:
    params = traverse_util.unflatten_dict({tuple(k.split('/')): f[k] for k in f.files})
  checkpoint.save(checkpoint.manager(workdir), entry['step'], {'params': params},
                  ml_collections.ConfigDict(entry['saved_config']))
  for name, text in (('request.json', json.dumps(entry['config'], indent=1)),
                     ('compare.json', json.dumps(entry['done'])),
                     ('metrics.jsonl', ''.join(json.dumps(m) + '\n'
                                               for m in entry['evaluations']))):
    with open(os.path.join(workdir, name), 'w') as f:
      f.write(text)
  log(f'teacher: rebuilt in {portable(workdir)} from {portable(ledger)} '
      f'({100 * entry["done"]["accuracy"]:.2f} %)')
  return True


def teacher_curve(workdir: str, steps_per_epoch: int) -> list[tuple[float, float]]:
  """(epoch, test accuracy %) of every evaluation in the teacher's metrics.jsonl."""
  out = []
  for line in open(os.path.join(workdir, 'metrics.jsonl')):
    m = json.loads(line)
    if m.get('split') == 'eval':
      out.append((m['step'] / steps_per_epoch, 100 * m['accuracy']))
  return out


def portable(path: str) -> str:
  """A path inside the repository relative to it (configs resolve it from any directory)."""
  rel = os.path.relpath(path, ROOT)
  return path if rel.startswith('..') else rel


def from_teacher(settings: Settings, init: str, seed: int, model_fields: tuple = ()):
  """The teacher's config, started from `init`, trained for a row's length with `seed`."""
  c = copy.deepcopy(settings.teacher)
  with c.unlocked():
    c.init_from = ml_collections.ConfigDict(dict(path=portable(init), skip=(),
                                                 model_fields=model_fields))
    c.seed = seed
    c.eval_every_steps = 0
  length(c, settings)
  return c


def row_config(settings: Settings, key: str, knob: dict | None, init: str, seed: int,
               paper: bool = False, channels: int = 1):
  """A row's training config: the one recipe with the method's model and losses, or (`paper`)
  the variant's own config recipe as it stands. `key` 'dense' is the dense reference."""
  c = from_teacher(settings, init, seed)
  with c.unlocked():
    if key != 'dense':
      merge(c, recipe(key) if paper else method_part(key))
      c.model = method_model(c.model, key, knob)
  if not paper:
    one_recipe(c, [] if key == 'dense' else new_parameters(c.model, channels))
  return c


def run_vtp(settings: Settings, teacher_dir: str, budgets: list[float], channels: int,
            seed: int, fit) -> dict:
  """Sparsity training (half the epochs), then per budget: prune at the rate whose pruned model
  comes closest to the budget, fine-tune (the other half). `fit(config, workdir, label,
  use_ledger)` trains or reads back a run (None: not finished).
  -> {budget: (result, rate, frac, config)}."""
  half = dataclasses.replace(settings, epochs=settings.epochs / 2,
                             row_steps=settings.row_steps // 2)
  sparse_dir = os.path.join(settings.root, f'vtp_sparse_s{seed}')
  c = from_teacher(half, teacher_dir, seed)
  with c.unlocked():
    configs.use_method(c, 'vtp')
  one_recipe(c, new_parameters(c.model, channels))
  if not os.path.isdir(sparse_dir):  # every stage of this seed in the ledger: nothing to run
    kept = recall_vtp(half, sparse_dir, c, budgets, seed)
    if kept:
      return kept
  if fit(c, sparse_dir, f'VTP sparsity training, seed {seed}', use_ledger=False) is None:
    return {}
  config, params, scores = vtp_prune.load_scored(sparse_dir)
  dense_macs = macs(dense_model(config.model), channels)
  fractions = []  # pruned model's MAC fraction per rate, by the learned scores
  for knob in methods.get('vtp').budget_knobs(backbone.backbone_kwargs(config.model)):
    _, fields = vtp.prune(params, scores, knob['rate'], config.model.get('attn_scale'))
    fractions.append((knob['rate'], macs(vtp_prune.pruned_config(config, fields).model,
                                         channels) / dense_macs))
  out = {}
  for budget in budgets:
    rate, frac = closest(fractions, budget)
    pruned_dir = os.path.join(settings.root, f'vtp_pruned_{budget}_s{seed}')
    source = {'sparse': finished(sparse_dir), 'rate': round(rate, 4), 'fraction': frac}
    stamp = os.path.join(pruned_dir, 'source.json')
    if os.path.isdir(pruned_dir) and (not os.path.exists(stamp) or
                                      json.load(open(stamp)) != source):
      set_aside(pruned_dir, 'it was pruned from another sparsity run or rate')
    if not os.path.isdir(os.path.join(pruned_dir, 'checkpoints')):
      vtp_prune.main(['--workdir', sparse_dir, '--rate', f'{rate:.4f}', '--out', pruned_dir])
      with open(stamp, 'w') as f:
        json.dump(source, f)
    ft = vtp_finetune(half, budget, seed)
    result = fit(ft, os.path.join(settings.root, f'vtp_{budget}_s{seed}'),
                 f'VTP at {budget}, seed {seed}')
    if result is not None:
      out[budget] = (result, rate, frac, ft)
  return out


def vtp_finetune(half: Settings, budget: float, seed: int):
  """The fine-tuning config of the model pruned for `budget` (its widths come from the pruned
  work directory when it runs)."""
  pruned_dir = os.path.join(half.root, f'vtp_pruned_{budget}_s{seed}')
  ft = from_teacher(half, pruned_dir, seed, model_fields=('head_dim', 'mlp_dim', 'attn_scale'))
  one_recipe(ft, [])
  return ft


def recall_vtp(half: Settings, sparse_dir: str, sparse_config, budgets, seed: int) -> dict:
  """VTP's results of `seed` from the ledger ({} unless its sparsity run and every budget's
  fine-tuning from it are there with the same configs)."""
  sparse = recall(half.ledger, sparse_dir, sparse_config)
  out = {}
  for budget in budgets if sparse else ():
    ft = vtp_finetune(half, budget, seed)
    path = entry_path(half.ledger, os.path.join(half.root, f'vtp_{budget}_s{seed}'))
    entry = json.load(open(path)) if os.path.exists(path) else None
    start = (entry['done'].get('start') if entry else None) or {}
    if not entry or changed(entry['config'], ft) or start.get('sparse') != sparse \
        or 'fraction' not in start:
      return {}
    out[budget] = (entry['done'], start['rate'], start['fraction'], ft)
  if out:
    log(f'VTP, seed {seed}: sparsity training and fine-tuning at '
        f'{", ".join(map(str, budgets))} kept in {portable(half.ledger)}, not trained again')
  return out


# Lines trained in stages of their own (Variant.recipe None): key -> runner(settings,
# teacher_dir, budgets, channels, seed, fit) -> {budget: (result, rate, frac, config)}.
STAGED = {'vtp': run_vtp}


# ----------------------------------------------------------------------------- eventful, speed

def eventful_rows(settings: Settings, teacher_dir: str, cached_only: bool = False) -> list[dict]:
  """Clip accuracy of the teacher run as an Eventful Transformer at capacities matched to the
  budgets in MACs per frame averaged over the clip (the dense first frame included), and dense
  (every token). Kept in the ledger with the teacher's record (another teacher: measured
  again)."""
  from tokensparse.data import moving_fashion_mnist  # pylint: disable=g-import-not-at-top
  cache = os.path.join(settings.ledger, 'eventful.json')
  saved = json.load(open(cache)) if os.path.exists(cache) else {}
  fresh = saved.get('teacher') == finished(teacher_dir)
  if fresh or cached_only:
    return saved['rows'] if fresh else []
  predictor = inference.load(teacher_dir)
  kw = backbone.backbone_kwargs(predictor.config.model)
  clips, labels = moving_fashion_mnist.load_clips(
      kw['image_size'], settings.clips, data_dir=predictor.config.data.data_dir,
      config=settings.clip_config)
  n = predictor.model.num_prefix + predictor.model.num_patches
  dense_macs = methods.macs(predictor.model, predictor.channels)['total']
  eventful = methods.get('eventful')

  frames = clips.shape[1]

  def frame_macs(capacity):  # per frame, the dense first frame included, by the counter
    model_cfg = ml_collections.ConfigDict({**predictor.config.model.to_dict(), 'name': 'eventful',
                                           'eventful': {'capacity': capacity}})
    later = methods.macs(methods.build(model_cfg), predictor.channels)['total']
    return (dense_macs + (frames - 1) * later) / frames

  rows = []
  for budget in (1.0,) + tuple(settings.budgets):
    # The largest capacity within the budget's MACs per frame.
    fits = [k['capacity'] for k in eventful.budget_knobs(kw)
            if frame_macs(k['capacity']) <= budget * dense_macs]
    r = n if budget == 1.0 else max(fits or [1])
    fn = eventful.clip_runner(predictor, capacity=r)
    correct, frame_correct = 0, 0
    for i in range(0, len(clips), 100):
      logits = np.asarray(fn(clips[i:i + 100]))                 # [b, T, classes]
      correct += int((logits.mean(1).argmax(-1) == labels[i:i + 100]).sum())
      frame_correct += int((logits.argmax(-1) == labels[i:i + 100, None]).sum())
    macs = frame_macs(r)
    rows.append({'budget': budget, 'capacity': r, 'tokens': n, 'frames': frames,
                 'mac_fraction': macs / dense_macs,
                 'clip_accuracy': 100 * correct / len(clips),
                 'frame_accuracy': 100 * frame_correct / (len(clips) * clips.shape[1])})
    log(f'Eventful r={r}: clip accuracy {rows[-1]["clip_accuracy"]:.2f} %')
  json.dump({'teacher': finished(teacher_dir), 'rows': rows}, open(cache, 'w'), indent=1)
  return rows


def speed(settings: Settings, plan: list[tuple[str, float]], cached_only: bool = False) -> dict:
  """{(method, budget): [speed-up b32, speed-up b1, MAC fraction, setting]} of each planned
  model (knob solved on the speed backbone, or VTP's rate) timed in rounds against dense;
  ('dense', 1.0) also holds dense's images/s at each batch."""
  cache = os.path.join(settings.ledger, 'speed.json')
  what = {'plan': [list(p) for p in plan], 'model': settings.speed_model,
          'batches': list(settings.speed_batches)}
  saved = json.load(open(cache)) if os.path.exists(cache) else {}
  if saved.get('what') == what or (cached_only and saved):
    return {tuple(json.loads(k)): v for k, v in saved['results'].items()}
  if cached_only:
    return {}
  base = ml_collections.ConfigDict(dict(name='vit', dtype='float32', **settings.speed_model))
  kw = backbone.backbone_kwargs(base)
  size = kw['image_size']
  models = {('dense', 1.0): methods.build(base)}
  settings_of = {('dense', 1.0): 'all tokens'}
  dense = macs(base, 3)
  fractions = vtp_fractions(base)
  for key, budget in plan:
    if ROWS[key][1].recipe is None:  # a pruned model: the same rate in every layer
      rate = closest(fractions, budget)[0]
      c = vtp_model(base, rate)
      settings_of[(key, budget)] = f'rate {rate:.2f}'
    else:
      knob, _ = solve(base, key, budget, 3)
      c = method_model(base, key, knob)
      settings_of[(key, budget)] = knob_text(knob)
    models[(key, budget)] = methods.build(c)
  fracs = {k: methods.macs(m, 3)['total'] / dense for k, m in models.items()}
  results = {k: [None, None, fracs[k], settings_of[k]] for k in models}
  dense_rate = []
  n_dev = jax.local_device_count()
  variables = {key: jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
               for key, model in models.items()}
  for bi, batch in enumerate(settings.speed_batches):
    fns = {}
    for key, model in models.items():
      if batch > 1 and batch % n_dev == 0:
        f = jax.pmap(lambda v, x, m=model: m.apply(v, x)[0], in_axes=(None, 0))
        x = jax.random.normal(jax.random.PRNGKey(1), (n_dev, batch // n_dev, size, size, 3))
      else:
        f = jax.jit(lambda v, x, m=model: m.apply(v, x)[0])
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, size, size, 3))
      fns[key] = (f, variables[key], x)
      jax.block_until_ready(f(variables[key], x))  # compile
    times = {k: [] for k in fns}
    for r in range(settings.rounds):
      for key, (f, v, x) in fns.items():
        times[key].append(time_per_call(f, v, x, warmup=1, iters=settings.iters))
      log(f'speed, batch {batch}, round {r + 1}/{settings.rounds}: dense '
          f'{batch / times[("dense", 1.0)][-1]:.1f} img/s')
    dense_t = np.array(times[('dense', 1.0)])
    dense_rate.append(float(np.median(batch / dense_t)))
    for key, t in times.items():
      results[key][bi] = float(np.median(dense_t / np.array(t)))
  results[('dense', 1.0)].append(dense_rate)
  json.dump({'what': what, 'results': {json.dumps(list(k)): v for k, v in results.items()}},
            open(cache, 'w'), indent=1)
  return results


# ----------------------------------------------------------------------------- aggregation

def knob_text(knob: dict) -> str:
  return ', '.join(f'{k}={v}' for k, v in knob.items() if k != 'prune_layers')


def mean_sd(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for one value)."""
  v = np.asarray(values, float)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def exact(line: dict) -> bool:
  """A line without training noise: an evaluation of the teacher (off the shelf, or itself)."""
  return line.get('recipe') in ('shelf', 'teacher')


def gap(a: dict, b: dict) -> tuple[float, float]:
  """(mean of a - mean of b, twice the standard error of that difference): a gap is beyond
  seed noise when its size exceeds the second number; nan while a trained line has fewer than
  two seeds (its spread is unknown)."""
  if any(not exact(x) and x['n'] < 2 for x in (a, b)):
    return a['mean'] - b['mean'], float('nan')
  se = np.sqrt(a['sd'] ** 2 / a['n'] + b['sd'] ** 2 / b['n'])
  return a['mean'] - b['mean'], 2 * float(se)


def noise_verdict(a: dict, b: dict) -> str:
  """Whether the gap between two lines is 'within noise' or 'beyond noise' (see `gap`)."""
  diff, noise = gap(a, b)
  return ('one seed, no verdict' if np.isnan(noise) else
          'within noise' if abs(diff) <= noise else 'beyond noise')


def lines_of(records: list[dict]) -> list[dict]:
  """Seeds of one (method, budget, recipe) pooled into a line: mean, sd and n of accuracy."""
  groups: dict[tuple, list[dict]] = {}
  for r in records:
    groups.setdefault((r['key'], r['budget'], r['recipe']), []).append(r)
  out = []
  for (key, budget, rec), rs in groups.items():
    rs = sorted(rs, key=lambda r: r['seed'])
    mean, sd = mean_sd([r['accuracy'] for r in rs])
    out.append({**{k: rs[0][k] for k in ('key', 'budget', 'recipe', 'label', 'setting',
                                          'mac_fraction', 'mmacs')},
                'mean': mean, 'sd': sd, 'n': len(rs), 'seeds': [r['seed'] for r in rs],
                'accuracies': [r['accuracy'] for r in rs]})
  order = ['dense'] + list(ROWS)
  out.sort(key=lambda r: (r['key'] != 'dense', r['budget'], order.index(r['key']),
                          ('shelf', 'one', 'paper').index(r['recipe'])))
  return out


# How a row's recipe shows after its method's label.
RECIPE_TAIL = {'one': '', 'shelf': ', off the shelf', 'paper': ', paper recipe'}


def off_budget(line: dict) -> bool:
  return line['key'] != 'dense' and abs(line['mac_fraction'] / line['budget'] - 1) > TOLERANCE


def convergence(curve: list[tuple[float, float]], sd: float | None,
                after: float | None = None) -> tuple[list[float], str]:
  """The changes of the teacher's last two epochs and the verdict against the seed spread `sd`
  (two-sided). `after`: the mean change that the one recipe makes from the teacher's end (the
  dense reference, every seed), the curve's next point. When the last two epochs fail, the
  teacher still counts as converged if that next point moves it by less than `sd`: the training
  every row gets on top of the teacher changes the dense model by less than seed noise."""
  if len(curve) < 3:
    return [], 'not judged: fewer than three evaluations of the teacher'
  changes = [curve[-1][1] - curve[-2][1], curve[-2][1] - curve[-3][1]]
  if not sd:
    return changes, 'not judged yet: the dense reference needs two seeds for a spread'
  if all(abs(c) < sd for c in changes):
    return changes, 'converged'
  if after is not None and abs(after) < sd:
    return changes, ('converged once continued: its own schedule ended moving more than the '
                     'seed spread, the recipe on top of it (the dense reference) moves it less')
  return changes, 'NOT converged by this test: train the teacher longer (--teacher_epochs)'


def at_speed(line_pts: list[tuple[float, float]], target: float) -> float | None:
  """Accuracy at `target` speed-up by linear interpolation between a method's measured points
  (None outside their range)."""
  pts = sorted(line_pts)
  for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
    if x0 <= target <= x1 and x1 > x0:
      return y0 + (y1 - y0) * (target - x0) / (x1 - x0)
  return next((y for x, y in pts if abs(x - target) < 1e-9), None)


def readme_which_when(lines: list[dict], budgets, progress: tuple[int, int]) -> str:
  """The README's "which method when": the report's ranking, generated, never written by hand,
  so that each of its claims follows from the table beyond seed noise."""
  done, planned = progress
  return (('*Generated by `python benchmarks/compare.py` from the table in BENCHMARKS.md'
           + (f'; partial: {done} of its {planned} trained runs have finished' if done < planned
              else '') + '.* Mean test accuracy after the one recipe, per budget (fraction of '
           'dense MACs); a line is "lower" only when its gap to the best exceeds twice the '
           'standard error of the difference, and a line with one seed is not ranked; rows of '
           'another recipe (off the shelf, a paper\'s recipe) are compared with the best, '
           'not ranked.\n\n')
          + '\n'.join(which_when(lines, budgets) or ['- Nothing is ranked yet.']))


def which_when(lines: list[dict], budgets) -> list[str]:
  """Per budget: the best line by mean accuracy (one recipe), the lines within seed noise of
  it, and the rest (lower beyond noise)."""
  out = []
  for budget in budgets:
    pool = [ln for ln in lines if ln['budget'] == budget and ln['recipe'] == 'one']
    waiting = [ln['label'] for ln in pool if ln['n'] < 2]
    pool = [ln for ln in pool if ln['n'] >= 2]
    if not pool:
      if waiting:
        out.append(f'- **{budget:g} of dense MACs**: not ranked yet; every line has fewer than '
                   'two seeds.')
      continue
    best = max(pool, key=lambda ln: ln['mean'])
    tied = [ln for ln in pool if ln is not best and noise_verdict(ln, best) == 'within noise']
    lower = [ln for ln in pool if ln is not best and ln not in tied]
    text = (f'- **{budget:g} of dense MACs**: {best["label"]} is highest '
            f'({best["mean"]:.2f} ± {best["sd"]:.2f} %, {best["n"]} seed(s))')
    text += ('; within seed noise of it: ' + ', '.join(
        f'{ln["label"]} ({ln["mean"] - best["mean"]:+.2f})' for ln in tied) if tied else
             '; every other line is lower beyond seed noise')
    if tied and lower:
      text += '; lower beyond noise: ' + ', '.join(ln['label'] for ln in lower)
    if waiting:
      text += '; not ranked yet (one seed so far): ' + ', '.join(waiting)
    # Rows of another recipe (off the shelf, a paper's recipe) are not ranked with the one
    # recipe, but a reader compares them with its best: say where each stands, with its noise.
    others = [f'{ln["label"]}{RECIPE_TAIL[ln["recipe"]]} ({ln["mean"] - best["mean"]:+.2f}, '
              f'{noise_verdict(ln, best)})'
              for ln in lines if ln['budget'] == budget and ln['recipe'] != 'one']
    if others:
      text += f'; other recipes against {best["label"]}: ' + ', '.join(others)
    out.append(text + '.')
  return out


# ----------------------------------------------------------------------------- pictures

PALETTE = ((31, 119, 180), (148, 103, 189), (140, 86, 75), (44, 160, 44), (214, 39, 40),
           (255, 127, 14), (23, 190, 207), (227, 119, 194), (188, 189, 34), (127, 127, 127))
# Dense in black, then every line of the registry in its order.
COLOURS = {'dense': (0, 0, 0), **{k: PALETTE[i % len(PALETTE)] for i, k in enumerate(ROWS)}}


def plots(settings: Settings, lines: list[dict], curve, speed_of: dict) -> dict:
  """pareto.png (accuracy vs MACs: trained, off the shelf; speed-up vs MAC reduction),
  speed.png (accuracy vs measured images/s at batch 32 and 1) and teacher.png (the teacher's
  test accuracy after each epoch); error bars: the seeds' standard deviation."""
  present = [k for k in ['dense'] + list(ROWS) if any(ln['key'] == k for ln in lines)]
  label = {k: 'dense (one recipe)' if k == 'dense' else ROWS[k][1].label for k in present}

  def series(key, rec, xy):
    pts = sorted((xy(ln), ln['mean'], ln['sd']) for ln in lines
                 if ln['key'] == key and ln['recipe'] == rec and xy(ln) is not None)
    return [{'label': label[key] + RECIPE_TAIL[rec], 'colour': COLOURS[key], 'dashed': rec != 'one',
             'x': [p[0] for p in pts], 'y': [p[1] for p in pts],
             'err': [p[2] for p in pts]}] if pts else []

  def timed(bi):
    return lambda ln: (speed_of[ln['key'], ln['budget']][bi] * speed_of[('dense', 1.0)][4][bi]
                       if (ln['key'], ln['budget']) in speed_of else None)
  macs = lambda ln: ln['mac_fraction']
  # Off-the-shelf rows get their own panel, beside the same methods trained: ATS off the shelf
  # sits 30 points lower and would flatten every trained line into one band.
  shelf = [k for k in present if any(ln['key'] == k and ln['recipe'] == 'shelf' for ln in lines)]
  panels = [{'title': 'test accuracy (%; bars: sd of seeds; dashed: paper recipe) vs MACs',
             'xlabel': 'MACs / dense', 'ylabel': 'accuracy %',
             'series': [s for k in present for rec in ('one', 'paper')
                        for s in series(k, rec, macs)]}]
  if shelf:
    panels.append({'title': 'off the shelf (dashed) and trained, vs MACs',
                   'xlabel': 'MACs / dense', 'ylabel': 'accuracy %',
                   'series': [s for k in shelf for rec in ('one', 'shelf')
                              for s in series(k, rec, macs)]})
  spd = []
  for key in present:
    pts = sorted((1 / speed_of[ln['key'], ln['budget']][2], speed_of[ln['key'], ln['budget']][0])
                 for ln in lines if ln['key'] == key and ln['recipe'] == 'one'
                 and (ln['key'], ln['budget']) in speed_of)
    if pts:
      spd.append({'label': label[key], 'colour': COLOURS[key], 'x': [p[0] for p in pts],
                  'y': [p[1] for p in pts]})
  if spd:
    top = max(max(s['x'] + s['y']) for s in spd)
    spd.append({'label': 'y = x', 'colour': (170, 170, 170), 'x': [1.0, top], 'y': [1.0, top]})
    panels.append({'title': 'measured speed-up, batch 32, vs MAC reduction',
                   'xlabel': 'dense MACs / method MACs', 'ylabel': 'speed-up', 'series': spd})
  line_plot(settings.plot, panels)
  paths = {'pareto': settings.plot}
  if ('dense', 1.0) in speed_of:
    paths['speed'] = os.path.join(settings.out, 'speed.png')
    line_plot(paths['speed'], [
        {'title': f'test accuracy vs images/s, batch {batch} '
                  f'({settings.speed_model.get("variant", "custom")} shapes)',
         'xlabel': 'measured images/s', 'ylabel': 'accuracy %',
         'series': [s for k in present for s in series(k, 'one', timed(bi))]}
        for bi, batch in enumerate(settings.speed_batches[:2])])
  if curve:
    paths['teacher'] = os.path.join(settings.out, 'teacher.png')
    teacher = [{'label': 'dense teacher', 'colour': (0, 0, 0),
                'x': [e for e, _ in curve], 'y': [a for _, a in curve]}]
    dense = next((ln for ln in lines if ln['key'] == 'dense' and ln['recipe'] == 'one'), None)
    if dense:  # the curve's next point: the one recipe from the teacher (mean, bar: sd)
      length = (settings.row_steps / settings.epoch_steps if settings.row_steps else
                settings.epochs)
      teacher.append({'label': f'+ the recipe: dense reference ({dense["n"]} seed(s))',
                      'colour': (214, 39, 40), 'dashed': True,
                      'x': [curve[-1][0], curve[-1][0] + length],
                      'y': [curve[-1][1], dense['mean']], 'err': [0.0, dense['sd']]})
    line_plot(paths['teacher'], [{'title': 'teacher: test accuracy after each epoch',
                                  'xlabel': 'epoch', 'ylabel': 'accuracy %', 'series': teacher}])
  return paths


# ----------------------------------------------------------------------------- report

def report(settings: Settings, lines, eventful, teacher_result, curve, speed_of, journal,
           paths, progress=(0, 0)) -> str:
  dense = next((ln for ln in lines if ln['key'] == 'dense'), None)
  teacher_line = {'mean': 100 * teacher_result['accuracy'], 'sd': 0.0, 'n': 1,
                  'recipe': 'teacher'}
  spread = dense['sd'] if dense and dense['n'] > 1 else None
  after = dense['mean'] - teacher_line['mean'] if spread else None
  changes, verdict = convergence(curve, spread, after)
  speed_name = settings.speed_model.get('variant', 'custom')
  t = []
  for ln in lines:
    ref = teacher_line if ln['recipe'] == 'shelf' else dense
    diff, noise = gap(ln, ref) if ref else (0.0, 0.0)
    sp = speed_of.get((ln['key'], ln['budget']))
    label = ln['label'] + RECIPE_TAIL[ln['recipe']]
    t.append([label, ln['setting'], '—' if exact(ln) else str(ln['n']),
              f'{ln["mean"]:.2f} ± {ln["sd"]:.2f} %' if ln['n'] > 1 else f'{ln["mean"]:.2f} %',
              '—' if ln['key'] == 'dense' and ln['recipe'] == 'one' else
              f'{diff:+.2f} ± ?' if np.isnan(noise) else f'{diff:+.2f}' if not noise else
              f'{diff:+.2f} ± {noise:.2f}' + (' *' if abs(diff) > noise else ''),
              f'{ln["mac_fraction"]:.3f}' + (' †' if off_budget(ln) else ''),
              f'{sp[3]} ({sp[2]:.2f})' if sp else '—',
              f'{sp[0]:.2f}x' if sp and sp[0] else '—',
              f'{sp[1]:.2f}x' if sp and sp[1] else '—'])
  length_text = (f'{settings.epochs:g} epoch(s)' if not settings.row_steps else
                 f'{settings.row_steps} steps')
  subset = (' --quick' if settings.quick else '') + (
      f' --rows {",".join(settings.rows)}' if settings.rows else '')
  heading = ('## Which method at which budget' if not settings.rows else
             f'### {", ".join(ROWS[k][1].label for k in settings.rows)} in the comparison')
  if settings.quick:
    heading += (' (a --quick smoke run: a 60-step teacher, 8-step rows, one seed, 500 test '
                'images; it checks the machinery, its numbers are not results)')
  where = os.path.dirname(settings.report) if settings.report else ROOT

  def link(path):  # relative to where the report is read
    return os.path.relpath(path, where)
  sessions = journal.data['sessions']
  commits = list(dict.fromkeys(s['commit'] for s in sessions  # in the order they ran
                              if s['commit'] != journal.data['started_commit']))
  seeds_done = sorted({s for ln in lines for s in ln['seeds']})
  recipe_text = (
      f'AdamW from the teacher for {length_text}: the parameters the method adds at lr '
      f'{RECIPE["lr"]:g}, the teacher\'s own at {RECIPE["teacher_params"]:g}x that '
      f'({RECIPE["lr"] * RECIPE["teacher_params"]:g}; the teacher ended at its min_lr '
      f'{settings.teacher.optimizer.min_lr:g}), warm-up {RECIPE["warmup_epochs"]:g} epoch, '
      f'cosine to {RECIPE["min_lr"]:g}, weight decay {RECIPE["weight_decay"]:g}, gradient '
      f'clipping {RECIPE["grad_clip_norm"]:g}, label smoothing {RECIPE["label_smoothing"]:g}, '
      'no distillation; each method\'s own losses on top (DynamicViT\'s keep-ratio loss)')
  body = (
      f'{heading}\n\n'
      f'`python benchmarks/compare.py{subset}`, started at {journal.data["started_commit"]} '
      f'({journal.data["started"]})'
      + (f', resumed at {", ".join(commits)}' if commits else '') +
      f'; {len(sessions)} session(s), {journal.seconds / 60:.0f} min in all, on '
      f'{device_description()}. Seeds {", ".join(map(str, seeds_done))}.\n\n'
      + (f'**Partial: {progress[0]} of the {progress[1]} trained runs have finished**; the '
         '"seeds" column says how many each line has. Rerun the command to continue.\n\n'
         if progress[0] < progress[1] else '') +
      f'**One recipe for every trained row**, the dense reference included: {recipe_text}. '
      'VTP spends half the length on sparsity training and half on fine-tuning the pruned '
      'model. DynamicViT\'s paper recipe (distillation, backbone at 0.01x, frozen warm-up) is '
      'an extra row, labelled. Every row\'s config and result: '
      f'`{link(os.path.join(settings.out, "rows"))}/`; train one again with `python train.py '
      '--config configs/saved.py:<that file> --workdir <dir>` (on a fresh clone, '
      '`--report_only` first rebuilds the teacher it starts from out of the committed '
      f'`{link(settings.ledger)}/`).\n\n'
      f'**Teacher**: `{portable(os.path.join(settings.root, "teacher"))}`, '
      f'{100 * teacher_result["accuracy"]:.2f} % on {teacher_result["examples"]} test images')
  if not curve:
    body += '; no evaluation curve was recorded.\n\n'
  else:
    body += (
        f' after {curve[-1][0]:g} epochs; its last two epochs changed test accuracy by '
        + ' and '.join(f'{c:+.2f}' for c in changes[::-1]) + ' points'
        + (f' against a seed-to-seed standard deviation of {dense["sd"]:.2f} for the dense '
           f'reference; the recipe on top of it (the dense reference, {length_text}, '
           f'{dense["n"]} seeds) changed it by '
           f'{after:+.2f} on average' if spread else '')
        + f': **{verdict}** (two-sided). ![teacher curve]({link(paths["teacher"])})\n\n')
    if dense and dense['n'] > 1:
      diff, noise = gap(dense, teacher_line)
      body += (f'The dense reference after the recipe: {diff:+.2f} ± {noise:.2f} points against '
               'the teacher (' + ('it loses accuracy beyond noise: the recipe is too strong'
                                  if diff < -noise else
                                  'it gains beyond noise: the teacher had not converged'
                                  if diff > noise else 'no change beyond noise') + ').\n\n')
  body += (
      '"vs dense": mean difference to the dense reference (off the shelf: to the teacher) ± '
      'twice its standard error; * marks a gap beyond that noise; ± ? while a line has one '
      'seed. Off-the-shelf lines evaluate the one teacher and have no seeds. MACs by each '
      'method\'s '
      f'counter, inference mode; † marks a row more than {100 * TOLERANCE:g} % from its '
      'budget (the knob allows no closer setting). Speed on '
      f'{speed_name} at {settings.speed_model["image_size"]} px with the knob solved for the '
      'same MAC fraction on that model '
      '(setting and its fraction named), timed interleaved with dense in the same rounds '
      '(median of same-round ratios).\n\n'
      + table(['method', 'setting', 'seeds', 'test accuracy', 'vs dense', 'MACs / dense',
               f'{speed_name} setting', 'speed-up b32', 'speed-up b1'], t)
      + f'\n\n![accuracy vs MACs; speed-up vs MAC reduction]({link(paths["pareto"])})\n')
  if 'speed' in paths:
    targets = (1.25, 1.5, 1.75)
    rows_eq = []
    for key in list(ROWS):
      pts = [[(speed_of[ln['key'], ln['budget']][bi], ln['mean']) for ln in lines
              if ln['key'] == key and ln['recipe'] == 'one'
              and (ln['key'], ln['budget']) in speed_of] for bi in range(2)]
      if not pts[0]:
        continue
      cells = [at_speed(pts[bi], s) for bi in range(2) for s in targets]
      rows_eq.append([ROWS[key][1].label] + [f'{c:.2f} %' if c is not None else '—'
                                             for c in cells])
    rates = speed_of[('dense', 1.0)][4]
    body += (
        '\n### Accuracy at equal measured speed\n\n'
        f'Mean test accuracy at a given measured speed-up over dense {speed_name} '
        f'({rates[0]:.1f} images/s at batch {settings.speed_batches[0]}, {rates[-1]:.1f} at batch '
        f'{settings.speed_batches[-1]} in this run), interpolated linearly between each '
        'method\'s three budgets (— outside the range it covers). Dense reference: '
        f'{dense["mean"]:.2f} % at 1x.\n\n'
        + table(['method'] + [f'{s:g}x b{b}' for b in settings.speed_batches[:2]
                              for s in targets], rows_eq)
        + f'\n\n![accuracy vs measured images/s]({link(paths["speed"])})\n')
  ww = which_when(lines, settings.budgets)
  if ww:
    body += ('\n### Which method when (ranked only beyond seed noise)\n\n' + '\n'.join(ww) + '\n')
  if eventful:
    ev = [[f'{e["capacity"]} of {e["tokens"]}' + (' (dense)' if e['budget'] == 1.0 else ''),
           f'{e["budget"]:.2f}', f'{e["mac_fraction"]:.2f}', f'{e["clip_accuracy"]:.2f} %',
           f'{e["clip_accuracy"] - eventful[0]["clip_accuracy"]:+.2f}',
           f'{e["frame_accuracy"]:.2f} %'] for e in eventful]
    body += ('\n### Eventful Transformer on clips, off the shelf\n\n'
             'The teacher run as an Eventful Transformer on Moving Fashion-MNIST test clips '
             f'({settings.clips} clips of {eventful[0].get("frames", "?")} frames; frame 0 '
             'dense, then r tokens recomputed per gate and frame, the largest r whose MACs per '
             'frame, averaged over the clip with the dense first frame, fit the budget):\n\n'
             + table(['r (tokens recomputed)', 'budget', 'MACs per frame / dense',
                      'clip accuracy', 'vs dense', 'per-frame accuracy'], ev) + '\n')
  return body


# ----------------------------------------------------------------------------- the run

def row_name(key: str, budget: float, seed: int, rec: str) -> str:
  return f'{key}{"_paper" if rec == "paper" else ""}_{budget}_s{seed}'


def run(settings: Settings, report_only: bool = False) -> str:
  os.makedirs(settings.root, exist_ok=True)
  os.makedirs(settings.ledger, exist_ok=True)
  journal = Journal(settings.ledger, record=not report_only)
  channels = 1
  model_cfg = settings.teacher.model
  if report_only:
    teacher_dir = os.path.join(settings.root, 'teacher')
    if not os.path.isdir(teacher_dir):
      restore_teacher(settings.ledger, teacher_dir, settings.teacher)
  else:
    teacher_dir = teacher(settings, journal)
  teacher_result = finished(teacher_dir)
  if teacher_result is None:
    raise SystemExit(f'{teacher_dir}: the teacher has not finished; run without --report_only')
  dense_macs = methods.macs(methods.build(model_cfg), channels)['total']
  keys = settings.rows or tuple(ROWS)
  plan = [(key, budget) for key in keys for budget in settings.budgets]
  knobs = {(key, budget): solve(model_cfg, key, budget, channels) for key, budget in plan
           if key not in STAGED}  # (setting, MAC fraction), the same for every seed
  records = []

  def record(key, budget, seed, rec, label, setting, frac, config, result):
    r = dict(row=row_name(key, budget, seed, rec), key=key, budget=budget, seed=seed,
             recipe=rec, label=label, setting=setting, mac_fraction=frac,
             mmacs=frac * dense_macs / 1e6, accuracy=100 * result['accuracy'],
             **{k: result[k] for k in ('examples', 'eval_loss', 'train_seconds', 'commit')
                if k in result},
             config=config.to_dict() if config is not None else None)
    records.append(r)

  def fit(config, workdir, label, use_ledger=True):
    if not report_only:
      return train(config, workdir, label, journal, ledger=settings.ledger,
                   use_ledger=use_ledger)
    done = finished(workdir)
    if done and not why_stale(workdir, config, done):
      return done
    return (recall(settings.ledger, workdir, config)
            if use_ledger and not os.path.isdir(workdir) else None)

  for seed in settings.seeds:  # the dense reference's seeds first: the spread of the recipe
    c = row_config(settings, 'dense', None, teacher_dir, seed)
    res = fit(c, os.path.join(settings.root, f'dense_s{seed}'), f'dense reference, seed {seed}')
    if res:
      record('dense', 1.0, seed, 'one', 'dense', 'all tokens', 1.0, c, res)
  for seed in settings.seeds:  # then seed by seed: every line gets its first seed first
    for key in keys:
      if key in STAGED:
        for budget, (res, rate, frac, c) in STAGED[key](
            settings, teacher_dir, list(settings.budgets), channels, seed, fit).items():
          record(key, budget, seed, 'one', ROWS[key][1].label, f'rate {rate:.2f}', frac, c, res)
        continue
      for budget in settings.budgets:
        knob, frac = knobs[key, budget]
        label = ROWS[key][1].label
        for rec in ('one', 'paper') if key in settings.paper_recipes else ('one',):
          c = row_config(settings, key, knob, teacher_dir, seed, paper=rec == 'paper',
                         channels=channels)
          name = row_name(key, budget, seed, rec)
          res = fit(c, os.path.join(settings.root, name), f'{label} at {budget}, {name}')
          if res:
            record(key, budget, seed, rec, label, knob_text(knob), frac, c, res)
  for key in keys:  # training-free methods, off the shelf: the teacher as it is
    method, variant = ROWS[key]
    if not method.training_free:
      continue
    for budget in settings.budgets:
      knob, frac = knobs[key, budget]
      spec = f'{method.name}:' + ','.join(f'{k}={v}' for k, v in knob.items())
      shelf_file = os.path.join(settings.ledger, f'{key}_{budget}_off_the_shelf.json')
      shelf = json.load(open(shelf_file)) if os.path.exists(shelf_file) else None
      if shelf is None or shelf.get('spec') != spec or shelf.get('teacher') != teacher_result:
        if report_only:
          continue
        log(f'{variant.label} at {budget}, off the shelf: evaluating the teacher with '
            f'--method {spec}')
        ev = evaluate.evaluate(teacher_dir, timing_iters=1, method=spec)
        shelf = {'accuracy': ev['accuracy'], 'examples': ev['examples'], 'spec': spec,
                 'teacher': teacher_result}
        json.dump(shelf, open(shelf_file, 'w'))
      record(key, budget, 0, 'shelf', variant.label, knob_text(knob), frac, None, shelf)
  eventful = (eventful_rows(settings, teacher_dir, cached_only=report_only)
              if settings.clips and not settings.rows else [])
  speed_of = speed(settings, plan, cached_only=report_only)
  lines = lines_of(records)
  curve = teacher_curve(teacher_dir, settings.epoch_steps)
  paths = plots(settings, lines, curve, speed_of)
  journal.save()
  planned = len(settings.seeds) * (1 + sum(
      len(settings.budgets) * (2 if key in settings.paper_recipes else 1) for key in keys))
  progress = (sum(r['recipe'] != 'shelf' for r in records), planned)
  body = report(settings, lines, eventful, teacher_result, curve, speed_of, journal, paths,
                progress)
  rows_dir = os.path.join(settings.out, 'rows')
  os.makedirs(rows_dir, exist_ok=True)
  kept = {r['row'] + '.json' for r in records if r['config'] is not None}
  for r in records:
    if r['config'] is not None:
      with open(os.path.join(rows_dir, r['row'] + '.json'), 'w') as f:
        json.dump(r, f, indent=1)
  for name in set(os.listdir(rows_dir)) - kept if not settings.rows else ():
    os.remove(os.path.join(rows_dir, name))  # a row of an older run (another teacher, config)
  with open(os.path.join(settings.out, 'results.json' if not settings.rows else
                         'results' + ''.join(f'_{k}' for k in settings.rows) + '.json'),
            'w') as f:
    json.dump({'run': journal.data, 'recipe': RECIPE, 'teacher': {
        'accuracy': 100 * teacher_result['accuracy'], 'curve': curve},
        'lines': lines, 'eventful': eventful,
        'speed': {json.dumps(list(k)): v for k, v in speed_of.items()}}, f, indent=1)
  if settings.report:
    with open(settings.report, 'w') as f:
      f.write(body)
  else:
    write_section('compare' + ''.join(f'_{k}' for k in settings.rows), body)
    if not settings.rows:
      write_section('which_method_when', readme_which_when(lines, settings.budgets, progress),
                    path=README_MD)
  log(f'done: {settings.report or "BENCHMARKS.md"}, {", ".join(paths.values())}; '
      f'{journal.seconds / 60:.1f} min over {len(journal.data["sessions"])} session(s)')
  return body


def full_settings(args) -> Settings:
  default = configs.from_file('vit/fashion_mnist.py')
  teacher_cfg = configs.from_file('vit/fashion_mnist_canvas.py')
  start = os.path.normpath(os.path.join(ROOT, 'runs', 'vit_fashion_mnist'))
  epoch_steps = 60000 // teacher_cfg.batch_size
  with teacher_cfg.unlocked():
    teacher_cfg.num_epochs = args.teacher_epochs
    teacher_cfg.init_from.path = start
    teacher_cfg.eval_every_steps = epoch_steps  # the curve: test accuracy after every epoch
  return Settings(root=os.path.normpath(os.path.join(ROOT, 'runs', 'compare')),
                  teacher=teacher_cfg, teacher_before=((default, start),), epochs=args.epochs,
                  seeds=tuple(args.seeds), epoch_steps=epoch_steps)


def quick_settings() -> Settings:
  """Every stage, tiny: a canvas teacher trained 60 steps from scratch (evaluated every 20),
  one budget (0.65), 8-step rows with one seed, 500 test images, 40 clips, ViT-Ti/16 at
  64 px for speed."""
  root = os.path.normpath(os.path.join(ROOT, 'runs', 'compare-quick'))
  teacher_cfg = configs.from_file('vit/fashion_mnist_canvas.py')
  with teacher_cfg.unlocked():
    teacher_cfg.total_steps = 60
    teacher_cfg.init_from.path = ''
    teacher_cfg.data.eval_split = 'test[:500]'
    teacher_cfg.log_every_steps = 20
    teacher_cfg.eval_every_steps = 20
  return Settings(root=root, teacher=teacher_cfg, row_steps=8, budgets=(0.65,), clips=40,
                  quick=True, seeds=(0,), epoch_steps=20,
                  speed_model=dict(variant='Ti/16', image_size=64, num_classes=10), rounds=1,
                  iters=1, report=os.path.join(root, 'COMPARE.md'),
                  plot=os.path.join(root, 'pareto.png'))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='a few-minute smoke run')
  parser.add_argument('--epochs', type=float, default=1.0, help='training of every row')
  # 12 epochs left the curve rising (+0.20, -0.06 in its last two epochs against a dense seed
  # spread of 0.05; one more low-rate epoch added 0.2): see BENCHMARKS.md.
  parser.add_argument('--teacher_epochs', type=float, default=20)
  parser.add_argument('--seeds', type=int, nargs='+', default=list(SEEDS),
                      help='seeds of every trained row')
  parser.add_argument('--rows', default='', help='comma-separated lines to run (e.g. ats): '
                      f'{", ".join(ROWS)}; default all')
  parser.add_argument('--report_only', action='store_true',
                      help='write the tables from the runs finished so far; train nothing')
  args = parser.parse_args()
  settings = quick_settings() if args.quick else full_settings(args)
  if args.rows:
    rows = tuple(k for k in args.rows.split(',') if k)
    unknown = [k for k in rows if k not in ROWS]
    if unknown:
      raise SystemExit(f'error: --rows {args.rows}: unknown {", ".join(unknown)}; lines: '
                       f'{", ".join(ROWS)}')
    tail = ''.join(f'_{k}' for k in rows)
    settings = dataclasses.replace(
        settings, rows=rows, plot=settings.plot.replace('pareto.png', f'pareto{tail}.png'),
        report=settings.report.replace('COMPARE.md', f'COMPARE{tail}.md'))
  run(settings, report_only=args.report_only)


if __name__ == '__main__':
  main()
