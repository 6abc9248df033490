"""Pictures of what the methods keep, as PNG files (PIL only).

    python -m tokensparse.viz --workdir runs/dynamicvit_fashion_mnist --out figures/

For a DynamicViT work directory this writes
  kept_tokens.png  rows of eval images: the input, then the tokens left after each stage
                   (dropped patches blanked);
  keep_heatmap.png per stage, how often each patch position is kept over the eval images.
With --eventful R, for any work directory of a per-frame image model:
  eventful_updates.png  a Moving Fashion-MNIST test clip run through an Eventful Transformer
                   (R tokens per gate, or --threshold H): the frames, the tokens recomputed
                   per frame (brightness = share of blocks whose qkv gate recomputed the
                   token), and the counted operations per frame against the dense model.
For a TokenLearner work directory:
  learner_maps.png rows of eval images (for clips: the frames of one clip), the input, then the
                   spatial weights of each learned token over it (brighter = more weight).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

BLANK = np.array([235, 235, 235], np.uint8)


def _to_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C] (C = 1 or 3) -> [H, W, 3]."""
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def blank_dropped(image: np.ndarray, kept: np.ndarray, patch: int) -> np.ndarray:
  """image uint8 [H, W, C]; kept: indices of kept patches (row-major) -> RGB with the rest blanked."""
  out = _to_rgb(image).copy()
  gw = image.shape[1] // patch
  keep = np.zeros((image.shape[0] // patch) * gw, bool)
  keep[np.asarray(kept)] = True
  for i in np.where(~keep)[0]:
    r, c = divmod(int(i), gw)
    out[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = BLANK
  return out


def kept_token_grid(images: np.ndarray, kept_per_stage: list[np.ndarray], patch: int,
                    path: str, scale: int = 4) -> None:
  """images uint8 [B, H, W, C]; kept_per_stage: per stage [B, k_s] kept patch indices."""
  rows = []
  for b in range(images.shape[0]):
    cols = [_to_rgb(images[b])] + [blank_dropped(images[b], k[b], patch) for k in kept_per_stage]
    sep = np.full((images.shape[1], 2, 3), 255, np.uint8)
    rows.append(np.concatenate(sum([[c, sep] for c in cols], [])[:-1], axis=1))
  grid = np.concatenate([np.concatenate([r, np.full((2, r.shape[1], 3), 255, np.uint8)])
                         for r in rows])
  Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                               Image.NEAREST).save(path)


def colormap(x: np.ndarray) -> np.ndarray:
  """[0, 1] -> RGB uint8 on a dark-blue -> yellow ramp (viridis-like)."""
  stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                   np.float32)
  t = np.clip(x, 0, 1) * (len(stops) - 1)
  i = np.minimum(t.astype(int), len(stops) - 2)
  f = (t - i)[..., None]
  return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def keep_heatmaps(freqs: list[np.ndarray], path: str, cell: int = 24,
                  titles: list[str] | None = None) -> None:
  """freqs: per stage [gh, gw] keep frequency in [0, 1] -> side-by-side heat maps with a scale."""
  panels = []
  for s, f in enumerate(freqs):
    img = Image.fromarray(colormap(f)).resize((f.shape[1] * cell, f.shape[0] * cell), Image.NEAREST)
    canvas = Image.new('RGB', (img.width, img.height + 16), 'white')
    canvas.paste(img, (0, 16))
    ImageDraw.Draw(canvas).text((2, 2), (titles or [f'stage {s + 1}'] * len(freqs))[s], fill='black')
    panels.append(canvas)
  bar = Image.fromarray(colormap(np.linspace(1, 0, panels[0].height - 16)[:, None]
                                 .repeat(12, 1))).convert('RGB')
  legend = Image.new('RGB', (bar.width + 40, panels[0].height), 'white')
  legend.paste(bar, (0, 16))
  d = ImageDraw.Draw(legend)
  d.text((14, 12), '1.0', fill='black')
  d.text((14, legend.height - 12), '0.0', fill='black')
  width = sum(p.width + 8 for p in panels) + legend.width
  out = Image.new('RGB', (width, panels[0].height), 'white')
  x = 0
  for p in panels + [legend]:
    out.paste(p, (x, 0))
    x += p.width + 8
  out.save(path)


def overlay(image: np.ndarray, weights: np.ndarray, patch: int) -> np.ndarray:
  """image uint8 [H, W, C]; weights [gh, gw] -> the image dimmed, tinted by the weights scaled
  to their own maximum (upsampled patch by patch)."""
  w = weights / max(float(weights.max()), 1e-12)
  heat = colormap(np.kron(w, np.ones((patch, patch))))
  grey = _to_rgb(image).astype(np.float32)
  return (0.35 * grey + 0.65 * heat).astype(np.uint8)


def learner_map_grid(images: np.ndarray, weights: np.ndarray, grid: tuple[int, int], patch: int,
                     path: str, scale: int = 4) -> None:
  """images uint8 [R, H, W, C]; weights [R, S, gh*gw] -> one row per image: input, S maps."""
  sep_v = np.full((images.shape[1], 2, 3), 255, np.uint8)
  rows = []
  for r in range(images.shape[0]):
    cols = [_to_rgb(images[r])] + [overlay(images[r], m.reshape(grid), patch) for m in weights[r]]
    rows.append(np.concatenate(sum([[c, sep_v] for c in cols], [])[:-1], axis=1))
  grid_img = np.concatenate([np.concatenate([r, np.full((2, r.shape[1], 3), 255, np.uint8)])
                             for r in rows])
  Image.fromarray(grid_img).resize((grid_img.shape[1] * scale, grid_img.shape[0] * scale),
                                   Image.NEAREST).save(path)


def bar_panel(values: list[float], reference: float, width: int, height: int,
              label: str) -> Image.Image:
  """Bars (one per value) on a white panel with a dashed line at `reference` (the dense cost)."""
  img = Image.new('RGB', (width, height + 14), 'white')
  d = ImageDraw.Draw(img)
  top = max(max(values), reference) * 1.05
  slot = width / len(values)
  for i, v in enumerate(values):
    h = int(height * v / top)
    d.rectangle([int(i * slot) + 3, height - h, int((i + 1) * slot) - 3, height],
                fill=(59, 117, 175))
  y = height - int(height * reference / top)
  for x in range(0, width, 8):
    d.line([(x, y), (x + 4, y)], fill=(200, 40, 40))
  d.text((2, height + 2), label, fill='black')
  return img


def eventful_strip(frames: np.ndarray, updated: np.ndarray, grid: tuple[int, int], patch: int,
                   num_prefix: int, macs: list[float], dense_macs: float, path: str,
                   scale: int = 3) -> None:
  """frames uint8 [T, H, W, C]; updated [T, depth, N] bool (qkv gates) -> PNG: frames, update
  maps, operations per frame."""
  t, h, w = frames.shape[:3]
  share = updated[:, :, num_prefix:].mean(axis=1)                  # [T, patches]
  top = np.concatenate(sum([[_to_rgb(f), np.full((h, 2, 3), 255, np.uint8)] for f in frames],
                           [])[:-1], axis=1)
  maps = [overlay(f, s.reshape(grid) + 1e-6, patch) for f, s in zip(frames, share)]
  mid = np.concatenate(sum([[m, np.full((h, 2, 3), 255, np.uint8)] for m in maps], [])[:-1],
                       axis=1)
  grid_img = np.concatenate([top, np.full((2, top.shape[1], 3), 255, np.uint8), mid])
  img = Image.fromarray(grid_img).resize((grid_img.shape[1] * scale, grid_img.shape[0] * scale),
                                         Image.NEAREST)
  bars = bar_panel(macs, dense_macs, img.width, 70,
                   'MMACs per frame (red dashes: dense); frame 0 is dense')
  out = Image.new('RGB', (img.width, img.height + bars.height + 4), 'white')
  out.paste(img, (0, 0))
  out.paste(bars, (0, img.height + 4))
  out.save(path)


def eventful_figures(workdir: str, out: str, capacity: int, threshold: float | None = None,
                     variant: str = 'full', clip_index: int = 0):
  """eventful_updates.png: see the module docstring."""
  import jax  # pylint: disable=g-import-not-at-top
  from tokensparse import flops, models  # pylint: disable=g-import-not-at-top
  from tokensparse.data import moving_fashion_mnist, pipeline  # pylint: disable=g-import-not-at-top
  from tokensparse.models.eventful import EventfulViT, run_clip  # pylint: disable=g-import-not-at-top
  config, _, params, _ = restore(workdir, 1)
  kw = models.backbone_kwargs(config.model)
  model = EventfulViT(**kw, capacity=capacity, variant=variant, threshold=threshold)
  clips, _ = moving_fashion_mnist.load_clips(kw['image_size'], clip_index + 1,
                                             data_dir=config.data.data_dir)
  clip = clips[clip_index]
  x = pipeline.normalize(clip, config.data.mean, config.data.std)[None]
  _, updated = jax.jit(lambda c: run_clip(model, {'params': params}, c))(x)
  updated = np.asarray(updated[0])                               # [T, depth, N]
  dense = flops.vit_macs(models.build(config.model), clip.shape[-1])['total'] / 1e6
  # Operations per frame from the tokens each frame's qkv gates recomputed (the other gates
  # select as many under top-r; under a threshold this is an estimate).
  macs = [dense] + [flops.eventful_macs(model, int(round(u.sum(-1).mean())),
                                        clip.shape[-1])['total'] / 1e6 for u in updated[1:]]
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'eventful_updates.png')
  eventful_strip(clip, updated, model.grid, model.patch_size, model.num_prefix, macs, dense, path)
  return (path,)


def restore(workdir: str, num_eval: int):
  """(config, model, params, eval inputs uint8 [n, ...]) of a tokensparse work directory."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from tokensparse import models  # pylint: disable=g-import-not-at-top
  from tokensparse.data import pipeline  # pylint: disable=g-import-not-at-top
  from tokensparse.train import checkpoint  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(checkpoint.load_config(workdir))
  mngr = checkpoint.manager(workdir)
  params = mngr.restore(mngr.latest_step(), args=checkpoint.ocp.args.Composite(
      state=checkpoint.ocp.args.StandardRestore()))['state']['params']
  model = models.build(config.model)
  builder = pipeline.get_builder(config.data)
  source = pipeline.open_split(builder, config.data.eval_split)
  image_key, label_key = pipeline.keys(builder)
  prep = pipeline.Preprocess(config.data, config.model.image_size, image_key, label_key)
  n = min(num_eval, len(source))
  raw = np.stack([prep.eval(ex, i)['image'] for i, ex in
                  enumerate(pipeline.read_many(source, list(range(n))))])
  return config, model, params, raw


def token_learner_figures(workdir: str, out: str, num_images: int = 8):
  """learner_maps.png: see the module docstring."""
  import jax  # pylint: disable=g-import-not-at-top
  from tokensparse.data import pipeline  # pylint: disable=g-import-not-at-top
  config, model, params, raw = restore(workdir, num_images)
  batch = pipeline.normalize(raw, config.data.mean, config.data.std)
  weights = np.asarray(jax.jit(lambda p, x: model.apply({'params': p}, x)[1]['learner_weights'])(
      params, batch))                                   # [n * frames, S, N]
  if model.num_frames:  # the frames of the first clip, one per row
    raw, weights = raw[0], weights[:model.num_frames]
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'learner_maps.png')
  learner_map_grid(raw, weights, model.grid, model.patch_size, path)
  return (path,)


def dynamic_vit_figures(workdir: str, out: str, num_images: int = 8, num_eval: int = 2000):
  import jax  # pylint: disable=g-import-not-at-top
  from tokensparse.data import pipeline  # pylint: disable=g-import-not-at-top
  config, model, params, raw = restore(workdir, num_eval)
  n = len(raw)
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x)[1]['kept_indices'])
  kept = [[] for _ in model.prune_layers]
  for i in range(0, n, 250):
    batch = pipeline.normalize(raw[i:i + 250], config.data.mean, config.data.std)
    for s, k in enumerate(apply(params, batch)):
      kept[s].append(np.asarray(k))
  kept = [np.concatenate(k) for k in kept]
  os.makedirs(out, exist_ok=True)
  kept_token_grid(raw[:num_images], [k[:num_images] for k in kept], model.patch_size,
                  os.path.join(out, 'kept_tokens.png'))
  gh, gw = model.grid
  freqs = [np.bincount(k.reshape(-1), minlength=gh * gw).reshape(gh, gw) / n for k in kept]
  keep_heatmaps(freqs, os.path.join(out, 'keep_heatmap.png'),
                titles=[f'after stage {s + 1} ({c} kept)' for s, c in enumerate(model.counts)])
  return os.path.join(out, 'kept_tokens.png'), os.path.join(out, 'keep_heatmap.png')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', default='figures')
  parser.add_argument('--num_images', type=int, default=8)
  parser.add_argument('--eventful', type=int, default=0,
                      help='run a test clip through an Eventful Transformer with this many '
                      'tokens per gate (any per-frame image model)')
  parser.add_argument('--threshold', type=float, default=None)
  parser.add_argument('--variant', default='full')
  args = parser.parse_args()
  if args.eventful:
    for path in eventful_figures(args.workdir, args.out, args.eventful, args.threshold,
                                 args.variant):
      print('wrote', path)
    return
  from tokensparse.train import checkpoint  # pylint: disable=g-import-not-at-top
  name = checkpoint.load_config(args.workdir)['model']['name']
  figures = {'dynamic_vit': dynamic_vit_figures, 'token_learner': token_learner_figures}
  if name not in figures:
    raise SystemExit(f'{args.workdir}: no figures for model.name={name!r} '
                     f'(have: {", ".join(figures)})')
  for path in figures[name](args.workdir, args.out, args.num_images):
    print('wrote', path)


if __name__ == '__main__':
  main()
