"""Eventful figure: eventful_updates.png, a Moving Fashion-MNIST test clip run through the
Eventful Transformer: the frames, the tokens recomputed per frame (brightness = share of blocks
whose qkv gate recomputed the token), and the counted operations per frame against the dense
model (dashed)."""
from __future__ import annotations

import os

import jax
import numpy as np
from PIL import Image

from tokensparse import drawing
from tokensparse import flops as base_flops
from tokensparse.data import moving_fashion_mnist
from tokensparse.drawing import bar_panel, overlay, to_rgb
from tokensparse.methods.eventful import flops
from tokensparse.methods.eventful.model import run_clip, run_video


def update_strip(frames: np.ndarray, updated: np.ndarray, grid: tuple[int, int], patch: int,
                 num_prefix: int, macs: list[float], dense_macs: float, path: str,
                 scale: int = 3, title: str = 'Eventful Transformer',
                 unit: str = 'frame') -> None:
  """frames uint8 [T, H, W, C]; updated [T, depth, N] bool (qkv gates) -> PNG: frames, update
  maps, operations per `unit` (a frame, or a video model's time step)."""
  t, h, w = frames.shape[:3]
  share = updated[:, :, num_prefix:].mean(axis=1)                  # [T, patches]
  top = np.concatenate(sum([[to_rgb(f), np.full((h, 2, 3), 255, np.uint8)] for f in frames],
                           [])[:-1], axis=1)
  maps = [overlay(f, s.reshape(grid) + 1e-6, patch) for f, s in zip(frames, share)]
  mid = np.concatenate(sum([[m, np.full((h, 2, 3), 255, np.uint8)] for m in maps], [])[:-1],
                       axis=1)
  grid_img = np.concatenate([top, np.full((2, top.shape[1], 3), 255, np.uint8), mid])
  img = Image.fromarray(grid_img).resize((grid_img.shape[1] * scale, grid_img.shape[0] * scale),
                                         Image.NEAREST)
  bars = bar_panel(macs, dense_macs, img.width, 70,
                   f'MMACs per {unit} (red dashes: dense); {unit} 0 is dense')
  out = Image.new('RGB', (img.width, img.height + bars.height + 4), 'white')
  out.paste(img, (0, 0))
  out.paste(bars, (0, img.height + 4))
  drawing.annotate(out, title, caption=[
      'top: the frames; middle: the tokens recomputed (bright: by the qkv gates of every '
      f'block), first {unit} dense', f'bottom: the counted operations per {unit} against the '
      'dense model']).save(path)


def figures(predictor, out: str, num_images: int = 8, clip_index: int = 0):
  """eventful_updates.png for the predictor's Eventful model (see the module docstring): a
  Moving Fashion-MNIST test clip for an image model, the model's own first eval clip for a
  video model (each step drawn by its tubelet's last frame)."""
  del num_images
  model, config = predictor.model, predictor.config
  if model.factorised:
    clip = drawing.eval_inputs(config, clip_index + 1)[clip_index]     # [T, H, W, C]
    run = jax.jit(lambda v, c: run_video(model, v, c)['updated'])
    updated = np.asarray(run(predictor.variables, predictor.normalize(clip)[None])[0])
    shown = clip[model.tubelet - 1::model.tubelet]
    dense = flops.eventful_clip_macs(model, model.num_tokens, clip.shape[-1])['first_step'] / 1e6
  else:
    clips, _ = moving_fashion_mnist.load_clips(model.image_size, clip_index + 1,
                                               data_dir=config.data.data_dir)
    clip = clips[clip_index]
    if clip.shape[-1] != predictor.channels:
      raise ValueError(f'the test clips have {clip.shape[-1]} channel(s); this model takes '
                       f'{predictor.channels}')
    x = predictor.normalize(clip)[None]
    _, updated = jax.jit(lambda v, c: run_clip(model, v, c))(predictor.variables, x)
    updated = np.asarray(updated[0])                               # [T, depth, N]
    shown = clip
    dense = base_flops.vit_macs(model, clip.shape[-1])['total'] / 1e6
  # Operations per step from the tokens each step's qkv gates recomputed (the other gates
  # select as many under top-r; under a threshold this is an estimate).
  macs = [dense] + [flops.eventful_macs(model, int(round(u.sum(-1).mean())),
                                        clip.shape[-1])['total'] / 1e6 for u in updated[1:]]
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, 'eventful_updates.png')
  policy = f'r = {model.m} of {model.num_tokens}' + (
      f', threshold {model.threshold:g}' if model.threshold is not None else '')
  unit = 'step' if model.factorised else 'frame'
  update_strip(shown, updated, model.grid, model.patch_size, model.num_prefix, macs, dense, path,
               title=f'Eventful Transformer ({model.variant}, {policy}): tokens recomputed per '
               f'{unit}', unit=unit)
  return (path,)
