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
