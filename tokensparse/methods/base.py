"""The Method interface: everything the trainer and tools need to know about one method.

A method lives in `tokensparse/methods/<name>/` (model, pure ops, loss terms, MAC counting,
figures, checkpoint-import rules, config defaults and validation) and registers one `Method`
object in `tokensparse/methods/__init__.py`. The trainer, inference, evaluate, export, viz,
convert and the benchmarks call these hooks and never ask which method they hold. Every hook
has a default that fits a model which is just the backbone with a different forward pass.

Config schema: a method's model fields live under `config.model.<name>` and its loss weights
under `config.loss.<name>`; `defaults()` and `loss_defaults()` give their values, merged by
`tokensparse.configs` (and by `fields` here), so a config sets only what differs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import ml_collections

from tokensparse import backbone, flops, objectives
from tokensparse.fields import fail


@dataclasses.dataclass(frozen=True)
class Variant:
  """One line of the method comparison (benchmarks/compare.py): its key and label, the model
  fields that make it (on top of the method's defaults), and the config whose recipe fine-tunes
  it on the canvas task ('path/under/configs.py[:argument]'; None: the method trains in stages
  of its own, as VTP's sparsity training, pruning and fine-tuning)."""
  key: str
  label: str
  recipe: str | None
  fields: dict = dataclasses.field(default_factory=dict)


class Method:
  """Defaults for a method; subclasses override what differs (see the module docstring)."""
  name: str = ''
  summary: str = ''
  model_class: type = backbone.ViT
  # Variable collections the model creates and the optimiser trains ({'params', ...}).
  collections: tuple[str, ...] = ('params',)
  # Fields of config.model.<name> that `--method NAME:key=value` may set, with their parsers.
  options: dict[str, Callable[[str], Any]] = {}
  # Runs on any backbone checkpoint without training (then `--method NAME` applies to it).
  training_free: bool = False
  # Fields that moved into this method's groups: {'old.dotted.path': 'new.dotted.path'}.
  legacy_fields: dict[str, str] = {}
  # Fields of config.loss.<name> that weigh terms against the frozen dense teacher
  # (distillation); a comparison that distils no row sets them to 0.
  distillation_fields: tuple[str, ...] = ()

  # ----------------------------------------------------------------------------- config
  def defaults(self) -> ml_collections.ConfigDict | None:
    """The method's own model fields (config.model.<name>) with their defaults, or None."""
    return None

  def loss_defaults(self) -> ml_collections.ConfigDict | None:
    """The weights of the method's loss terms (config.loss.<name>), or None."""
    return None

  def fields(self, model_config: Any) -> ml_collections.ConfigDict:
    """config.model.<name> with the defaults filled in."""
    return merged(self.defaults(), model_config.get(self.name))

  def loss_fields(self, config: Any) -> ml_collections.ConfigDict:
    """config.loss.<name> with the defaults filled in."""
    return merged(self.loss_defaults(), (config.get('loss') or {}).get(self.name))

  def model_kwargs(self, fields: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `model_class` beyond the backbone's, from the method's fields and
    the backbone kwargs `kw`."""
    del fields, kw
    return {}

  def build(self, model_config: Any):
    """The Flax module for `model_config`."""
    kw = backbone.backbone_kwargs(model_config)
    return self.model_class(**kw, **self.model_kwargs(self.fields(model_config), kw))

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
    return objectives.classification_loss(config)

  def frozen_variables(self, config: Any, params: Any) -> dict[str, Any]:
    """Variables the loss reads but never trains (a frozen teacher), from the loaded params."""
    del config, params
    return {}

  # ----------------------------------------------------------------------------- comparison
  def variants(self) -> Sequence[Variant]:
    """The lines this method adds to the comparison (none by default)."""
    return ()

  def budget_knobs(self, kw: dict[str, Any]) -> list[dict[str, Any]]:
    """Candidate settings of config.model.<name> that set the method's cost, for the backbone
    kwargs `kw`: the comparison takes the one whose MACs come closest to a budget (the first
    of equals)."""
    del kw
    return []

  # ----------------------------------------------------------------------------- tools
  def macs(self, model, channels: int = 3) -> dict[str, int]:
    """Multiply-accumulates by part (with 'total') of one input in inference mode."""
    return flops.vit_macs(model, channels)

  def checkpoint_rules(self, model_config: Any) -> list:
    """Extra (timm source key, flax path, transform) rules for the method's own parameters in
    foreign checkpoints (the backbone's rules are in tokensparse.convert)."""
    del model_config
    return []

  def suggest(self, kw: dict[str, Any]) -> str | None:
    """An options string ('key=value,...') that works on the backbone `kw`, for tools to
    suggest (`--method NAME:...`); None where the method needs training first."""
    del kw
    return None

  def figures(self, predictor, out: str, num_images: int = 8) -> Sequence[str] | None:
    """Write PNG figures of what the method does with a predictor's model (tokensparse.
    inference) into the folder `out`; returns the paths (None: the method draws nothing)."""
    del predictor, out, num_images
    return None

  def check_evaluation(self, model, clips: bool) -> None:
    """Raise ValueError where evaluating `model` on the data (clips or still images) would
    report something else than the method does (a per-frame video method on still images)."""
    del model, clips

  def export(self, predictor, platforms: Sequence[str] | None = None):
    """A `jax.export.Exported` of what the method deploys, or None for the model's inference
    function (tokensparse.export exports that)."""
    del predictor, platforms
    return None


def merged(defaults: ml_collections.ConfigDict | None, given: Any) -> ml_collections.ConfigDict:
  """`defaults` (a ConfigDict, or None for none) with the fields of `given` set on top."""
  out = ml_collections.ConfigDict(defaults.to_dict(preserve_field_references=True)
                                  if defaults is not None else {})
  for key, value in (given or {}).items():
    out[key] = value
  return out
