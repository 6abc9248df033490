"""CPU set-up that must run before JAX is imported (no JAX import here).

On a CPU-only machine XLA runs one device; tokensparse instead exposes one emulated device
per core and maps the batch over them (the same data-parallel path as on accelerators), each
device single-threaded. Measured on a 2-core machine this is as fast as one multi-threaded
device or faster, and it avoids a stall seen when several host devices share XLA's CPU thread
pool during cross-device reductions. Accelerator back-ends are unaffected.
"""
import os


def use_host_devices(count: int | None = None) -> None:
  """Set XLA_FLAGS for `count` (default: all cores) single-threaded CPU devices, unless the
  caller already chose a device count."""
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' in flags:
    return
  count = count or os.cpu_count() or 1
  # Eigen single-threaded per device (XLA has no other intra-op thread flag: TensorFlow's
  # `intra_op_parallelism_threads` is unknown to it and aborts the process with `--`).
  os.environ['XLA_FLAGS'] = (f'{flags} --xla_force_host_platform_device_count={count} '
                             '--xla_cpu_multi_thread_eigen=false ' + COLLECTIVE_PATIENCE).strip()


# XLA aborts the whole process (no exception, no checkpoint) when one emulated device reaches a
# cross-device reduction 40 s after another, which happens on a loaded machine (seen here: a
# niced run beside a test suite). Host devices are threads of one process, so a late one is
# slow, not lost: wait up to 30 minutes, and warn after 5.
COLLECTIVE_PATIENCE = ('--xla_cpu_collective_call_warn_stuck_timeout_seconds=300 '
                       '--xla_cpu_collective_call_terminate_timeout_seconds=1800')
