"""Train a tokensparse model.

    python train.py --config configs/vit/fashion_mnist.py --workdir runs/vit_fashion_mnist
    python train.py --config configs/vit/fashion_mnist.py --workdir runs/x --config.num_epochs=1

Rerunning the same command resumes from the latest checkpoint in --workdir. On a CPU-only
machine the cores are used as data-parallel host devices (see tokensparse/cpu.py).
"""
import os
import sys

from tokensparse import cpu  # noqa: E402  (imports no JAX)

cpu.use_host_devices()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS


def _env_int(name):
  return int(os.environ[name]) if os.environ.get(name) else None

config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/...).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory: checkpoints, config and metrics.')
flags.DEFINE_string('coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'),
                    'host:port of process 0 for multi-host training (jax.distributed); '
                    'default $JAX_COORDINATOR_ADDRESS.')
flags.DEFINE_integer('num_processes', _env_int('JAX_NUM_PROCESSES'),
                     'Number of processes (multi-host); default $JAX_NUM_PROCESSES.')
flags.DEFINE_integer('process_id', _env_int('JAX_PROCESS_ID'),
                     'Index of this process (multi-host); default $JAX_PROCESS_ID.')
flags.DEFINE_bool('allow_config_change', False, 'Resume a work directory with a config '
                  'that changes what is trained (split, batch, schedule, model...); the change '
                  'is recorded in metrics.jsonl.')
flags.DEFINE_bool('distributed', False, 'Initialise jax.distributed from the cluster '
                  'environment (TPU pods, SLURM, ...) without the three flags above.')
flags.mark_flags_as_required(['config', 'workdir'])


def _quiet_exit(code: int) -> None:
  """Exit after the one error line: what orbax's and tensorstore's threads print while the
  interpreter shuts down after a failed write ('Event loop is closed') is not shown."""
  sys.stdout.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  sys.exit(code)


def main(argv):
  del argv
  if not any(a.startswith(('--verbosity', '-v')) for a in sys.argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.coordinator_address or FLAGS.num_processes or FLAGS.distributed:
    # Cross-process collectives of CPU devices go through gloo (accelerators use their own).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  from tokensparse.train import loop  # pylint: disable=g-import-not-at-top
  try:
    if 'detector' in FLAGS.config:  # a detection config (configs/vitdet/)
      from tokensparse.detection import train as det  # pylint: disable=g-import-not-at-top
      det.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                             allow_config_change=FLAGS.allow_config_change)
    else:
      loop.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                              allow_config_change=FLAGS.allow_config_change)
  except (ValueError, OSError, FloatingPointError) as e:  # OSError: not writable, disk full...
    print(f'error: {e}', file=sys.stderr, flush=True)
    _quiet_exit(1)
  except KeyboardInterrupt:
    print(f'error: interrupted twice: stopped at once without saving; the checkpoints in '
          f'{FLAGS.workdir} are as they were (rerun to resume)', file=sys.stderr)
    sys.exit(130)


def check_command_line(argv) -> None:
  """A mistyped --config path, config argument or --config.* field ends in one `error:` line
  (with the nearest match), not in ml_collections' tracebacks; nothing has been written yet."""
  from tokensparse import configs  # pylint: disable=g-import-not-at-top
  if any(a in ('-h', '--help', '--helpshort', '--helpfull') for a in argv):
    return
  given = lambda flag: any(a == flag or a.startswith(flag + '=') for a in argv)
  for flag, what in (('--config', 'the experiment config, e.g. --config configs/vit/fashion_mnist.py'),
                     ('--workdir', 'the work directory for checkpoints and metrics, e.g. '
                                   '--workdir runs/vit_fashion_mnist')):
    if not given(flag):
      sys.exit(f'error: {flag} is required: {what}')
  spec = None
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      spec = a.split('=', 1)[1]
    elif a == '--config' and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec is None:
    sys.exit('error: --config needs a value: the experiment config file')
  try:
    configs.check_command_line(spec, [a for a in argv if a.startswith('--config.')])
  except ValueError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  check_command_line(sys.argv)
  app.run(main)
