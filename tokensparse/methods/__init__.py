"""The method registry: the one place that maps `model.name` to a method.

Each method is a folder `tokensparse/methods/<name>/` exposing `METHODS`, a tuple of `Method`
objects (base.py says what they provide). The trainer, inference, evaluate, export, viz,
convert and the benchmarks go through `get(name)` / `of(model)` and never test a name
themselves. To add a method: write its folder and add it to `_PACKAGES`.

    from tokensparse import methods
    model = methods.build(config.model)            # the Flax module
    methods.get(config.model.name).loss_fn(config)  # its training objective
    methods.macs(model)                             # its MACs by part, in inference mode
"""
from __future__ import annotations

from typing import Any

import ml_collections

from tokensparse.methods import ats, dynamic_vit, eventful, evit, token_learner, tome, vit, vtp
from tokensparse.methods.base import Method, Variant  # noqa: F401  (re-exported)

_PACKAGES = (vit, dynamic_vit, token_learner, vtp, eventful, tome, evit, ats)
REGISTRY: dict[str, Method] = {m.name: m for p in _PACKAGES for m in p.METHODS}
NAMES = tuple(REGISTRY)


def get(name: str) -> Method:
  """The Method registered as `name` (config.model.name)."""
  if name not in REGISTRY:
    raise ValueError(f'model.name={name!r}: unknown method; available: {", ".join(NAMES)}')
  return REGISTRY[name]


def of(model) -> Method:
  """The Method of a built Flax module (by its class)."""
  for method in REGISTRY.values():
    if type(model) is method.model_class:  # pylint: disable=unidiomatic-typecheck
      return method
  raise ValueError(f'{type(model).__name__} is not the model of a registered method')


def build(model_config: Any):
  """The Flax module for `model_config.name` (default 'vit', the dense backbone)."""
  return get(model_config.get('name', 'vit')).build(model_config)


def macs(model, channels: int = 3) -> dict[str, int]:
  """MACs by part (with 'total') of any tokensparse model, in its inference mode."""
  return of(model).macs(model, channels)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
  """'eventful:capacity=16,variant=full' -> ('eventful', {'capacity': '16', 'variant': 'full'})."""
  name, _, rest = spec.partition(':')
  options = {}
  for part in filter(None, rest.split(',')):
    key, eq, value = part.partition('=')
    if not eq:
      raise ValueError(f'--method {spec!r}: options are key=value, got {part!r}')
    options[key.strip()] = value.strip()
  get(name)
  return name, options


def retarget(config, spec: str):
  """A copy of `config` whose model is the method of `spec` ('name:key=value,...') on the same
  backbone: runs a trained model's weights through another method (for example the Eventful
  Transformer or ToMe on a dense checkpoint)."""
  name, options = parse_spec(spec)
  config = ml_collections.ConfigDict(config.to_dict())
  method = get(name)
  config.model.name = name
  defaults = method.defaults()
  if defaults is not None and name not in config.model:
    config.model[name] = defaults
  method.apply_options(config.model, options)
  return config
