"""Large arrays read in place: an .npz member stored uncompressed, memory-mapped -- numpy only.

``numpy.load`` maps a plain .npy file (``mmap_mode="r"``) but reads every .npz member whole. An .npz written
by ``numpy.savez`` stores its members uncompressed, so each one is a plain .npy at some offset of the file:
`map_member` finds that offset in the zip member's local header and maps the array there. Rows are then read
from the page cache as they are asked for, and `Mapped` converts each batch to float32 model inputs with the rules
every other x array gets (`toolchain.data.features.Conversion`). Members stored compressed
(``numpy.savez_compressed``) cannot be mapped: they are read into memory as before.

The member is mapped from a file held open (`OpenMember`), which must be the file the member was found in, and whose
size is checked before each batch: a file renamed over the path, or cut short, is an error that says so, not another
file's rows or a bus error.
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
from toolchain.file_identity import changed_error, fd_identity

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
    held: tuple  # the file's identity (toolchain.file_identity) when the member was found in it

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def opened(self) -> "OpenMember":
        """The member mapped from the file opened now, found to be the one it was found in."""
        fh = _open_as(self.path, self.held)
        try:
            array = np.memmap(fh, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                              order="F" if self.fortran else "C")
        except BaseException:
            fh.close()
            raise
        return OpenMember(self.path, fh, array, self.offset + self.size * self.dtype.itemsize)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The stored rows at ``index`` (int row numbers), in that order, from the file opened for this call."""
        member = self.opened()
        try:
            return member.rows(index)
        finally:
            member.close()


class OpenMember:
    """A member mapped from a file held open: a file renamed over its path later is not read (the map is of the file
    opened), and one cut short is said before its rows are read. A mapped file that another process truncated stopped
    the process with SIGBUS (exit 135, no line; a reviewer's race): its size is checked before every batch, which leaves
    the microseconds between the check and the copy."""

    def __init__(self, path: str, fh, array: np.memmap, end: int):
        self.path, self._fh, self._array, self._end = path, fh, array, end

    def rows(self, index: np.ndarray) -> np.ndarray:
        if os.fstat(self._fh.fileno()).st_size < self._end:
            raise changed_error(self.path, "data file")
        return np.array(self._array[np.asarray(index, dtype=np.int64).reshape(-1)])  # copied now, after the check

    def close(self) -> None:
        self._array = None
        self._fh.close()


def _open_as(path, held: tuple):
    """``path`` opened, where it is still the file of identity ``held``."""
    fh = open(path, "rb")
    if fd_identity(fh.fileno()) != held:
        fh.close()
        raise changed_error(path, "data file")
    return fh


def mappable(info: zipfile.ZipInfo, count: int) -> bool:
    """A member worth mapping and able to be: stored uncompressed, its float32 copy over MAP_BYTES."""
    return info.compress_type == zipfile.ZIP_STORED and 4 * count > MAP_BYTES and info.file_size == info.compress_size


def map_member(path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, fortran: bool,
               held: tuple) -> MappedMember | None:
    """The stored member ``info`` of the zip at ``path`` as a `MappedMember`, or None when its bytes are not the
    plain .npy the zip directory promised (then it is read the ordinary way, with its checks). ``held``: the identity of
    the file the zip directory was read from (its other members, the labels, come from there too)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with _open_as(path, held) as fh:
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
    return MappedMember(str(path), offset, tuple(shape), dtype, fortran, held)


class Mapped(Samples):
    """A mapped array's rows as float32 model inputs: ``convert`` turns a batch of stored rows into them."""

    def __init__(self, member: MappedMember, convert: Callable[[np.ndarray], np.ndarray], sample_shape: tuple[int, ...]):
        self.member, self.convert = member, convert
        self.shape = (member.shape[0], *sample_shape)
        self._open: OpenMember | None = None  # this process's, opened at the first read

    def read(self, index: np.ndarray) -> np.ndarray:
        if self._open is None:
            self._open = self.member.opened()
        return self.convert(self._open.rows(index))

    def __getstate__(self):  # another process opens the file itself: never pickle the data or the open file
        return {**self.__dict__, "_open": None}
