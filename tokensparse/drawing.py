"""Drawing helpers for method figures (PIL only): kept-token grids, keep-frequency heat maps,
learner-map overlays, bar panels, and the eval inputs a model sees. The `viz` CLI
(tokensparse/viz.py) calls each method's `figures`, which draw with these.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from PIL import Image, ImageDraw

from tokensparse.data import pipeline

BLANK = np.array([150, 190, 235], np.uint8)  # light blue: no garment has this colour


def to_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C] (C = 1 or 3) -> [H, W, 3]."""
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def blank_dropped(image: np.ndarray, kept: np.ndarray, patch: int) -> np.ndarray:
  """image uint8 [H, W, C]; kept: indices of kept patches (row-major) -> RGB with the rest blanked."""
  out = to_rgb(image).copy()
  gw = image.shape[1] // patch
  keep = np.zeros((image.shape[0] // patch) * gw, bool)
  keep[np.asarray(kept)] = True
  for i in np.where(~keep)[0]:
    r, c = divmod(int(i), gw)
    out[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = BLANK
  return out


def annotate(img: Image.Image, title: str, columns: list[str] | None = None,
             column_width: int = 0, caption: list[str] | None = None) -> Image.Image:
  """`img` with a header (a title line, and a label over each column of width `column_width`)
  and a footer of caption lines, so a figure explains itself without the README."""
  line = 14
  head = line + (line if columns else 0) + 6
  foot = line * len(caption or []) + (6 if caption else 0)
  out = Image.new('RGB', (max(img.width, 8 * len(title) + 8), img.height + head + foot), 'white')
  out.paste(img, (0, head))
  d = ImageDraw.Draw(out)
  d.text((4, 2), title, fill='black')
  for i, label in enumerate(columns or []):
    d.text((i * column_width + 4, line + 4), label[:max(column_width // 6, 4)], fill='black')
  for i, text in enumerate(caption or []):
    d.text((4, head + img.height + 4 + i * line), text, fill=(60, 60, 60))
  return out


def kept_token_grid(images: np.ndarray, kept_per_stage: list[np.ndarray], patch: int,
                    path: str, scale: int = 4, title: str = 'kept tokens',
                    stage_titles: list[str] | None = None) -> None:
  """images uint8 [B, H, W, C]; kept_per_stage: per stage [B, k_s] kept patch indices -> a
  PNG: one row per image, the input then what is left after each stage, titled and labelled,
  with a legend for the blanked patches."""
  rows = []
  for b in range(images.shape[0]):
    cols = [to_rgb(images[b])] + [blank_dropped(images[b], k[b], patch) for k in kept_per_stage]
    sep = np.full((images.shape[1], 2, 3), 255, np.uint8)
    rows.append(np.concatenate(sum([[c, sep] for c in cols], [])[:-1], axis=1))
  grid = np.concatenate([np.concatenate([r, np.full((2, r.shape[1], 3), 255, np.uint8)])
                         for r in rows])
  img = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale),
                                     Image.NEAREST)
  columns = ['input'] + (stage_titles or [f'stage {s + 1}' for s in range(len(kept_per_stage))])
  annotate(img, title, columns, (images.shape[2] + 2) * scale,
           ['light blue: patches whose tokens are no longer in the sequence']
           ).save(path)


def colormap(x: np.ndarray) -> np.ndarray:
  """[0, 1] -> RGB uint8 on a dark-blue -> yellow ramp (viridis-like)."""
  stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
                   np.float32)
  t = np.clip(x, 0, 1) * (len(stops) - 1)
  i = np.minimum(t.astype(int), len(stops) - 2)
  f = (t - i)[..., None]
  return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def keep_heatmaps(freqs: list[np.ndarray], path: str, cell: int = 24,
                  titles: list[str] | None = None, title: str = '') -> None:
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
  annotate(out, title or 'how often each position is kept', caption=[
      'colour: the share of images in which the patch at that position is still a token']
           ).save(path)


def overlay(image: np.ndarray, weights: np.ndarray, patch: int) -> np.ndarray:
  """image uint8 [H, W, C]; weights [gh, gw] -> the image dimmed, tinted by the weights scaled
  to their own maximum (upsampled patch by patch)."""
  w = weights / max(float(weights.max()), 1e-12)
  heat = colormap(np.kron(w, np.ones((patch, patch))))
  grey = to_rgb(image).astype(np.float32)
  return (0.35 * grey + 0.65 * heat).astype(np.uint8)


def learner_map_grid(images: np.ndarray, weights: np.ndarray, grid: tuple[int, int], patch: int,
                     path: str, scale: int = 4, title: str = 'learned tokens') -> None:
  """images uint8 [R, H, W, C]; weights [R, S, gh*gw] -> one row per image: input, S maps,
  titled and labelled."""
  sep_v = np.full((images.shape[1], 2, 3), 255, np.uint8)
  rows = []
  for r in range(images.shape[0]):
    cols = [to_rgb(images[r])] + [overlay(images[r], m.reshape(grid), patch) for m in weights[r]]
    rows.append(np.concatenate(sum([[c, sep_v] for c in cols], [])[:-1], axis=1))
  grid_img = np.concatenate([np.concatenate([r, np.full((2, r.shape[1], 3), 255, np.uint8)])
                             for r in rows])
  img = Image.fromarray(grid_img).resize((grid_img.shape[1] * scale, grid_img.shape[0] * scale),
                                         Image.NEAREST)
  columns = ['input'] + [f'token {s + 1}' for s in range(weights.shape[1])]
  annotate(img, title, columns, (images.shape[2] + 2) * scale,
           ['each map: where a learned token takes its features (bright = more weight, '
            'scaled to its maximum)']).save(path)


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


def eval_inputs(config, n: int) -> np.ndarray:
  """The first n eval inputs of a config's data, as the model sees them before normalisation
  (uint8 [n, ...]: canvas placement and crops applied)."""
  return pipeline.examples(config, n)[0]


def kept_token_figures(predictor, out: str, titles: list[str], num_images: int = 8,
                       num_eval: int = 2000) -> tuple[str, str]:
  """For models whose aux has 'kept_indices' (per stage, original patch positions [B, k];
  negative entries are fused tokens and ignored): kept_tokens.png (rows of eval images, the
  input, then the patches left after each stage) and keep_heatmap.png (per stage, how often
  each position is kept over `num_eval` eval images)."""
  model = predictor.model
  raw = eval_inputs(predictor.config, num_eval)
  n = len(raw)
  apply = jax.jit(lambda v, x: model.apply(v, x)[1]['kept_indices'])
  kept = None
  for i in range(0, n, 250):
    stages = apply(predictor.variables, predictor.normalize(raw[i:i + 250]))
    kept = kept or [[] for _ in stages]
    for s, k in enumerate(stages):
      kept[s].append(np.asarray(k))
  kept = [np.concatenate(k) for k in kept]
  os.makedirs(out, exist_ok=True)
  paths = os.path.join(out, 'kept_tokens.png'), os.path.join(out, 'keep_heatmap.png')
  kept_token_grid(raw[:num_images], [[row[row >= 0] for row in k[:num_images]] for k in kept],
                  model.patch_size, paths[0], title=f'{predictor.config.model.name}: the patch '
                  'tokens left after each stage', stage_titles=titles)
  gh, gw = model.grid
  freqs = [np.bincount(k[k >= 0], minlength=gh * gw).reshape(gh, gw) / n for k in kept]
  keep_heatmaps(freqs, paths[1], titles=titles, title=f'{predictor.config.model.name}: how '
                f'often each position is kept, over {n} eval images')
  return paths
