"""Data: offline TFDS builders and the grain input pipeline."""
from tokensparse.data.pipeline import Data, DatasetMeta, get_builder, normalize  # noqa: F401
