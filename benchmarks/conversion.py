"""MACs into time: every method against dense DeiT-S/16 in the same rounds, at batch 1 and 32,
and where each one's time goes.

    python benchmarks/conversion.py            # DeiT-S/16, 224 px (about 50 min on 2 cores)
    python benchmarks/conversion.py --quick    # ViT-Ti/16 at 64 px, one round (under 25 min)
    python benchmarks/conversion.py --report_only   # the report again from docs/conversion.json

Models: each registered method at its default setting (ToMe r = 13, keep 0.7 for DynamicViT,
static selection and EViT, TokenLearner's 8 tokens at mid-depth, 2x2 pooling at block 6, VTP
40 % pruned from irregular per-layer scores at three physical alignments, ATS's default
sampled tokens, Eventful full and token-wise at r = N/4 per frame) and at the comparison's
budgets (0.5, 0.65, 0.8 of dense MACs, knobs solved as `benchmarks/compare.py` does; Eventful's
capacity the largest within the budget per frame). Random weights: the work does not depend on
them, except VTP's widths (uniform scores, seed 0) and Eventful's (a clip whose changes fill
every gate, so every step does its full capacity).

Timing: fp32 inference; batch 32 is mapped over all host devices, batch 1 runs on one. The
models are timed a budget group at a time (the defaults, then each budget), dense with every
group (all at once would not fit 24 GiB: an Eventful DeiT-S state at batch 32 takes 1.6 GiB). In
every round each model runs `--iters` calls after a warm-up call, dense first, and a model's
speed-up is the median over rounds of (dense time / its time) of the same round (batch 1 runs
three times the rounds: its calls are cheap and noisier). Eventful runs
`step` per frame with its state donated (updated in place), frame after frame of a clip; its
MACs are those of a step after the first.

Conversion = speed-up / MAC reduction (1.0: the time falls as the counted MACs do).

Blocks alone: every token method gets a twin in its group, the dense model with each shared
block run on the token counts the method's blocks see (read from the traced shapes by
intercepting `EncoderBlock.attend` / `feed_forward`) and nothing else. Its conversion is what
the hardware gives fewer tokens; the method's conversion divided by it is what the method's own
work (selection, merging, predictors) leaves. The dense blocks on one token each ("floor") show
the per-call cost that no token count removes: every matmul reads its whole weight matrix.

Where the time goes: each default-setting model at batch 1 under the JAX profiler (the fastest
of three profiles of three calls; Eventful: its donated step, frame after frame); every XLA
CPU thunk is classed by the HLO it runs (`common.op_classes`): matmul (dot or convolution),
select (gather, scatter, sort, top-k, dynamic slices), exp (anything with an exponential:
softmax, GELU) and the rest (norms, adds, transposes, copies). The "excess" of a class is its
time minus dense's time in that class divided by the MAC reduction: what the method spends
beyond what its MACs predict, in milliseconds per image.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import (ROOT, device_description, git_revision, line_plot, op_class_times, table,
                    time_per_call, write_section)
import compare

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, ROOT)
from tokensparse import backbone, flops, methods  # noqa: E402
from tokensparse.backbone import layers  # noqa: E402
from tokensparse.methods.eventful.model import EventfulViT, budget_for  # noqa: E402
from tokensparse.methods.vtp.model import VTPViT, prune  # noqa: E402

CLASSES = ('matmul', 'select', 'exp', 'rest')


def log(msg):
  print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


# ----------------------------------------------------------------------------- the models

def vtp_irregular(base, rate: float, align: int):
  """A ViT pruned by `rate` from uniform random scores (irregular per-layer widths)."""
  kw = backbone.backbone_kwargs(base)
  size = kw['image_size']
  variables = jax.eval_shape(VTPViT(**kw).init, jax.random.PRNGKey(0),
                             jnp.zeros((1, size, size, 3)))
  rng = np.random.default_rng(0)
  scores = jax.tree.map(lambda s: rng.uniform(0.0, 1.0, s.shape), variables['scores'])
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables['params'])
  _, fields = prune(params, scores, rate, align=align)
  return ml_collections.ConfigDict({**base.to_dict(), 'head_dim': list(fields['head_dim']),
                                    'mlp_dim': list(fields['mlp_dim']),
                                    'attn_scale': fields['attn_scale']})


def eventful_config(base, capacity: int, variant: str = 'full'):
  return ml_collections.ConfigDict({**base.to_dict(), 'name': 'eventful', 'eventful': {
      **methods.get('eventful').defaults().to_dict(), 'capacity': capacity, 'variant': variant}})


def plan(base, budgets) -> list[tuple[str, str, ml_collections.ConfigDict]]:
  """(group, label, model config) of every timed model, dense first."""
  kw = backbone.backbone_kwargs(base)
  n = backbone.num_prefix(kw) + backbone.num_patches(kw)
  out = [('default', 'dense', compare.dense_model(base))]
  default = {'tome': {'r': min(13, max(1, (n - 1) // (kw['depth'] + 1)))}}  # ToMe's DeiT-S r
  for key in compare.ROWS:
    method = compare.ROWS[key][0]
    if method.name == 'vtp':
      for align in (1, 16, 64):
        out.append(('default', f'vtp 40 %, align {align}', vtp_irregular(base, 0.4, align)))
      continue
    knob = default.get(key)
    if method.name == 'ats':  # its default samples every token: use the 0.65 budget's setting
      knob, _ = compare.solve(base, key, 0.65, 3)
    c = compare.method_model(base, key, knob)
    out.append(('default', f'{key} ' + ', '.join(f'{k}={v}' for k, v in c[method.name].items()
                                                   if k in (knob or {}) or k in DEFAULT_KNOBS),
                c))
  for variant in ('full', 'tokenwise'):
    out.append(('default', f'eventful {variant} r=N/4={n // 4}', eventful_config(base, n // 4,
                                                                                 variant)))
  vtp_fractions = compare.vtp_fractions(base)
  eventful = methods.build(eventful_config(base, n))
  for budget in budgets:
    for key in compare.ROWS:
      if compare.ROWS[key][0].name == 'vtp':
        rate, _ = compare.closest(vtp_fractions, budget)
        out.append((f'{budget}', f'vtp rate {rate:.2f}', compare.vtp_model(base, rate)))
      else:
        knob, _ = compare.solve(base, key, budget, 3)
        out.append((f'{budget}', f'{key} ' + ', '.join(f'{k}={v}' for k, v in knob.items()),
                    compare.method_model(base, key, knob)))
    # the largest capacity whose MACs per frame fit the budget
    r = int(budget_for(eventful, budget * compare.macs(base, 3)))
    out.append((f'{budget}', f'eventful full r={r}', eventful_config(base, r)))
  return out


DEFAULT_KNOBS = ('r', 'keep_ratio', 'keep_rate', 'num_tokens', 'at', 'pool_layer', 'selector')
ALONE = ' / blocks alone'  # the label of a model's blocks-alone twin
FLOOR = 'dense blocks on one token'


# ----------------------------------------------------------------------------- blocks alone

def block_tokens(model, size: int) -> tuple[tuple[int, int], ...] | None:
  """The token counts (attention half, MLP half) that each shared encoder block sees in
  `model`'s inference forward pass, read from the traced shapes (nothing runs); None for a
  model whose blocks all see every token (dense, VTP) or that runs per frame (Eventful)."""
  if isinstance(model, EventfulViT):
    return None
  seen = []

  def record(next_fun, args, kwargs, context):
    if (isinstance(context.module, layers.EncoderBlock)
        and context.method_name in ('attend', 'feed_forward')):
      seen.append(args[0].shape[1])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  if len(set(seen)) == 1:
    return None
  return tuple(zip(seen[0::2], seen[1::2]))


class OnTokens(nn.Module):
  """The dense ViT with block i run on the first `counts[i]` tokens (attention half, MLP half)
  and nothing else: a token method's block work without any of its own (selection, merging,
  predictors). Its time is what this hardware gives fewer tokens in the shared blocks."""
  vit: nn.Module
  counts: tuple[tuple[int, int], ...]

  @nn.compact
  def __call__(self, images, train: bool = False):
    vit, counts = self.vit, self.counts

    def between(i, x, carry):
      return (x[:, :counts[i][0]] if i < len(counts) else x), carry

    def after_attention(i, x, info, carry):
      return x[:, :counts[i][1]], carry

    x, _ = vit.run_blocks(vit.embed(images), True, None, between=between,
                          after_attention=after_attention)
    return vit.finish(x)


def blocks_alone(models: dict, base) -> dict[str, tuple[nn.Module, int]]:
  """{label: (its blocks-alone twin, the twin's MACs)} of every token-reducing model, and
  FLOOR: the dense blocks on one token each (what a call costs whatever the tokens)."""
  kw = backbone.backbone_kwargs(base)
  dense = models['dense']
  twins = {FLOOR: ((1, 1),) * kw['depth']}
  for label, model in models.items():
    counts = block_tokens(model, kw['image_size'])
    if counts is not None:
      twins[label] = counts
  return {label: (OnTokens(dense, counts), flops.vit_macs(dense, 3, counts)['total'])
          for label, counts in twins.items()}


# ----------------------------------------------------------------------------- the runners

def changing_clip(frames: int, size: int, batch: int) -> np.ndarray:
  """[T, B, H, W, 3] fresh noise every frame: every token changes, so every gate runs full."""
  rng = np.random.default_rng(1)
  return rng.normal(0, 1, (frames, batch, size, size, 3)).astype(np.float32)


class Static:
  """A model's forward pass: jitted at batch 1, mapped over the devices at batch > 1."""

  def __init__(self, model, variables, batch: int, size: int):
    n_dev = jax.local_device_count()
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, size, size, 3))
    if batch > 1 and batch % n_dev == 0:
      self.fn = jax.pmap(lambda v, x: model.apply(v, x)[0], in_axes=(None, 0))
      x = x.reshape(n_dev, batch // n_dev, size, size, 3)
    else:
      self.fn = jax.jit(lambda v, x: model.apply(v, x)[0])
    self.args = (variables, x)

  def hlo(self) -> str:
    return self.fn.lower(*self.args).compile().as_text()

  def __call__(self):
    return self.fn(*self.args)


class Eventful:
  """`step` on the next frame of an 8-frame clip, state donated; after the last frame the state
  is re-initialised from frame 0 (untimed: the next call after it is the warm-up)."""

  def __init__(self, model, variables, batch: int, size: int, frames: int = 8):
    n_dev = jax.local_device_count()
    clip = changing_clip(frames, size, batch)
    step = lambda s, f: model.apply(variables, s, f, method=EventfulViT.step)
    init = lambda f: model.apply(variables, f, method=EventfulViT.init_state)[0]
    if batch > 1 and batch % n_dev == 0:
      clip = clip.reshape(frames, n_dev, batch // n_dev, size, size, 3)
      self.step, self.init = jax.pmap(step, donate_argnums=(0,)), jax.pmap(init)
    else:
      self.step, self.init = jax.jit(step, donate_argnums=(0,)), jax.jit(init)
    self.clip, self.t = jnp.asarray(clip), 0
    self.state = self.init(self.clip[0])

  def hlo(self) -> str:
    return self.step.lower(self.state, self.clip[1]).compile().as_text()

  def __call__(self):
    self.t += 1
    if self.t == len(self.clip):
      self.t = 1
      self.state = self.init(self.clip[0])
    self.state, logits = self.step(self.state, self.clip[self.t])
    return logits


def runner(model, variables, batch, size):
  cls = Eventful if isinstance(model, EventfulViT) else Static
  return cls(model, variables, batch, size)


# ----------------------------------------------------------------------------- measure

def measure(models: dict, base, batch: int, rounds: int, iters: int,
            spread: dict | None = None) -> dict[str, float]:
  """{label: median same-round speed-up against dense} at one batch size; `spread` (if given)
  gets each label's half interquartile range of the same-round speed-ups."""
  size = backbone.backbone_kwargs(base)['image_size']
  x = jnp.zeros((1, size, size, 3))
  runs = {}
  for label, model in models.items():
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    runs[label] = runner(model, variables, batch, size)
    jax.block_until_ready(runs[label]())  # compile
  times = {label: [] for label in runs}
  for r in range(rounds):
    for label, run in runs.items():
      times[label].append(time_per_call(run, warmup=1, iters=iters))
    log(f'batch {batch}, round {r + 1}/{rounds}: dense {batch / times["dense"][-1]:.1f} img/s')
  ratios = {label: np.array(times['dense']) / np.array(t) for label, t in times.items()}
  if spread is not None:
    spread.update({label: float(np.subtract(*np.percentile(r, [75, 25]))) / 2
                   for label, r in ratios.items()})
  return {label: float(np.median(r)) for label, r in ratios.items()}


def breakdown(models: dict, base) -> dict[str, dict[str, float]]:
  """{label: {class: ms per image, 'wall': ms}} of one call at batch 1 under the profiler."""
  size = backbone.backbone_kwargs(base)['image_size']
  x = jnp.zeros((1, size, size, 3))
  out = {}
  for label, model in models.items():
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    run = runner(model, variables, 1, size)
    out[label] = op_class_times(run, run.hlo(), calls=3, repeats=3)
    log(f'profile {label}: ' + ', '.join(f'{k} {v:.2f}' for k, v in out[label].items()))
  return out


# ----------------------------------------------------------------------------- report

def report(settings, rows, speed, parts, elapsed, twin_macs=None, spread=None,
           commit=None) -> str:
  twin_macs, spread = twin_macs or {}, spread or {32: {}, 1: {}}
  dense_macs = rows[0][3]
  conv = lambda b, label, macs: speed[b][label] * macs / dense_macs
  noise = {b: np.median([v for k, v in spread[b].items() if k != 'dense'] or [0.0]) for b in speed}
  head = (f'## MACs into time: every method against dense {settings["title"]}\n\n'
          f'`python benchmarks/conversion.py{" --quick" * settings["quick"]}` at '
          f'{commit or git_revision()} on {device_description()}, {elapsed / 60:.0f} min. fp32 '
          f'inference; batch 32 mapped over the host devices, batch 1 on one; '
          f'{settings["rounds"]} rounds (batch 1: {3 * settings["rounds"]}) of '
          f'{settings["iters"]} calls, every model of a budget group and dense in every round; '
          'speed-up = median of the same-round ratios to dense (their half interquartile range, '
          f'median over the models: {noise[32]:.3f} at batch 32, {noise[1]:.3f} at batch 1); '
          'conversion = speed-up / MAC reduction. Eventful: time and MACs per frame after the '
          'first, state donated, every gate at its capacity. See the script\'s docstring for the '
          'models.\n\n'
          '**Blocks alone** is the dense model with each block run on the token counts the '
          'method\'s blocks see (read from the traced shapes) and none of the method\'s own work: '
          'what this hardware gives fewer tokens. A token method\'s conversion is its blocks-alone '
          'conversion times the share its own work (selection, merging, predictors) leaves.')
  if FLOOR in speed[1]:
    head += (f' The hardware\'s part: the dense model\'s blocks on one token each take '
             f'{1 / speed[1][FLOOR]:.0%} of a dense forward at batch 1 and '
             f'{1 / speed[32][FLOOR]:.0%} at batch 32: every call reads all of its weights '
             'whatever the tokens, and at batch 1 no other image shares that read.')
  head += '\n\n'
  by_label = {label: macs for _, label, _, macs in rows}
  lines = []
  for group, label, c, macs in rows:
    if label == 'dense':
      continue
    red = dense_macs / macs
    c32, c1 = conv(32, label, macs), conv(1, label, macs)
    twin = label + ALONE
    alone = ({b: conv(b, twin, twin_macs[twin]) for b in speed} if twin in twin_macs
             and twin in speed[1] else None)
    lines.append([group, label, f'{macs / dense_macs:.3f}', f'{red:.2f}x',
                  f'{speed[32][label]:.2f}x', f'**{c32:.2f}**', f'{speed[1][label]:.2f}x',
                  f'**{c1:.2f}**', f'{alone[32]:.2f} / {alone[1]:.2f}' if alone else '—',
                  why({32: c32, 1: c1}, alone, own_reason(label, speed, by_label, dense_macs))])
  body = head + table(['budget', 'model (knob)', 'MAC fraction', 'MAC reduction',
                       'speed-up b32', 'conversion b32', 'speed-up b1', 'conversion b1',
                       'blocks alone b32 / b1', 'below 0.95 because'], lines)
  dense_parts = parts['dense']
  prow = [['dense', f'{dense_parts["wall"]:.1f}'] +
          [f'{dense_parts[k]:.2f}' for k in CLASSES] + ['1.00', '']]
  for group, label, c, macs in rows:
    if group != 'default' or label == 'dense':
      continue
    red = dense_macs / macs
    p = parts[label]
    excess = {k: p[k] - dense_parts[k] / red for k in CLASSES}
    rate = (macs / p['matmul']) / (dense_macs / dense_parts['matmul'])
    prow.append([label, f'{p["wall"]:.1f} (MACs predict {dense_parts["wall"] / red:.1f})'] +
                [f'{p[k]:.2f} ({excess[k]:+.2f})' for k in CLASSES] +
                [f'{rate:.2f}', reason(speed[1][label] / red, speed[32][label] / red, excess,
                                       rate)])
  body += ('\n\nWhere the time goes, batch 1, ms per image: each class\'s thunk time under the '
           'profiler and, in brackets, its excess: that time minus dense\'s time in the class '
           'divided by the MAC reduction. "matmul rate" is the method\'s MACs per matmul '
           'millisecond relative to dense\'s (below 1: its matmuls run slower per MAC).\n\n' +
           table(['model', 'wall ms'] + [f'{k} ms' for k in CLASSES] +
                 ['matmul rate', 'what costs the time beyond the MACs'], prow))
  return body


def picture(path: str, rows, speed, twin_macs: dict) -> None:
  """conversion.png: conversion against MAC fraction at batch 32 and batch 1, a line per
  method (VTP unaligned, Eventful full) and, dashed, the mean blocks-alone conversion of the
  token methods at each budget: the part the hardware takes."""
  dense_macs = rows[0][3]
  groups, alone = {}, {}
  for group, label, _, macs in rows:
    key = label.split()[0]
    if label == 'dense' or 'align 16' in label or 'align 64' in label or 'tokenwise' in label:
      continue
    groups.setdefault(key, {})[round(macs / dense_macs, 3)] = label, macs
    twin = label + ALONE
    if twin in twin_macs and twin in speed[1]:
      alone.setdefault(group, []).append((twin_macs[twin] / dense_macs, twin))
  panels = []
  for b in (32, 1):
    series = []
    for i, (key, pts) in enumerate(groups.items()):
      xs = sorted(pts)
      series.append({'label': key.replace('_', ' '), 'colour': compare.PALETTE[
          i % len(compare.PALETTE)], 'x': xs,
                     'y': [speed[b][pts[x][0]] * pts[x][1] / dense_macs for x in xs]})
    mean = sorted((np.mean([f for f, _ in t]), np.mean([speed[b][w] * f for f, w in t]))
                  for t in alone.values())
    series.append({'label': 'blocks alone (mean of the token methods)', 'colour': (0, 0, 0),
                   'dashed': True, 'x': [m[0] for m in mean], 'y': [m[1] for m in mean]})
    series.append({'label': '0.95', 'colour': (170, 170, 170), 'x': [0.25, 1.0],
                   'y': [0.95, 0.95]})
    panels.append({'title': f'batch {b}', 'xlabel': 'MAC fraction of dense',
                   'ylabel': 'conversion (speed-up / MAC reduction)', 'series': series})
  line_plot(path, panels)


def own_reason(label: str, speed, macs: dict, dense_macs: float) -> str:
  """Why a model without a blocks-alone twin converts less (VTP, Eventful)."""
  if label.startswith('eventful'):
    return 'its per-frame work outside the MACs (the breakdown below)'
  if label.startswith('vtp'):
    aligned = 'vtp 40 %, align 64'
    if aligned in macs and aligned in speed[1] and label != aligned:
      c = {b: speed[b][aligned] * macs[aligned] / dense_macs for b in speed}
      return f'odd channel widths (rounded up to multiples of 64: {c[32]:.2f} / {c[1]:.2f})'
    return 'its channel widths'
  return 'see the breakdown below'


def why(conv: dict[int, float], alone: dict[int, float] | None, own: str) -> str:
  """What the measurements say of a conversion below 0.95, per batch size: for a token method
  the blocks-alone conversion (the hardware's part) times what its own work leaves; for
  another model `own`."""
  low = [b for b in (32, 1) if conv[b] < 0.95]
  if not low:
    return '—'
  if not alone:
    return ', '.join(f'b{b}' for b in low) + ': ' + own
  return '; '.join(f'b{b}: {conv[b]:.2f} = {alone[b]:.2f} blocks alone x '
                   f'{conv[b] / alone[b]:.2f} own work' for b in low)


def reason(conv1: float, conv32: float, excess: dict[str, float], rate: float) -> str:
  """What the breakdown says of a conversion below 0.95 (at either batch size)."""
  if min(conv1, conv32) >= 0.95:
    return 'nothing: >= 0.95 at both batch sizes'
  words = {'matmul': f'its matmuls run at {rate:.2f} of dense\'s MACs per ms',
           'select': 'gathers, scatters and sorts', 'exp': 'exponentials (not MACs)',
           'rest': 'element-wise work, transposes and copies (not MACs)'}
  big = [k for k in sorted(excess, key=excess.get, reverse=True) if excess[k] > 0.25]
  if not big:
    return 'no class above 0.25 ms per image (overheads between the thunks)'
  return '; '.join(f'{words[k]} ({excess[k]:+.1f} ms)' for k in big)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--iters', type=int, default=3)
  parser.add_argument('--out', default='', help='write the table here, not BENCHMARKS.md')
  parser.add_argument('--report_only', action='store_true',
                      help='no timing: the report and picture again from docs/conversion.json')
  args = parser.parse_args()
  start, commit = time.time(), git_revision()  # the code that runs is the start's
  if args.quick:
    base = ml_collections.ConfigDict(dict(name='vit', dtype='float32', variant='Ti/16',
                                          image_size=64, num_classes=10))
    settings = dict(title='ViT-Ti/16 at 64 px (--quick)', quick=True, rounds=1, iters=1,
                    budgets=(0.65,))
  else:
    base = ml_collections.ConfigDict(dict(name='vit', dtype='float32', variant='S/16',
                                          image_size=224, num_classes=1000))
    settings = dict(title='DeiT-S/16 at 224 px', quick=False, rounds=args.rounds,
                    iters=args.iters, budgets=compare.BUDGETS)
  rows, models = [], {}
  for group, label, c in plan(base, settings['budgets']):
    models[label] = methods.build(c)
    rows.append((group, label, c, methods.macs(models[label])['total']))  # Eventful: per frame
  log(f'{len(rows)} models; ' + '; '.join(f'{l} {m / rows[0][3]:.3f}' for _, l, _, m in rows))
  if args.report_only:
    saved = ('runs', 'conversion-quick.json') if args.quick else ('docs', 'conversion.json')
    return publish(settings, rows, json.load(open(os.path.join(ROOT, *saved))))
  twins = blocks_alone(models, base)
  speed, spread = {32: {}, 1: {}}, {32: {}, 1: {}}
  for group in dict.fromkeys(g for g, _, _, _ in rows):  # a group at a time bounds the memory
    members = {label: models[label] for g, label, _, _ in rows if g == group or label == 'dense'}
    members.update({label + ALONE: twins[label][0] for label in list(members) if label in twins})
    if group == 'default':
      members[FLOOR] = twins[FLOOR][0]
    for b in speed:
      rounds = settings['rounds'] * (3 if b == 1 else 1)  # batch-1 calls are cheap and noisier
      log(f'timing the {group} group ({len(members) - 1} models and dense) at batch {b}')
      speed[b].update(measure(members, base, b, rounds, settings['iters'], spread[b]))
  defaults = {label: models[label] for g, label, _, _ in rows if g == 'default'}
  parts = breakdown(defaults, base)
  twin_macs = {label + ALONE: m for label, (_, m) in twins.items()}
  raw = {'commit': commit, 'minutes': (time.time() - start) / 60,
         'speed': {str(b): s for b, s in speed.items()},
         'spread': {str(b): s for b, s in spread.items()}, 'parts': parts,
         'macs': {**{label: m for _, label, _, m in rows}, **twin_macs}}
  publish(settings, rows, raw, args.out)


def publish(settings, rows, raw: dict, out: str = '') -> None:
  """The report of a run's raw figures (as docs/conversion.json holds them): --quick and --out
  to a file of runs/, else BENCHMARKS.md's section, the picture and docs/conversion.json (what
  --report_only reads back)."""
  speed, spread = ({int(b): v for b, v in raw[k].items()} for k in ('speed', 'spread'))
  twin_macs = {k: v for k, v in raw['macs'].items() if k.endswith(ALONE)}
  body = report(settings, rows, speed, raw['parts'], raw['minutes'] * 60, twin_macs, spread,
                raw['commit'])
  if out or settings['quick']:
    path = out or os.path.join(ROOT, 'runs', 'conversion-quick.md')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, 'w').write(body + '\n')
    json.dump(raw, open(os.path.splitext(path)[0] + '.json', 'w'), indent=1)
    log(f'wrote {path}')
  else:
    picture(os.path.join(ROOT, 'docs', 'conversion.png'), rows, speed, twin_macs)
    body += '\n\n![conversion against MAC fraction](docs/conversion.png)'
    write_section('conversion', body)
    json.dump(raw, open(os.path.join(ROOT, 'docs', 'conversion.json'), 'w'), indent=1)
    log('wrote the conversion section of BENCHMARKS.md, docs/conversion.png and '
        'docs/conversion.json')
  print(body)


if __name__ == '__main__':
  main()
