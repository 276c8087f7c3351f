"""Large arrays read in place: an .npz member stored uncompressed, memory-mapped -- numpy only.

``numpy.load`` maps a plain .npy file (``mmap_mode="r"``) but reads every .npz member whole. An .npz written
by ``numpy.savez`` stores its members uncompressed, so each one is a plain .npy at some offset of the file:
`map_member` finds that offset in the zip member's local header and maps the array there. Rows are then read
from the page cache as they are asked for, and `Mapped` converts each batch to float32 model inputs with the
rules every other x array gets (`toolchain.data.features.Conversion`). Members stored compressed
(``numpy.savez_compressed``) cannot be mapped: they are read into memory as before.
"""

from __future__ import annotations

import struct
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from toolchain.data.samples import Samples

# what numpy raises on a malformed .npy header besides ValueError: its literal parser's errors, and tokenize's where
# it retries an old-style header through the tokenizer (an unclosed bracket)
HEADER_ERRORS = (SyntaxError, TypeError, OverflowError, RecursionError, tokenize.TokenError)

__all__ = ["MAP_BYTES", "MappedMember", "Mapped", "map_member", "mappable"]

MAP_BYTES = 256 << 20
"""An x member whose float32 copy would take more than this is memory-mapped when it is stored uncompressed."""

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

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def array(self) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                         order="F" if self.fortran else "C")


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
    return MappedMember(str(path), offset, tuple(shape), dtype, fortran)


class Mapped(Samples):
    """A mapped array's rows as float32 model inputs: ``convert`` turns a batch of stored rows into them."""

    def __init__(self, member: MappedMember, convert: Callable[[np.ndarray], np.ndarray], sample_shape: tuple[int, ...]):
        self.member, self.convert = member, convert
        self.shape = (member.shape[0], *sample_shape)
        self._array = None

    def raw(self) -> np.memmap:
        if self._array is None:
            self._array = self.member.array()
        return self._array

    def read(self, index: np.ndarray) -> np.ndarray:
        return self.convert(np.asarray(self.raw()[index]))

    def __getstate__(self):  # another process maps the file itself: never pickle the data
        return {**self.__dict__, "_array": None}
