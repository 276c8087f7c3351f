"""A split's inputs, read on demand: the array-like contract every stage reads samples through -- numpy only.

A split's inputs ``x`` are either a float32 numpy array (small sets: digits, Fashion-MNIST, CSV, most .npz
files: they keep their speed) or a `Samples` object that reads rows when asked (an ImageFolder decodes its
files, a large .npz member is read in place). Both answer ``len(x)``, ``x.shape``, ``x.dtype`` (float32),
``x.ndim``, ``x[i]`` (one sample) and ``x[a:b]`` / ``x[index array]`` (a float32 batch, a new array).

Code that reads a whole split goes through `batches` (fixed-size chunks), `subset` (a split's rows: a copy of
an array, a view of a `Samples`) and `concat`; nothing concatenates a lazy split. A `Samples` refuses to be
turned into one array (``np.asarray``): memory must not grow with the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["BATCH_BYTES", "Samples", "Rows", "Concat", "Reshaped", "batch_rows", "batches", "concat", "held_bytes", "is_lazy",
           "sample_bytes", "subset"]

BATCH_BYTES = 16 << 20
"""Bytes of model input in one inference batch (evaluation, hashing, runtimes): 1,024 small samples, 27 RGB
224-px ones. What a batch holds, not the number of samples, bounds the memory a pass over a split takes."""


def is_lazy(x) -> bool:
    """True for inputs read on demand (a `Samples`), False for a numpy array held in memory."""
    return not isinstance(x, np.ndarray)


def sample_bytes(x) -> int:
    """Bytes of one float32 sample of ``x``."""
    return 4 * int(np.prod(x.shape[1:], dtype=np.int64))


def held_bytes(x) -> int:
    """Bytes ``x`` holds in memory: an array its data, a `Samples` what it keeps to read rows (paths, indices)."""
    return int(x.nbytes) if isinstance(x, np.ndarray) else int(x.held_bytes)


def batch_rows(x, limit: int = 1024, budget: int | None = None) -> int:
    """Rows per batch: at most ``limit``, and at most ``budget`` (default `BATCH_BYTES`) bytes of input."""
    per = max(1, sample_bytes(x))
    return int(max(1, min(int(limit), (budget or BATCH_BYTES) // per)))


def batches(x, rows: int | None = None) -> Iterator[np.ndarray]:
    """``x`` in order, ``rows`` at a time (default `batch_rows`): views of an array, reads of a `Samples`."""
    step = max(1, int(rows or batch_rows(x)))
    for start in range(0, len(x), step):
        yield x[start : start + step]


def row_files(x) -> list[str] | None:
    """``x.row_files()`` of rows read on demand; None for an array."""
    return x.row_files() if is_lazy(x) else None


def subset(x, index) -> np.ndarray | "Samples":
    """The rows ``index`` of ``x`` as a split of its own: a copy for an array (``x[index]``, as numpy indexes),
    a view for a `Samples` (nothing is read)."""
    index = np.asarray(index, dtype=np.int64)
    if isinstance(x, np.ndarray):
        return x[index]
    if isinstance(x, Rows):
        return Rows(x.base, x.index[index])
    return Rows(x, index)


def concat(parts: Sequence) -> np.ndarray | "Samples":
    """Rows of ``parts`` one after the other: ``np.concatenate`` for arrays, a lazy `Concat` when any part is lazy."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    return Concat(parts)


def _indices(key, n: int) -> np.ndarray:
    if isinstance(key, slice):  # the slice's own rows: not a full-length range cut every batch (quadratic in the rows)
        return np.arange(*key.indices(n), dtype=np.int64)
    index = np.asarray(key)
    if index.dtype == np.bool_:
        if index.shape != (n,):
            raise IndexError(f"boolean index of shape {index.shape} for {n} rows")
        return np.flatnonzero(index)
    if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
        raise IndexError("samples are indexed by an integer, a slice or a 1-D array of row numbers")
    index = index.astype(np.int64, copy=False)
    if index.size and (index.min() < -n or index.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return np.where(index < 0, index + n, index)


class Samples:
    """Rows read on demand. Subclasses set ``shape`` (rows first) and implement ``read``."""

    shape: tuple[int, ...]
    dtype = np.dtype(np.float32)

    def read(self, index: np.ndarray) -> np.ndarray:
        """float32 rows ``index`` (int64 row numbers in range, any order, repeats allowed), shape (len(index), *shape[1:])."""
        raise NotImplementedError

    @property
    def held_bytes(self) -> int:
        """Bytes this object keeps in memory (not the samples it can read)."""
        return 0

    def row_files(self) -> list[str] | None:
        """The file each row is decoded from, in row order (image files); None when rows are not read from files of
        their own. What tells two folders' rows apart without decoding them."""
        return None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} out of range for {len(self)} rows")
            return self.read(np.array([i % len(self)], dtype=np.int64))[0]
        return self.read(_indices(key, len(self)))

    def __iter__(self):
        for batch in batches(self):
            yield from batch

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{type(self).__name__} reads its {len(self):,} rows on demand and is not turned into one array: "
                        "read it in batches (toolchain.data.samples.batches)")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.shape} float32, read on demand>"


class Rows(Samples):
    """Some rows of another `Samples`, in the order of ``index`` (a split of a lazy pool)."""

    def __init__(self, base: Samples, index: np.ndarray):
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index), *base.shape[1:])

    @property
    def held_bytes(self) -> int:
        return int(self.index.nbytes) + self.base.held_bytes

    def read(self, index: np.ndarray) -> np.ndarray:
        return self.base.read(self.index[index])

    def row_files(self) -> list[str] | None:
        files = self.base.row_files()
        return None if files is None else [files[i] for i in self.index]


class Concat(Samples):
    """The rows of several parts (arrays or `Samples` of one sample shape) one after the other."""

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        shapes = {tuple(p.shape[1:]) for p in self.parts}
        if len(shapes) != 1:
            raise ValueError(f"parts of different sample shapes {sorted(shapes)}")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), *shapes.pop())

    @property
    def held_bytes(self) -> int:
        return sum(held_bytes(p) for p in self.parts)

    def read(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), *self.shape[1:]), dtype=np.float32)
        part_of = np.searchsorted(self.offsets, index, side="right") - 1
        for k in np.unique(part_of):
            where = np.flatnonzero(part_of == k)
            out[where] = self.parts[k][index[where] - self.offsets[k]]
        return out

    def row_files(self) -> list[str] | None:
        files = [row_files(p) for p in self.parts]
        return None if any(f is None for f in files) else [name for part in files for name in part]


class Reshaped(Samples):
    """Every sample of ``base`` reshaped (C order) to ``sample_shape``: flat rows fed to an image model."""

    def __init__(self, base, sample_shape: tuple[int, ...]):
        self.base = base
        self.shape = (len(base), *sample_shape)

    @property
    def held_bytes(self) -> int:
        return held_bytes(self.base)

    def read(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(self.base[index], dtype=np.float32).reshape(len(index), *self.shape[1:])

    def row_files(self) -> list[str] | None:
        return row_files(self.base)
