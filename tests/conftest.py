"""Test set-up: 8 emulated CPU devices, set before the first JAX operation."""
import os

from tokensparse.cpu import COLLECTIVE_PATIENCE  # (imports no JAX)

# Eight emulated devices, each single-threaded: XLA's shared CPU thread pool can wedge a
# cross-device all-reduce when several host devices compete for it on a small machine.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                      '--xla_cpu_multi_thread_eigen=false ' + COLLECTIVE_PATIENCE)

import chex  # noqa: E402
import pytest  # noqa: E402

chex.set_n_cpu_devices(8)


@pytest.fixture
def tiny_model_config():
  """A 2-block ViT small enough for any test: 16 px images, patch 4, width 32."""
  import ml_collections
  return ml_collections.ConfigDict(dict(
      name='vit', variant=None, num_classes=5, image_size=16, patch_size=4, width=32,
      depth=2, num_heads=4, mlp_dim=64, distilled=False, dropout=0.0, droppath=0.0,
      dtype='float32'))


@pytest.fixture(autouse=True, scope='module')
def _release_compiled_programs():
  """Drop each module's compiled programs when it ends: a full run compiles thousands of small
  executables (eager ops of many tiny models), and holding them all until the last module
  made XLA's CPU compiler crash late in the session (a segfault inside a compile)."""
  yield
  import gc  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  jax.clear_caches()
  gc.collect()
