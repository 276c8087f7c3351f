"""Fingerprints that let a report prove what it judged: files and data rows, by sha256.

numpy and the standard library only: `cwtool verify` computes the same fingerprints on a device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

__all__ = ["file_sha256", "rows_sha256"]

ROWS_HASH_VERSION = b"cwtool-rows/1"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rows_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """The identity of evaluation rows: their model inputs (float32, dataset layout, row order) and labels.
    Two evaluations are paired exactly when their hashes agree."""
    h = hashlib.sha256(ROWS_HASH_VERSION)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    h.update(repr((tuple(x.shape), tuple(y.shape))).encode())
    h.update(memoryview(x).cast("B"))
    h.update(memoryview(y).cast("B"))
    return h.hexdigest()
