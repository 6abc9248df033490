"""The Method interface: everything the trainer and tools need to know about one method.

A method lives in `tokensparse/methods/<name>/` (model, pure ops, loss terms, MAC counting,
figures, checkpoint-import rules, config defaults and validation) and registers one `Method`
object in `tokensparse/methods/__init__.py`. The trainer, inference, evaluate, export, viz,
flops and convert call these hooks and never ask which method they hold. Every hook has a
default that fits a model which is just the backbone with a different forward pass.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import ml_collections

from tokensparse import backbone


def fail(field: str, value, why: str):
  """Raise the ValueError every validator uses: 'field=value: why'."""
  raise ValueError(f'{field}={value!r}: {why}')


def boolean(text: str) -> bool:
  """'1', 'true', 'yes' (any case) -> True; '0', 'false', 'no' -> False."""
  if text.lower() not in ('1', 'true', 'yes', '0', 'false', 'no'):
    raise ValueError(f'{text!r} is not a boolean (true/false)')
  return text.lower() in ('1', 'true', 'yes')


def int_or_list(text: str):
  """'8' -> 8; '3/2/1' -> [3, 2, 1] (one value per block)."""
  return [int(v) for v in text.split('/')] if '/' in text else int(text)


def int_tuple(text: str) -> tuple[int, ...]:
  """'3/6/9' -> (3, 6, 9)."""
  return tuple(int(v) for v in text.split('/') if v)


class Method:
  """Defaults for a method; subclasses override what differs (see the module docstring)."""
  name: str = ''
  summary: str = ''
  model_class: type = backbone.ViT
  # Variable collections the model creates and the optimiser trains ({'params', ...}).
  collections: tuple[str, ...] = ('params',)
  # Fields of config.model.<name> that `--method NAME:key=value` may set, with their parsers.
  options: dict[str, Callable[[str], Any]] = {}

  # ----------------------------------------------------------------------------- config
  def defaults(self) -> ml_collections.ConfigDict | None:
    """The method's own model fields (set under config.model.<name> or config.model), or None."""
    return None

  def model_kwargs(self, model_config: Any) -> dict[str, Any]:
    """Keyword arguments of `model_class` beyond the backbone's."""
    del model_config
    return {}

  def build(self, model_config: Any):
    """The Flax module for `model_config`."""
    return self.model_class(**backbone.backbone_kwargs(model_config),
                            **self.model_kwargs(model_config))

  def validate(self, config: Any, kw: dict[str, Any]) -> None:
    """Raise ValueError naming the first method field of `config` that cannot work; `kw` are
    the (already checked) backbone kwargs."""
    del config, kw

  def apply_options(self, model_config: Any, options: dict[str, str]) -> None:
    """Set config.model.<name>.<key> from the 'key=value' options of a command line
    (`--method NAME:key=value,...`), parsed by `self.options`."""
    for key, text in options.items():
      if key not in self.options:
        known = ', '.join(f'{k}=' for k in self.options) or 'nothing'
        fail(f'--method {self.name}:{key}', text, f'expected one of {known}')
      try:
        value = self.options[key](text)
      except ValueError as e:
        raise ValueError(f'--method {self.name}:{key}={text!r}: {e}') from None
      with model_config.unlocked():
        model_config[self.name][key] = value

  # ----------------------------------------------------------------------------- training
  def loss_fn(self, config: Any) -> Callable:
    """loss_fn(model, params, batch, rng, train, frozen) -> (mean loss, metric sums)."""
    from tokensparse.train import steps  # pylint: disable=g-import-not-at-top
    return steps.classification_loss(config)

  def frozen_variables(self, config: Any, params: Any) -> dict[str, Any]:
    """Variables the loss reads but never trains (a frozen teacher), from the loaded params."""
    del config, params
    return {}

  # ----------------------------------------------------------------------------- tools
  def macs(self, model, channels: int = 3) -> dict[str, int]:
    """Multiply-accumulates by part (with 'total') of one input in inference mode."""
    from tokensparse import flops  # pylint: disable=g-import-not-at-top
    return flops.vit_macs(model, channels)

  def checkpoint_rules(self, model_config: Any) -> list:
    """Extra (timm source key, flax path, transform) rules for the method's own parameters in
    foreign checkpoints (the backbone's rules are in tokensparse.convert)."""
    del model_config
    return []

  def figures(self, predictor, out: str, num_images: int = 8) -> Sequence[str]:
    """Write PNG figures of what the method does with a predictor's model (tokensparse.
    inference) into the folder `out`; returns the paths."""
    del predictor, out, num_images
    raise ValueError(f'no figures for model.name={self.name!r}; draw what a training-free '
                     'method does with these weights with --method NAME[:key=value] (e.g. '
                     '--method tome:r=4; --list names them)')

  def export(self, predictor, platforms: Sequence[str] | None = None):
    """A `jax.export.Exported` of the model's inference function (symbolic batch)."""
    from tokensparse import export  # pylint: disable=g-import-not-at-top
    return export.export_predictor(predictor, platforms)
