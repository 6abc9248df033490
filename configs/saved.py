"""A config saved as JSON: a row of the method comparison (docs/compare/rows/<row>.json, whose
'config' field it reads) or any JSON dump of a config.

    python train.py --config configs/saved.py:docs/compare/rows/evit_0.5_s1.json --workdir runs/evit_again

trains that row again exactly as the comparison did (it starts from the comparison's teacher,
runs/compare/teacher, which `python benchmarks/compare.py` trains first). The path is taken as
given, else relative to the repository. Fields can still be overridden (`--config.seed=3`).
"""
import json
import os

import ml_collections

from tokensparse import configs


def get_config(arg: str = ''):
  if not arg:
    raise ValueError('configs/saved.py needs a JSON file: --config configs/saved.py:PATH')
  path = configs.resolve(arg)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'configs/saved.py:{arg}: no such file')
  with open(path) as f:
    saved = json.load(f)
  if 'config' in saved:  # a comparison row: its config beside its results
    saved = saved['config']
  return ml_collections.ConfigDict(saved).lock()
