"""Prune a VTP sparsity-trained work directory into a physically smaller ViT work directory.

    python -m tokensparse.methods.vtp.prune --workdir runs/vtp_sparse_fashion_mnist --rate 0.4 \
        --out runs/vtp_pruned40_fashion_mnist

Writes into --out: a checkpoint (step 0) of the pruned model with its config (model.name='vit',
per-layer head_dim / mlp_dim, attn_scale of the original heads) that `init_from.path` and the
inference tools read like any work directory; `pruning.md`, the per-layer table; and
`pruning.png`, the same as a bar chart. Nothing is written if --out already holds a checkpoint.
This is a command-line tool that lives with its method: it sits above the library (it reads
and writes work directories through tokensparse.checkpoint), and nothing imports it.
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from tokensparse import checkpoint, flops, methods
from tokensparse.methods.vtp import model as vtp


def load_scored(workdir: str):
  """(config, params, scores) of a VTP work directory's latest checkpoint."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir {workdir}: no such work directory')
  config, variables, _ = checkpoint.load_variables(workdir)
  if config.model.name != 'vtp':
    raise ValueError(f'{workdir}: model.name={config.model.name!r}; pruning needs a VTP '
                     "sparsity-training work directory (model.name='vtp')")
  return config, variables['params'], variables['scores']


def pruned_config(config, fields: dict):
  d = config.to_dict()
  d['model'].update(name='vit', head_dim=list(fields['head_dim']),
                    mlp_dim=list(fields['mlp_dim']), attn_scale=fields['attn_scale'])
  d.get('loss', {}).pop('vtp', None)
  return ml_collections.ConfigDict(d)


def table_markdown(rows: list[dict]) -> str:
  lines = ['| block | attention channels kept | physical (heads x head_dim) | MLP channels kept |',
           '|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["block"]} | {r["attn_kept"]} / {r["attn_total"]} | '
                 f'{r["attn_physical"]} | {r["mlp_kept"]} / {r["mlp_total"]} |')
  return '\n'.join(lines)


def bar_chart(rows: list[dict], path: str, title: str) -> None:
  """Per block, the kept fraction of attention channels (blue; physical width as an outline)
  and of MLP channels (orange)."""
  bar, gap, height, top, left = 14, 10, 160, 28, 34
  width = max(left + len(rows) * (2 * bar + gap) + 10, 300)
  img = Image.new('RGB', (width, top + height + 48), 'white')
  d = ImageDraw.Draw(img)
  d.text((4, 4), title, fill='black')
  for frac in (0.0, 0.5, 1.0):
    y = top + height - int(frac * height)
    d.line([(left - 4, y), (width - 6, y)], fill=(220, 220, 220))
    d.text((2, y - 6), f'{frac:.1f}', fill='black')
  for i, r in enumerate(rows):
    x = left + i * (2 * bar + gap)
    for j, (kept, total, colour) in enumerate(
        ((r['attn_kept'], r['attn_total'], (59, 117, 175)),
         (r['mlp_kept'], r['mlp_total'], (239, 133, 54)))):
      h = int(height * kept / total)
      d.rectangle([x + j * bar, top + height - h, x + (j + 1) * bar - 2, top + height],
                  fill=colour)
    phys = int(height * r['attn_physical'] / r['attn_total'])
    d.rectangle([x, top + height - phys, x + bar - 2, top + height], outline='black')
    d.text((x + 10, top + height + 4), str(r['block']), fill='black')
  d.text((4, top + height + 4), 'block', fill='black')
  d.text((4, top + height + 18), 'blue: attention channels kept (outline: physical width)',
         fill=(59, 117, 175))
  d.text((4, top + height + 32), 'orange: MLP channels kept', fill=(239, 133, 54))
  img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='VTP sparsity-training work directory')
  parser.add_argument('--rate', type=float, required=True, help='fraction of channels removed')
  parser.add_argument('--out', required=True, help='work directory for the pruned model')
  parser.add_argument('--align', type=int, default=1,
                      help='round physical widths up to a multiple (e.g. 8 for CPUs/GPUs); '
                      'the extra channels are zero, so the function is unchanged')
  args = parser.parse_args(argv)
  if not 0.0 <= args.rate < 1.0:
    raise SystemExit(f'error: --rate={args.rate}: must be in [0, 1)')
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    raise SystemExit(f'error: --out={args.out} is a file, not a directory')
  if (os.path.isdir(os.path.join(args.out, 'checkpoints'))
      and checkpoint.manager(args.out, create=False).latest_step() is not None):
    raise SystemExit(f'error: --out={args.out} already holds a checkpoint; choose another '
                     'directory')
  try:  # everything that can fail on the input comes before the first write
    config, params, scores = load_scored(args.workdir)
    new_params, fields = vtp.prune(params, scores, args.rate, config.model.get('attn_scale'),
                                   args.align)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None
  new_config = pruned_config(config, fields)
  rows = vtp.report(scores, args.rate, fields)
  before = methods.build(config.model)
  after = methods.build(new_config.model)
  channels = np.shape(params['embedding']['kernel'])[-2]
  m0, m1 = flops.vit_macs(before, channels)['total'], flops.vit_macs(after, channels)['total']
  n0 = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  n1 = sum(int(np.size(x)) for x in jax.tree.leaves(new_params))
  summary = (f'pruned {args.rate:.0%} of the channels of {args.workdir}: parameters '
             f'{n0:,} -> {n1:,} ({n1 / n0:.3f}), MACs {m0 / 1e6:.2f} M -> {m1 / 1e6:.2f} M '
             f'({m1 / m0:.3f})')
  mngr = checkpoint.manager(args.out)
  checkpoint.save(mngr, 0, {'step': np.zeros([], np.int32), 'params': new_params}, new_config)
  mngr.close()
  with open(os.path.join(args.out, 'pruning.md'), 'w') as f:
    f.write(f'{summary}\n\n{table_markdown(rows)}\n')
  with open(os.path.join(args.out, 'pruning.json'), 'w') as f:
    json.dump({'rate': args.rate, 'params': [n0, n1], 'macs': [m0, m1], 'layers': rows}, f)
  bar_chart(rows, os.path.join(args.out, 'pruning.png'), f'VTP, {args.rate:.0%} pruned')
  print(summary)
  print(table_markdown(rows))
  print(f'wrote {args.out} (checkpoint, pruning.md, pruning.png)')


if __name__ == '__main__':
  main()
