"""Data loading: every --data source becomes a `Dataset` with train/val/test splits."""

from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.loaders import load_data

__all__ = ["Dataset", "Preprocessing", "load_data"]
