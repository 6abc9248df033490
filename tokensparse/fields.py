"""Config-field helpers every layer shares: the one error format for a field that cannot work,
and the parsers of `--method NAME:key=value` options. Nothing here imports the rest of
tokensparse.
"""
from __future__ import annotations


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
