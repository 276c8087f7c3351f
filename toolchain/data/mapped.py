"""Large arrays read in place: an .npz member stored uncompressed, read a batch of rows at a time -- numpy only.

``numpy.load`` maps a plain .npy file (``mmap_mode="r"``) but reads every .npz member whole. An .npz written
by ``numpy.savez`` stores its members uncompressed, so each one is a plain .npy at some offset of the file:
`map_member` finds that offset in the zip member's local header. Rows are then read from there as they are asked
for, and `Mapped` converts each batch to float32 model inputs with the rules every other x array gets
(`toolchain.data.features.Conversion`). Members stored compressed (``numpy.savez_compressed``) cannot be read in
place: they are read into memory as before.

The rows are read with ``pread``, not through a memory map: a mapped file that another process truncated or rewrote
stopped the process with SIGBUS (exit 135, no line; a reviewer's race). A file that is no longer the one the member was
found in, or that ends early, is an error that says so.
"""

from __future__ import annotations

import os
import struct
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolchain.data.samples import Samples
from toolchain.file_identity import changed_error, identity

# what numpy raises on a malformed .npy header besides ValueError: its literal parser's errors, and tokenize's where
# it retries an old-style header through the tokenizer (an unclosed bracket)
HEADER_ERRORS = (SyntaxError, TypeError, OverflowError, RecursionError, tokenize.TokenError)

__all__ = ["MAP_BYTES", "MappedMember", "Mapped", "map_member", "mappable"]

MAP_BYTES = 256 << 20
"""An x member whose float32 copy would take more than this is read in place when it is stored uncompressed."""

_MAX_HEADER = 10_000  # numpy's own default for .npy headers, as toolchain.data.npz reads them
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version .. uncompressed size), name length, extra length


@dataclass(frozen=True)
class MappedMember:
    """Where an array lies in a file: enough to map it (and to hand it to another process without its data)."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    held: tuple | None = None  # the file's identity (toolchain.file_identity) when the member was found in it

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The stored rows at ``index`` (int row numbers), in that order. Runs of consecutive rows are read in one call."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if self.fortran:  # a row lies strided across the file: mapped, as a mapped file is read (numpy.savez of a transposed
            # array; a truncation under it still ends in SIGBUS)
            return np.asarray(np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                                        order="F")[index])
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        if not len(index) or not row_bytes:
            return out
        into = memoryview(out.reshape(-1).view(np.uint8))
        starts = np.concatenate(([0], np.flatnonzero(np.diff(index) != 1) + 1))
        ends = np.append(starts[1:], len(index))
        with self._opened() as fd:
            for first, last in zip(starts.tolist(), ends.tolist()):
                _read_fully(fd, into[first * row_bytes:last * row_bytes], self.offset + int(index[first]) * row_bytes,
                            self.path)
        return out

    def _opened(self):
        """The file, opened and found to be the one the member was found in."""
        from contextlib import contextmanager

        @contextmanager
        def held():
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                st = os.fstat(fd)
                now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if self.held is not None and now != self.held:
                    raise changed_error(self.path, "data file")
                yield fd
            finally:
                os.close(fd)

        return held()


def _read_fully(fd: int, into: memoryview, at: int, path: str) -> None:
    done = 0
    while done < len(into):
        got = os.preadv(fd, [into[done:]], at + done)
        if got == 0:  # the file ends before the member: cut short since it was found
            raise changed_error(path, "data file")
        done += got


def mappable(info: zipfile.ZipInfo, count: int) -> bool:
    """A member worth mapping and able to be: stored uncompressed, its float32 copy over MAP_BYTES."""
    return info.compress_type == zipfile.ZIP_STORED and 4 * count > MAP_BYTES and info.file_size == info.compress_size


def map_member(path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> MappedMember | None:
    """The stored member ``info`` of the zip at ``path`` as a `MappedMember`, or None when its bytes are not the
    plain .npy the zip directory promised (then it is read the ordinary way, with its checks)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(_LOCAL_HEADER.size)
        if len(local) < _LOCAL_HEADER.size:
            return None
        signature, name_len, extra_len = _LOCAL_HEADER.unpack(local)
        if signature != b"PK\x03\x04":
            return None
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        fh.seek(start)
        try:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            header = read(fh, max_header_size=_MAX_HEADER)
        except (ValueError, OSError) + HEADER_ERRORS:
            return None
        offset = fh.tell()
        fh.seek(0, 2)
        end = fh.tell()
    if (tuple(header[0]), bool(header[1]), np.dtype(header[2])) != (tuple(shape), fortran, dtype):
        return None
    if offset - start + nbytes != info.file_size or offset + nbytes > end:
        return None
    return MappedMember(str(path), offset, tuple(shape), dtype, fortran, identity(path))


class Mapped(Samples):
    """A mapped array's rows as float32 model inputs: ``convert`` turns a batch of stored rows into them."""

    def __init__(self, member: MappedMember, convert: Callable[[np.ndarray], np.ndarray], sample_shape: tuple[int, ...]):
        self.member, self.convert = member, convert  # the member's place, never its data: a worker process reads it itself
        self.shape = (member.shape[0], *sample_shape)

    def read(self, index: np.ndarray) -> np.ndarray:
        return self.convert(self.member.rows(index))
