"""Nothing lost: a diverging run never saves a non-finite state, a corrupt or incomplete
checkpoint is named and the newest intact one used, a resumed run cannot silently change what
it trains, and bad numbers in a config are refused before anything is written."""
import glob
import json
import os

import jax
import numpy as np
import pytest

from tokensparse import checkpoint, inference
from tokensparse.train import loop
from tests import fake_data


def diverging(tmp_path, **overrides):
  fields = {**dict(total_steps=12, log_every_steps=5, checkpoint_every_steps=2), **overrides}
  config = fake_data.tiny_config(tmp_path, **fields)
  with config.unlocked():  # a learning rate that blows the loss up within a few steps
    config.optimizer.update(lr=1e6, min_lr=0.0, grad_clip_norm=0.0)
  return config


def test_divergence_stops_at_its_step_and_keeps_every_finite_checkpoint(tmp_path):
  """The log interval (5) does not divide the checkpoint interval (2): every step's loss is
  checked, so no non-finite state is saved and no finite checkpoint rotated out for one."""
  workdir = str(tmp_path / 'run')
  with pytest.raises(FloatingPointError, match=r'training diverged: the loss is nan at step '
                                               r'(\d+); stopped without saving it\. The last '
                                               r'checkpoint, step (\d+)') as e:
    loop.train_and_evaluate(diverging(tmp_path), workdir)
  step = int(str(e.value).split(' at step ')[1].split(';')[0])
  saved = checkpoint.manager(workdir).all_steps()
  assert saved and max(saved) < step
  for s in saved:
    _, variables, _ = checkpoint.load_variables(workdir, step=s)
    assert checkpoint.nonfinite(variables) is None


def test_a_stop_request_after_divergence_saves_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(loop.Preemption, 'stop_at', lambda self, step: step >= 3)
  workdir = str(tmp_path / 'run')
  with pytest.raises(FloatingPointError, match='training diverged'):
    loop.train_and_evaluate(diverging(tmp_path, checkpoint_every_steps=100), workdir)
  for s in checkpoint.manager(workdir).all_steps():
    assert checkpoint.nonfinite(checkpoint.load_variables(workdir, step=s)[1]) is None


def flip_a_bit(step_dir):
  """Flip one bit in the middle of the largest array file of a checkpoint's state."""
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'), recursive=True)
           if os.path.isfile(f)]
  target = max(files, key=os.path.getsize)
  data = bytearray(open(target, 'rb').read())
  data[len(data) // 2] ^= 0x10
  open(target, 'wb').write(bytes(data))


def final_params(workdir):
  return checkpoint.load_variables(workdir)[1]['params']


@pytest.mark.parametrize('damage', ['flipped bit', 'empty newer step', 'deleted state'])
def test_a_damaged_checkpoint_is_named_and_the_newest_intact_one_used(
    tmp_path, capsys, monkeypatch, damage):
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path, total_steps=6), straight)
  workdir = str(tmp_path / 'run')
  with monkeypatch.context() as m:  # preempted after step 4
    m.setattr(loop.Preemption, 'stop_at', lambda self, step: step >= 4)
    loop.train_and_evaluate(fake_data.tiny_config(tmp_path, total_steps=6), workdir)
  ckpts = os.path.join(workdir, 'checkpoints')
  if damage == 'flipped bit':
    flip_a_bit(os.path.join(ckpts, '4'))
  elif damage == 'empty newer step':
    os.makedirs(os.path.join(ckpts, '5'))
  else:
    import shutil
    shutil.rmtree(os.path.join(ckpts, '4', 'state'))
  capsys.readouterr()
  # A reader skips it (and leaves it where it is) ...
  predictor = inference.load(workdir)
  assert predictor.variables is not None
  assert 'trying the one before' in capsys.readouterr().err
  # ... the trainer moves it aside and resumes from the one before, losing nothing.
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path, total_steps=6), workdir)
  err = capsys.readouterr().err
  assert 'moved it to' in err and 'corrupt_checkpoints' in err, err
  assert os.listdir(os.path.join(workdir, 'corrupt_checkpoints'))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               final_params(workdir), final_params(straight))


def test_a_resumed_run_cannot_silently_change_what_it_trains(tmp_path):
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path, total_steps=2), workdir)
  changed = fake_data.tiny_config(tmp_path, total_steps=4, batch_size=8,
                                  **{'data.train_split': 'test', 'log_every_steps': 1})
  with pytest.raises(ValueError) as e:
    loop.train_and_evaluate(changed, workdir)
  message = str(e.value)
  assert len(message.splitlines()) == 1
  assert "batch_size: 16 -> 8" in message and "data.train_split: 'train' -> 'test'" in message
  assert 'total_steps: 2 -> 4' in message and 'log_every_steps' not in message
  assert '--allow_config_change' in message
  assert checkpoint.manager(workdir).all_steps() == [2]          # nothing written
  # The harmless fields change freely; an explicit allowance records the rest.
  loop.train_and_evaluate(fake_data.tiny_config(tmp_path, total_steps=2, log_every_steps=1),
                          workdir)
  loop.train_and_evaluate(changed, workdir, allow_config_change=True)
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  change = next(l for l in lines if l['split'] == 'config_change')
  assert change['step'] == 2 and change['batch_size'] == {'old': 16, 'new': 8}


def test_an_unwritable_work_directory_is_named_in_one_line(tmp_path):
  (tmp_path / 'a_file').write_text('')
  workdir = tmp_path / 'a_file' / 'run'        # cannot be created, even by root
  with pytest.raises(OSError, match=f'--workdir {workdir}: cannot be written \\(Not a '
                                    'directory\\)'):
    loop.train_and_evaluate(fake_data.tiny_config(tmp_path), str(workdir))
