"""Which method at which budget: every method fine-tuned from one converged dense model with one
recipe, at three MAC budgets, with accuracy, MACs and measured speed in one table and one plot.

    python benchmarks/compare.py            # the full comparison (see BENCHMARKS.md for its time)
    python benchmarks/compare.py --quick    # a few-minute smoke run of the same machinery
    python benchmarks/compare.py --rows ats # one method's lines beside the full table

Resumable: every run lives in its own work directory under runs/compare/ (runs/compare-quick/
for --quick); a finished one is skipped, an interrupted one resumes. Stages:

1. The teacher: the README's default run (runs/vit_fashion_mnist, trained if missing), then the
   canvas model (Fashion-MNIST items at random positions on a 56x56 canvas, 64 patch tokens + cls)
   trained for --teacher_epochs from it. It is converged when one more epoch of the comparison's
   recipe adds less than 0.2 points: the dense reference row (below) checks exactly that.
2. The rows are the registry's: every method's `variants()` (tokensparse/methods/<name>/),
   e.g. DynamicViT and static selection, 2x2 pooling, TokenLearner, VTP, ToMe, EViT, ATS. For
   each budget (fractions of dense MACs, default 0.5, 0.65, 0.8), the method's `budget_knobs`
   setting whose MACs (by its own counter) come closest is chosen: keep ratios at the paper's
   three stages, the block that pools, 8 or 16 tokens and the block where they are learned,
   the pruning rate, r, keep rates, sampled tokens.
3. Every row starts from the teacher and trains for the same --epochs with the canvas recipe
   (AdamW, lr 1e-3 cosine, batch 128) plus what the variant's recipe config adds (DynamicViT's
   losses and learning-rate groups): configs/<method>/ hold them. VTP splits the same epochs
   into sparsity training (half) and fine-tuning after pruning (half). Training-free methods
   (ToMe, EViT, ATS) are also evaluated off the shelf. The dense model trained for the same
   epochs is the reference row; every "vs dense" compares with the dense model of the same
   training.
4. Eventful Transformer, off the shelf on Moving Fashion-MNIST test clips (42 px frames at the
   centre of the 56 px canvas): the teacher's clip accuracy at capacities matched to the budgets
   in MACs per frame.
5. Speed: each method at each budget (knob chosen for the same MAC fraction) on DeiT-S/16 at
   224 px, fp32, inference, batch 32 (over all host devices) and batch 1, against dense DeiT-S
   timed in the same rounds (median of same-round ratios). VTP's widths are every layer pruned
   by the same rate (the speed depends on the widths only).

Writes the 'compare' section of BENCHMARKS.md and docs/compare/pareto.png (--quick: COMPARE.md
and pareto.png in runs/compare-quick/, leaving BENCHMARKS.md alone). `--rows KEY,...` runs the
teacher, the dense reference and only those lines (a method added after the full run), into the
section 'compare_KEY' and docs/compare/pareto_KEY.png; the Eventful clip table is left out.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time

from common import ROOT, device_description, git_revision, table, time_per_call, write_section

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, ROOT)
from tokensparse import backbone, configs, evaluate, inference, methods  # noqa: E402
from tokensparse.methods.vtp import model as vtp  # noqa: E402
from tokensparse.methods.vtp import prune as vtp_prune  # noqa: E402
from tokensparse.train import loop  # noqa: E402

BUDGETS = (0.5, 0.65, 0.8)
LENGTH_FIELDS = ('num_epochs', 'total_steps', 'init_from')
# Every line of the comparison, from the registry: variant key -> (Method, Variant).
ROWS = {v.key: (m, v) for m in methods.REGISTRY.values() for v in m.variants()}


@dataclasses.dataclass
class Settings:
  """What one comparison runs: a full run, --quick, or the test's tiny version."""
  root: str                              # work directories of every run
  teacher: ml_collections.ConfigDict     # the dense model's config (trained first)
  teacher_before: tuple = ()             # (config, workdir) runs the teacher starts from
  epochs: float = 1.0                    # every row's training (steps: row_steps if > 0)
  row_steps: int = 0
  budgets: tuple = BUDGETS
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


# ----------------------------------------------------------------------------- training rows

def length(c, settings: Settings) -> None:
  with c.unlocked():
    c.num_epochs = settings.epochs
    c.total_steps = settings.row_steps


def finished(workdir: str) -> dict | None:
  """The final evaluation of a finished run ({'accuracy', 'examples'}), or None."""
  path = os.path.join(workdir, 'compare.json')
  return json.load(open(path)) if os.path.exists(path) else None


def train(config, workdir: str, label: str) -> dict:
  """Train (or resume) and evaluate once; a finished run is read back."""
  done = finished(workdir)
  if done:
    log(f'{label}: done before ({100 * done["accuracy"]:.2f} %), skipped')
    return done
  log(f'{label}: training in {workdir}')
  result = loop.train_and_evaluate(config, workdir)
  if result.get('preempted'):
    raise SystemExit('preempted: run the same command again to resume')
  done = {'accuracy': float(result['accuracy']), 'examples': int(result['count'])}
  with open(os.path.join(workdir, 'compare.json'), 'w') as f:
    json.dump(done, f)
  return done


def teacher(settings: Settings) -> str:
  for config, workdir in settings.teacher_before:
    train(config, workdir, f'teacher\'s start ({os.path.basename(workdir)})')
  workdir = os.path.join(settings.root, 'teacher')
  train(settings.teacher, workdir, 'teacher')
  return workdir


def from_teacher(settings: Settings, init: str, model_fields: tuple = ()):
  """The teacher's config, started from `init`, trained for a row's length."""
  c = copy.deepcopy(settings.teacher)
  with c.unlocked():
    c.init_from = ml_collections.ConfigDict(dict(path=init, skip=(), model_fields=model_fields))
  length(c, settings)
  return c


def row_config(settings: Settings, key: str, knob: dict, init: str):
  c = from_teacher(settings, init)
  with c.unlocked():
    merge(c, recipe(key))
    c.model = method_model(c.model, key, knob)
  return c


def run_vtp(settings: Settings, teacher_dir: str, budgets: list[float], channels: int):
  """Sparsity training (half the epochs), then per budget: prune at the rate whose pruned model
  comes closest to the budget, fine-tune (the other half). -> {budget: (result, rate, frac)}."""
  half = dataclasses.replace(settings, epochs=settings.epochs / 2,
                             row_steps=settings.row_steps // 2)
  sparse_dir = os.path.join(settings.root, 'vtp_sparse')
  c = from_teacher(half, teacher_dir)
  with c.unlocked():
    configs.use_method(c, 'vtp')
  train(c, sparse_dir, 'VTP sparsity training')
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
    pruned_dir = os.path.join(settings.root, f'vtp_pruned_{budget}')
    if not os.path.isdir(os.path.join(pruned_dir, 'checkpoints')):
      vtp_prune.main(['--workdir', sparse_dir, '--rate', f'{rate:.4f}', '--out', pruned_dir])
    ft = from_teacher(half, pruned_dir, model_fields=('head_dim', 'mlp_dim', 'attn_scale'))
    result = train(ft, os.path.join(settings.root, f'vtp_{budget}'), f'VTP at {budget}')
    out[budget] = (result, rate, frac)
  return out


# Lines trained in stages of their own (Variant.recipe None): key -> runner(settings,
# teacher_dir, budgets, channels) -> {budget: (result, rate, MAC fraction)}.
STAGED = {'vtp': run_vtp}


# ----------------------------------------------------------------------------- eventful, speed

def eventful_rows(settings: Settings, teacher_dir: str) -> list[dict]:
  """Clip accuracy of the teacher run as an Eventful Transformer at capacities matched to the
  budgets (MACs per frame after the first), and dense (every token)."""
  from tokensparse.data import moving_fashion_mnist  # pylint: disable=g-import-not-at-top
  cache = os.path.join(settings.root, 'eventful.json')
  if os.path.exists(cache):
    return json.load(open(cache))
  predictor = inference.load(teacher_dir)
  kw = backbone.backbone_kwargs(predictor.config.model)
  clips, labels = moving_fashion_mnist.load_clips(
      kw['image_size'], settings.clips, data_dir=predictor.config.data.data_dir,
      config=settings.clip_config)
  n = predictor.model.num_prefix + predictor.model.num_patches
  dense_macs = methods.macs(predictor.model, predictor.channels)['total']
  eventful = methods.get('eventful')

  def frame_macs(capacity):  # per frame after the first, by the method's counter
    model_cfg = ml_collections.ConfigDict({**predictor.config.model.to_dict(), 'name': 'eventful',
                                           'eventful': {'capacity': capacity}})
    return methods.macs(methods.build(model_cfg), predictor.channels)['total']

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
    rows.append({'budget': budget, 'capacity': r, 'tokens': n, 'mac_fraction': macs / dense_macs,
                 'clip_accuracy': 100 * correct / len(clips),
                 'frame_accuracy': 100 * frame_correct / (len(clips) * clips.shape[1])})
    log(f'Eventful r={r}: clip accuracy {rows[-1]["clip_accuracy"]:.2f} %')
  json.dump(rows, open(cache, 'w'), indent=1)
  return rows


def speed(settings: Settings, plan: list[tuple[str, float]]) -> dict:
  """{(method, budget): (speed-up b32, speed-up b1, MAC fraction)} of each planned model
  (model config, or VTP's rate) on the speed backbone, timed in rounds against dense."""
  cache = os.path.join(settings.root, 'speed.json')
  if os.path.exists(cache):
    return {tuple(json.loads(k)): v for k, v in json.load(open(cache)).items()}
  base = ml_collections.ConfigDict(dict(name='vit', dtype='float32', **settings.speed_model))
  kw = backbone.backbone_kwargs(base)
  size = kw['image_size']
  models = {('dense', 1.0): methods.build(base)}
  dense = macs(base, 3)
  fractions = vtp_fractions(base)
  for key, budget in plan:
    if ROWS[key][1].recipe is None:  # a pruned model: the same rate in every layer
      c = vtp_model(base, closest(fractions, budget)[0])
    else:
      knob, _ = solve(base, key, budget, 3)
      c = method_model(base, key, knob)
    models[(key, budget)] = methods.build(c)
  fracs = {k: methods.macs(m, 3)['total'] / dense for k, m in models.items()}
  results = {k: [None, None, fracs[k]] for k in models}
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
    for key, t in times.items():
      results[key][bi] = float(np.median(dense_t / np.array(t)))
  json.dump({json.dumps(list(k)): v for k, v in results.items()}, open(cache, 'w'), indent=1)
  return results


# ----------------------------------------------------------------------------- report

PALETTE = ((31, 119, 180), (148, 103, 189), (140, 86, 75), (44, 160, 44), (214, 39, 40),
           (255, 127, 14), (23, 190, 207), (227, 119, 194), (188, 189, 34), (127, 127, 127))
# Dense in black, then every line of the registry in its order.
COLOURS = {'dense': (0, 0, 0), **{k: PALETTE[i % len(PALETTE)] for i, k in enumerate(ROWS)}}


def pareto_plot(rows: list[dict], path: str) -> None:
  """Two panels: test accuracy vs MAC fraction (one line per method; dashed: off the shelf),
  and measured speed-up (batch 32) vs MAC reduction (dense / method MACs), with y = x."""
  w, h, pad = 560, 420, 60
  img = Image.new('RGB', (2 * w, h + 70), 'white')
  d = ImageDraw.Draw(img)

  def panel(x0, title, xs, ys, lines, xlabel, ylabel, diagonal=False):
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if diagonal:
      xlo = ylo = min(xlo, ylo, 1.0)
      xhi = yhi = max(xhi, yhi)
    xspan, yspan = (xhi - xlo) or 1, (yhi - ylo) or 1
    xlo, xhi, ylo, yhi = xlo - 0.05 * xspan, xhi + 0.05 * xspan, ylo - 0.08 * yspan, yhi + 0.08 * yspan

    def at(x, y):
      return (x0 + pad + (x - xlo) / (xhi - xlo) * (w - 1.5 * pad),
              h - pad - (y - ylo) / (yhi - ylo) * (h - 1.7 * pad))
    d.rectangle([at(xlo, yhi), at(xhi, ylo)], outline=(0, 0, 0))
    for i in range(5):
      xv, yv = xlo + (xhi - xlo) * (i + 0.5) / 5, ylo + (yhi - ylo) * (i + 0.5) / 5
      px, _ = at(xv, ylo)
      _, py = at(xlo, yv)
      d.text((px - 12, h - pad + 4), f'{xv:.2f}', fill=(0, 0, 0))
      d.text((x0 + 8, py - 5), f'{yv:.2f}' if yhi < 10 else f'{yv:.1f}', fill=(0, 0, 0))
    if diagonal:
      d.line([at(max(xlo, ylo), max(xlo, ylo)), at(min(xhi, yhi), min(xhi, yhi))],
             fill=(170, 170, 170), width=1)
    for colour, pts, dashed in lines:
      pts = sorted(pts)
      for a, b in zip(pts, pts[1:]):
        if dashed:
          for t in np.linspace(0, 1, 12)[::2]:
            pa = np.array(at(*a)) + t * (np.array(at(*b)) - np.array(at(*a)))
            pb = np.array(at(*a)) + min(t + 1 / 11, 1) * (np.array(at(*b)) - np.array(at(*a)))
            d.line([tuple(pa), tuple(pb)], fill=colour, width=2)
        else:
          d.line([at(*a), at(*b)], fill=colour, width=2)
      for p in pts:
        cx, cy = at(*p)
        d.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
    d.text((x0 + pad, 12), title, fill=(0, 0, 0))
    d.text((x0 + w // 2 - 60, h - pad + 22), xlabel, fill=(0, 0, 0))
    d.text((x0 + 8, 30), ylabel, fill=(0, 0, 0))

  acc_lines, speed_lines, xs, ys, sx, sy = [], [], [], [], [], []
  present = ['dense'] + [k for k in ROWS if any(r['method'] == k for r in rows)]
  for method in present:
    for shelf in (False, True):
      pts = [(r['mac_fraction'], r['accuracy']) for r in rows
             if r['method'] == method and r['off_the_shelf'] == shelf]
      if pts:
        acc_lines.append((COLOURS[method], pts, shelf))
        xs += [p[0] for p in pts]
        ys += [p[1] for p in pts]
    spts = [(1 / r['speed_mac_fraction'], r['speedup_b32']) for r in rows
            if r['method'] == method and not r['off_the_shelf'] and r.get('speedup_b32')]
    if spts:
      speed_lines.append((COLOURS[method], spts, False))
      sx += [p[0] for p in spts]
      sy += [p[1] for p in spts]
  panel(0, 'test accuracy (%) vs MACs / dense MACs (dashed: off the shelf)', xs, ys, acc_lines,
        'MACs / dense MACs', 'accuracy %')
  if sx:
    panel(w, 'measured speed-up, batch 32, vs MAC reduction (grey: y = x)', sx, sy, speed_lines,
          'dense MACs / method MACs', 'speed-up', diagonal=True)
  y = h + 20
  for i, method in enumerate(present):
    label = 'dense (+ same epochs)' if method == 'dense' else ROWS[method][1].label
    x = 20 + (i % 4) * 270
    yy = y + (i // 4) * 22
    d.rectangle([x, yy + 3, x + 18, yy + 9], fill=COLOURS[method])
    d.text((x + 24, yy), label, fill=(0, 0, 0))
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  img.save(path)


def report(settings: Settings, rows, eventful, teacher_result, dense_ref, elapsed) -> str:
  gain = 100 * (dense_ref['accuracy'] - teacher_result['accuracy'])
  converged = gain < 0.2
  t = []
  for r in rows:
    t.append([r['label'], r['setting'], f'{r["accuracy"]:.2f} %', f'{r["vs_dense"]:+.2f}',
              f'{r["mmacs"]:.2f}', f'{r["mac_fraction"]:.2f}',
              f'{r["speed_mac_fraction"]:.2f}' if r.get('speed_mac_fraction') else '—',
              f'{r["speedup_b32"]:.2f}x' if r.get('speedup_b32') else '—',
              f'{r["speedup_b1"]:.2f}x' if r.get('speedup_b1') else '—'])
  ev = [[f'{e["capacity"]} of {e["tokens"]}' + (' (dense)' if e['budget'] == 1.0 else ''),
         f'{e["budget"]:.2f}', f'{e["mac_fraction"]:.2f}', f'{e["clip_accuracy"]:.2f} %',
         f'{e["clip_accuracy"] - eventful[0]["clip_accuracy"]:+.2f}',
         f'{e["frame_accuracy"]:.2f} %'] for e in eventful]
  speed_name = settings.speed_model.get('variant', 'custom')
  length_text = (f'{settings.epochs:g} epoch(s)' if not settings.row_steps else
                 f'{settings.row_steps} steps')
  subset = (' --quick' if settings.quick else '') + (
      f' --rows {",".join(settings.rows)}' if settings.rows else '')
  heading = ('## Which method at which budget' if not settings.rows else
             f'### {", ".join(ROWS[k][1].label for k in settings.rows)} in the comparison')
  if settings.quick:
    heading += (' (a --quick smoke run: a 60-step teacher, 8-step rows, 500 test images; it '
                'checks the machinery, its numbers are not results)')
  # The plot's link, relative to where the report is read.
  plot = os.path.relpath(settings.plot, os.path.dirname(settings.report) if settings.report
                         else ROOT)
  body = (
      f'{heading}\n\n'
      f'`python benchmarks/compare.py{subset}` at {git_revision()} on {device_description()}, '
      f'{elapsed / 60:.0f} min. Every row starts from the same dense teacher '
      f'(`{os.path.relpath(os.path.join(settings.root, "teacher"), ROOT)}`: '
      f'{100 * teacher_result["accuracy"]:.2f} % on {teacher_result["examples"]} test images) and '
      f'trains {length_text} with the canvas recipe plus the method\'s own losses '
      '(configs/<method>/); VTP spends half on sparsity training and half on fine-tuning the '
      'pruned model. "vs dense" compares with the dense model trained the same way: the '
      'teacher itself for the off-the-shelf rows. MACs by each method\'s counter in inference '
      f'mode; speed-up measured on {speed_name} at the MAC fraction in its column (knob '
      'solved on that model), against dense timed in the same rounds.\n\n'
      f'Teacher converged: one more {length_text} of dense training changed test accuracy by '
      f'{gain:+.2f} points ({"< 0.2: converged" if converged else ">= 0.2: NOT converged; train the teacher longer"}).\n\n'
      + table(['method', 'setting', 'test accuracy', 'vs dense', 'MMACs', 'MACs / dense',
               f'{speed_name} MACs / dense', 'speed-up b32', 'speed-up b1'], t)
      + f'\n\n![accuracy vs MACs; speed-up vs MAC reduction]({plot})\n')
  if ev:
    body += ('\n### Eventful Transformer on clips, off the shelf\n\n'
             'The teacher run as an Eventful Transformer on Moving Fashion-MNIST test clips '
             f'({settings.clips} clips; frame 0 dense, then r tokens recomputed per '
             'gate and frame, the largest r within the budget of MACs per frame):\n\n'
             + table(['r (tokens recomputed)', 'budget', 'MACs per frame / dense',
                      'clip accuracy', 'vs dense', 'per-frame accuracy'], ev) + '\n')
  return body


def run(settings: Settings) -> str:
  start = time.time()
  os.makedirs(settings.root, exist_ok=True)
  teacher_dir = teacher(settings)
  teacher_result = finished(teacher_dir)
  channels = 1
  model_cfg = settings.teacher.model
  rows = []
  dense_ref = train(from_teacher(settings, teacher_dir), os.path.join(settings.root, 'dense'),
                    'dense + same epochs')
  dense_macs = methods.macs(methods.build(model_cfg), channels)['total']
  rows.append(dict(method='dense', label='dense + same training', setting='all tokens',
                   off_the_shelf=False, budget=1.0, accuracy=100 * dense_ref['accuracy'],
                   vs_dense=0.0, mmacs=dense_macs / 1e6, mac_fraction=1.0))
  keys = settings.rows or tuple(ROWS)
  plan = [(key, budget) for key in keys for budget in settings.budgets]
  staged = {key: STAGED[key](settings, teacher_dir, list(settings.budgets), channels)
            for key in keys if ROWS[key][1].recipe is None}
  for key, budget in plan:
    method, variant = ROWS[key]
    label = variant.label
    if key in staged:
      result, rate, frac = staged[key][budget]
      setting = f'rate {rate:.2f}'
    else:
      knob, frac = solve(model_cfg, key, budget, channels)
      setting = ', '.join(f'{k}={v}' for k, v in knob.items() if k != 'prune_layers')
      result = train(row_config(settings, key, knob, teacher_dir),
                     os.path.join(settings.root, f'{key}_{budget}'), f'{label} at {budget}')
      if method.training_free:
        spec = f'{method.name}:' + ','.join(f'{k}={v}' for k, v in knob.items())
        shelf_file = os.path.join(settings.root, f'{key}_{budget}_off_the_shelf.json')
        if not os.path.exists(shelf_file):
          log(f'{label} at {budget}, off the shelf: evaluating the teacher with --method {spec}')
          shelf = evaluate.evaluate(teacher_dir, timing_iters=1, method=spec)
          json.dump({'accuracy': shelf['accuracy'], 'examples': shelf['examples']},
                    open(shelf_file, 'w'))
        shelf = json.load(open(shelf_file))
        rows.append(dict(method=key, label=f'{label}, off the shelf', setting=setting,
                         off_the_shelf=True, budget=budget, accuracy=100 * shelf['accuracy'],
                         vs_dense=100 * (shelf['accuracy'] - teacher_result['accuracy']),
                         mmacs=frac * dense_macs / 1e6, mac_fraction=frac))
    rows.append(dict(method=key, label=label, setting=setting, off_the_shelf=False,
                     budget=budget, accuracy=100 * result['accuracy'],
                     vs_dense=100 * (result['accuracy'] - dense_ref['accuracy']),
                     mmacs=frac * dense_macs / 1e6, mac_fraction=frac))
  eventful = eventful_rows(settings, teacher_dir) if settings.clips and not settings.rows else []
  timing = speed(settings, plan)
  for r in rows:
    key = ('dense', 1.0) if r['method'] == 'dense' else (r['method'], r['budget'])
    if key in timing:
      r['speedup_b32'], r['speedup_b1'], r['speed_mac_fraction'] = timing[key]
  rows.sort(key=lambda r: (r['method'] != 'dense', r['budget'], list(ROWS).index(r['method'])
                           if r['method'] in ROWS else -1, not r['off_the_shelf']))
  json.dump(rows, open(os.path.join(settings.root, 'results.json'), 'w'), indent=1)
  pareto_plot(rows, settings.plot)
  body = report(settings, rows, eventful, teacher_result, dense_ref, time.time() - start)
  if settings.report:
    with open(settings.report, 'w') as f:
      f.write(body)
  else:
    write_section('compare' + ''.join(f'_{k}' for k in settings.rows), body)
  log(f'done in {(time.time() - start) / 60:.1f} min: {settings.report or "BENCHMARKS.md"}, '
      f'{settings.plot}')
  return body


def full_settings(args) -> Settings:
  default = configs.from_file('vit/fashion_mnist.py')
  teacher_cfg = configs.from_file('vit/fashion_mnist_canvas.py')
  start = os.path.normpath(os.path.join(ROOT, 'runs', 'vit_fashion_mnist'))
  with teacher_cfg.unlocked():
    teacher_cfg.num_epochs = args.teacher_epochs
    teacher_cfg.init_from.path = start
  return Settings(root=os.path.normpath(os.path.join(ROOT, 'runs', 'compare')), teacher=teacher_cfg,
                  teacher_before=((default, start),), epochs=args.epochs)


def quick_settings() -> Settings:
  """Every stage, tiny: a canvas teacher trained 60 steps from scratch, one budget (0.65),
  8-step rows, 500 test images, 40 clips, ViT-Ti/16 at 64 px for speed."""
  root = os.path.normpath(os.path.join(ROOT, 'runs', 'compare-quick'))
  teacher_cfg = configs.from_file('vit/fashion_mnist_canvas.py')
  with teacher_cfg.unlocked():
    teacher_cfg.total_steps = 60
    teacher_cfg.init_from.path = ''
    teacher_cfg.data.eval_split = 'test[:500]'
    teacher_cfg.log_every_steps = 20
  return Settings(root=root, teacher=teacher_cfg, row_steps=8, budgets=(0.65,), clips=40,
                  quick=True,
                  speed_model=dict(variant='Ti/16', image_size=64, num_classes=10), rounds=1,
                  iters=1, report=os.path.join(root, 'COMPARE.md'),
                  plot=os.path.join(root, 'pareto.png'))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='a few-minute smoke run')
  parser.add_argument('--epochs', type=float, default=1.0, help='training of every row')
  parser.add_argument('--teacher_epochs', type=float, default=12)
  parser.add_argument('--rows', default='', help='comma-separated lines to run (e.g. ats): '
                      f'{", ".join(ROWS)}; default all')
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
  run(settings)


if __name__ == '__main__':
  main()
