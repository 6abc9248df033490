"""Jitted inference from a trained model: `load(workdir)` -> a `Predictor`.

    from tokensparse import inference
    predictor = inference.load('runs/vit_fashion_mnist')
    logits = predictor.predict(images)        # uint8 [B, H, W, C] as stored (or float pixels)
    labels = predictor.classify(images)

`predict` normalises pixels with the config's mean/std and runs the model in inference mode
(DynamicViT: top-k gather; TokenLearner; pruned VTP; any backbone), compiled once per batch
size. Inputs of the wrong size or channel count are refused with the shape the model needs.
A timm / DeiT / vit_jax file needs the model config: `load(path, config=config)`.
`load(path, method='tome:r=8')` runs the weights through another method on the same backbone
(the training-free ones: ToMe, EViT, the Eventful Transformer).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tokensparse import checkpoint, configs, methods
from tokensparse.data import pipeline


class Predictor:
  """A model, its variables and its config, with jitted entry points (see module docstring)."""

  def __init__(self, config, variables: dict[str, Any]):
    self.config = config
    self.model = methods.build(config.model)
    self.variables = variables
    self.mean = np.asarray(config.data.mean, np.float32)
    self.std = np.asarray(config.data.std, np.float32)
    self.channels = int(np.shape(variables['params']['embedding']['kernel'])[-2])
    self._apply = jax.jit(lambda v, x: self.model.apply(v, x)[0])

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one input (no batch axis)."""
    s, t = self.model.image_size, self.model.num_frames
    return ((t,) if t else ()) + (s, s, self.channels)

  def check(self, images) -> None:
    """Pixels as stored: uint8, or floats in [0, 255]; of `input_shape`, a batch of at least
    one. Anything else (other integer or bool types, NaN/inf, values out of range, an empty
    batch) is refused in one line."""
    shape = tuple(np.shape(images))
    if len(shape) != len(self.input_shape) + 1 or shape[1:] != self.input_shape:
      raise ValueError(f'inputs have shape {shape}; this model takes [batch, '
                       f'{", ".join(map(str, self.input_shape))}] (image_size '
                       f'{self.model.image_size}, {self.channels} channel(s)'
                       + (f', {self.model.num_frames} frames' if self.model.num_frames else '')
                       + ')')
    if shape[0] == 0:
      raise ValueError(f'inputs have shape {shape}: an empty batch')
    dtype = np.result_type(images) if not hasattr(images, 'dtype') else np.dtype(images.dtype)
    if dtype == np.uint8:
      return
    if dtype.kind != 'f':
      raise ValueError(f'inputs are {dtype}: pixels must be uint8 or floats in [0, 255] (as '
                       'stored); convert them, e.g. np.clip(x, 0, 255).astype(np.uint8)')
    x = np.asarray(images)
    if not np.isfinite(x).all():
      raise ValueError(f'inputs hold {int((~np.isfinite(x)).sum())} NaN or infinite value(s)')
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
      raise ValueError(f'inputs range over [{lo:g}, {hi:g}]: float pixels must lie in [0, 255] '
                       '(as stored, before normalisation)')

  def examples(self, n: int, split: str = '') -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels): the first n examples of the model's eval split (or `split`, e.g.
    'train') as `predict` takes them (uint8, canvas placement and crop applied)."""
    return pipeline.examples(self.config, n, split)

  def normalize(self, images) -> jax.Array:
    """Pixels (uint8, or floats in [0, 255]) -> the normalised float32 model input."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    return (x - self.mean) / self.std

  def predict(self, images) -> jax.Array:
    """Logits [B, classes] for pixel inputs of `input_shape`."""
    self.check(images)
    return self._apply(self.variables, self.normalize(images))

  def classify(self, images) -> np.ndarray:
    return np.asarray(jnp.argmax(self.predict(images), axis=-1))


def load(path: str, config=None, method: str | None = None) -> Predictor:
  """A Predictor from a tokensparse work directory, or from a timm/DeiT/vit_jax checkpoint file
  with its model/data `config` (an ml_collections ConfigDict as in configs/). `method`
  ('name:key=value,...') runs the weights through that method instead (same backbone)."""
  saved, variables, info = checkpoint.load_variables(path, config)
  if os.path.isdir(path) and config is not None:
    saved = config
  if method:
    saved = methods.retarget(saved, method)
  saved = configs.complete(saved)
  configs.validate_model(saved)
  if 'mean' in info and saved.data.get('mean') is None:
    saved.data.mean, saved.data.std = info['mean'], info['std']
  return Predictor(saved, variables)


def data_for(config) -> pipeline.Data:
  """The eval pipeline of a trained model's config on this host."""
  return pipeline.Data(config, local_devices=jax.local_device_count(),
                       process_index=jax.process_index(), process_count=jax.process_count())
