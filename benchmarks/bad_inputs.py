"""Bad inputs users send, the message each gets, and a check that nothing was written or lost.

    python benchmarks/bad_inputs.py

Runs every case for real (train.py in a subprocess for command-line mistakes, the library
in-process for the rest) on tiny fake Fashion-MNIST files, and writes the 'bad_inputs' section
of BENCHMARKS.md: the input, the exception, the first line of its message, and whether the
work directory was left as it was (no new files, the existing checkpoint still restores).
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from common import ROOT, table, write_section

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, ROOT)
from tests import fake_data  # noqa: E402
from tokensparse import configs, evaluate, export, inference, viz  # noqa: E402
from tokensparse.data import build as build_lib  # noqa: E402
from tokensparse.methods.vtp import prune as prune_cli  # noqa: E402
from tokensparse.methods.eventful.model import EventfulViT  # noqa: E402
from tokensparse import checkpoint  # noqa: E402
from tokensparse.train import lock, loop  # noqa: E402


def snapshot(path):
  """(path, size, mtime) of everything under a directory, or of a file; [] if there is none."""
  path = pathlib.Path(path)
  if path.is_file():
    return [(path.name, path.stat().st_size, path.stat().st_mtime_ns)]
  return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in path.rglob('*')) if path.exists() else []


def main():
  tmp = pathlib.Path(tempfile.mkdtemp())
  base = fake_data.tiny_config(tmp)
  good = str(tmp / 'good')
  loop.train_and_evaluate(base, good)               # a real work directory to protect
  cfg_file = tmp / 'cfg.py'
  cfg_file.write_text(f'import pathlib, sys\nsys.path.insert(0, {ROOT!r})\n'
                      'from tests import fake_data\n'
                      f'def get_config():\n  return fake_data.tiny_config(pathlib.Path({str(tmp)!r}))\n')

  def cli(*flags, config=str(cfg_file), workdir=good):
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--config', config,
                        '--workdir', workdir, *flags], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    lines = r.stderr.strip().splitlines()
    if r.returncode == 0:
      return
    raise SystemExit(f'exit {r.returncode}: ' + (lines[-1] if len(lines) == 1 else
                                                 f'{len(lines)} lines: {r.stderr[-200:]}'))

  def live_workdir():
    with lock.WorkdirLock(good):  # as a running train.py holds it
      cli()

  def module_cli(main, *argv):
    return lambda: main(list(argv))

  def with_config(**overrides):
    def run():
      loop.train_and_evaluate(fake_data.tiny_config(tmp, **overrides), good)
    return run

  def dynamic(keep):
    c = fake_data.tiny_config(tmp)
    with c.unlocked():
      configs.use_method(c, 'dynamic_vit', keep_ratio=keep, prune_layers=(1,))
    return lambda: configs.validate(c)

  def token_learner():
    c = fake_data.tiny_config(tmp)
    with c.unlocked():
      configs.use_method(c, 'token_learner', num_tokens=100, at=0.5)
    return configs.validate(c)

  def eventful():
    import jax  # pylint: disable=g-import-not-at-top
    EventfulViT(num_classes=10, image_size=28, patch_size=7, width=32, depth=2, num_heads=4,
                mlp_dim=64, capacity=40).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))

  def method(name, **fields):
    """Train `name` with the given method fields on the protected work directory."""
    def run():
      c = fake_data.tiny_config(tmp, **{'model.name': name})
      with c.unlocked():
        configs.use_method(c, name, **fields)
      loop.train_and_evaluate(c, good)
    return run

  def gap_evit():
    c = fake_data.tiny_config(tmp, **{'model.name': 'evit', 'model.classifier': 'gap'})
    with c.unlocked():
      configs.use_method(c, 'evit')
    loop.train_and_evaluate(c, good)

  def corrupt():
    bad = tmp / 'corrupt'
    shutil.copytree(base.data.source_dir, bad, dirs_exist_ok=True)
    path = bad / 'train-images-idx3-ubyte.gz'
    import gzip  # pylint: disable=g-import-not-at-top
    data = gzip.open(path).read()
    with gzip.open(path, 'wb') as f:
      f.write(data[:len(data) // 2])
    with_config(**{'data.source_dir': str(bad), 'data.data_dir': str(tmp / 'tfds_corrupt')})()

  predictor = inference.load(good)
  empty, a_file = tmp / 'not_a_workdir', tmp / 'a_file'
  os.makedirs(empty)
  a_file.write_text('notes\n')
  cases = [
      ('mistyped config path `--config cfgg.py`',
       lambda: cli(config=str(tmp / 'cfgg.py')), empty),
      ('unknown config argument `--config cfg.py:fast`', lambda: cli(config=f'{cfg_file}:fast')),
      ('unknown config field `--config.model.widht=64`', lambda: cli('--config.model.widht=64')),
      ('nested unknown field `--config.optimizer.learning_rate=1`',
       lambda: cli('--config.optimizer.learning_rate=1')),
      ('misspelt group `--config.optimiser.lr=1`', lambda: cli('--config.optimiser.lr=1')),
      ('`--workdir` naming a regular file', lambda: cli(workdir=str(a_file)), a_file),
      ('a second train.py on a live work directory', live_workdir),
      ('ill-typed field `--config.batch_size=abc`', lambda: cli('--config.batch_size=abc')),
      ('patch size that does not divide the image', with_config(**{'model.patch_size': 5})),
      ('DynamicViT keep ratio 1.5', dynamic(1.5)),
      ('TokenLearner with 100 tokens from 16 positions', token_learner),
      ('Eventful r = 40 > N = 17', eventful),
      ('ToMe r = 9 on 17 tokens (at most 8 mergeable)', method('tome', r=9)),
      ('ToMe schedule with more entries than blocks', method('tome', r=[1, 1, 1])),
      ('EViT keep rate 0', method('evit', keep_rate=0.0)),
      ('EViT keep rate 1.2', method('evit', keep_rate=1.2)),
      ("EViT with classifier='gap' (no class token)", gap_evit),
      ('`--method tome:r=abc` on a work directory',
       lambda: inference.load(good, method='tome:r=abc')),
      ('`--method evit:keep=0.5` (unknown option)',
       lambda: inference.load(good, method='evit:keep=0.5')),
      ('VTP pruning rate 1.0', lambda: prune_cli.main(['--workdir', good, '--rate', '1.0',
                                                       '--out', str(tmp / 'p')])),
      ('inference on 32x32 images (model: 28x28)',
       lambda: predictor.predict(np.zeros((2, 32, 32, 1), np.uint8))),
      ('inference on RGB images (model: 1 channel)',
       lambda: predictor.predict(np.zeros((2, 28, 28, 3), np.uint8))),
      ('resume a work directory with another architecture (width 64)',
       with_config(**{'model.width': 64})),
      ('init_from a checkpoint of another architecture',
       lambda: loop.train_and_evaluate(fake_data.tiny_config(
           tmp, **{'model.width': 64, 'init_from.path': good}), str(tmp / 'new'))),
      ('missing dataset files (source_dir empty)',
       with_config(**{'data.source_dir': str(tmp / 'empty'), 'data.data_dir': str(tmp / 'x')})),
      ('corrupt dataset file (truncated IDX)', corrupt),
      ('TFDS dataset that was never prepared', with_config(**{'data.name': 'cifar10'})),
      ('NaN loss (std 1e-38)', lambda: loop.train_and_evaluate(
          fake_data.tiny_config(tmp, **{'data.std': (1e-38,)}), str(tmp / 'nan'))),
      ('`inference.load` of a directory that is not a work directory',
       lambda: inference.load(str(empty)), empty),
      ('`evaluate --workdir` of a directory that is not a work directory',
       module_cli(evaluate.main, '--workdir', str(empty)), empty),
      ('`export --out` into a directory that does not exist',
       module_cli(export.main, '--workdir', good, '--out', str(empty / 'no' / 'm.hlo')), empty),
      ('`viz` of a plain ViT without --method',
       module_cli(viz.main, '--workdir', good, '--out', str(empty / 'figs')), empty),
      ('`viz --method eventful:capacity=4` on a 28-px model (clips are 42 px)',
       module_cli(viz.main, '--workdir', good, '--method', 'eventful:capacity=4', '--out',
                  str(empty / 'figs')), empty),
      ('`prune` of a work directory that is not VTP',
       module_cli(prune_cli.main, '--workdir', good, '--rate', '0.5', '--out',
                  str(empty / 'pruned')), empty),
      ('unknown RandAugment section `--config.data.rand_augment=rand-m9-q3`',
       lambda: cli('--config.data.rand_augment=rand-m9-q3')),
      ('random erasing probability 1.5', with_config(**{'data.random_erase': 1.5})),
      ('Mixup Beta parameter -0.8', with_config(**{'data.mixup': -0.8})),
      ('`data.build imagenet2012` without the tars',
       module_cli(build_lib.main, 'imagenet2012', '--manual_dir', str(empty), '--data_dir',
                  str(empty / 'tfds')), empty),
  ]
  os.makedirs(tmp / 'empty', exist_ok=True)
  rows = []
  for label, fn, *watched in cases:
    watched = watched[0] if watched else None
    before, before_other = snapshot(good), snapshot(watched) if watched else None
    try:
      fn()
      error, message = 'none', '(accepted: this is a bug)'
    except SystemExit as e:
      error, message = 'SystemExit', str(e)
    except Exception as e:  # pylint: disable=broad-except
      error, message = type(e).__name__, str(e)
    intact = snapshot(good) == before and (not watched or snapshot(watched) == before_other)
    try:
      checkpoint.restore(checkpoint.manager(good), checkpoint.manager(good).restore(
          checkpoint.manager(good).latest_step(), args=checkpoint.ocp.args.Composite(
              state=checkpoint.ocp.args.StandardRestore()))['state'])
    except Exception:  # pylint: disable=broad-except
      intact = False
    first = message.strip().splitlines()[0] if message.strip() else ''
    rows.append([label, f'`{error}`', first.replace('|', '\\|').replace(str(tmp), '<tmp>'),
                 'yes' if intact else 'NO'])
    print(rows[-1], flush=True)
  body = ('## Bad inputs and their messages\n\n'
          '`python benchmarks/bad_inputs.py`: each case run for real against a trained work '
          'directory; "left as it was" = no file added, changed or removed there (nor in the '
          'directory or file the case names), and its checkpoint still restores. Command-line '
          'cases run train.py in a subprocess: "exit 1: <line>" means it printed that one line '
          'and nothing else.\n\n' +
          table(['input', 'error', 'message (first line)', 'work directory left as it was'],
                rows))
  write_section('bad_inputs', body)


if __name__ == '__main__':
  main()
