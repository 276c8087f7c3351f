"""Data loading: every --data source becomes a `Dataset` with train/val/test splits."""

from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.limits import MAX_CLASSES
from toolchain.data.loaders import load_data

__all__ = ["Dataset", "MAX_CLASSES", "Preprocessing", "load_data"]
