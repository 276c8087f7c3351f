"""Reader and writer for the idx format of MNIST and Fashion-MNIST (plain or gzip), numpy only.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data, big-endian, C order.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from toolchain.limits import check_fits, product

_CHUNK = 1 << 20

# idx dtype code -> numpy dtype (big-endian where it matters)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxError(ValueError):
    """The bytes are not a valid idx file (the loaders turn this into a UserError)."""


def _header_info(head: bytes, dims_bytes: bytes) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, dims, header bytes, data bytes) of an idx header; sizes are exact Python ints."""
    dtype = IDX_DTYPES[head[2]]
    ndim = head[3]
    dims = struct.unpack(f">{ndim}I", dims_bytes)
    return dtype, dims, 4 + 4 * ndim, product(dims) * dtype.itemsize


def _check_head(buf: bytes) -> int:
    """Validate the 4 fixed header bytes; the number of dimensions."""
    if len(buf) < 4:
        raise IdxError("file is shorter than the 4-byte idx header")
    if buf[0] != 0 or buf[1] != 0:
        raise IdxError("bad magic number (an idx file starts with two zero bytes)")
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        raise IdxError(f"unknown idx data type code 0x{code:02X}")
    if ndim == 0:
        raise IdxError("idx header declares zero dimensions")
    if ndim > 4:  # labels (N), images (N, H, W), at most (N, C, H, W); numpy itself stops at 64
        raise IdxError(f"idx header declares {ndim} dimensions: cwtool reads labels and images (1 to 4)")
    return ndim


def _native(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _read_exact(fh, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = fh.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _read_stream(fh, path: Path, file_size: int | None) -> np.ndarray:
    """Read header then data from ``fh``; ``file_size`` is the on-disk size of a plain file."""
    head = _read_exact(fh, 4)
    ndim = _check_head(head)
    dims_bytes = _read_exact(fh, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise IdxError("file ends inside the idx header")
    dtype, dims, header, nbytes = _header_info(head, dims_bytes)
    expected = header + nbytes
    if file_size is not None and file_size != expected:
        raise IdxError(f"header says shape {dims} ({expected} bytes) but the file has {file_size} bytes")
    # Checked before allocating: a gzip stream can declare far more than this machine holds.
    check_fits(nbytes, f"idx file '{path}' (declared shape {dims}, {dtype.name})")
    data = np.empty(nbytes, dtype=np.uint8)
    view = memoryview(data)
    pos = 0
    while pos < nbytes:
        n = fh.readinto(view[pos : min(pos + _CHUNK, nbytes)])
        if not n:
            raise IdxError(
                f"header says shape {dims} ({expected} bytes) but the data ends after {header + pos} bytes"
            )
        pos += n
    if fh.read(1):
        raise IdxError(f"header says shape {dims} ({expected} bytes) but the file holds more data")
    return _native(data.view(dtype).reshape(dims))


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (``.gz`` or plain; gzip is detected from the bytes). Raises IdxError.

    The data is streamed: a gzip file is decompressed only up to the size its header declares,
    and that size is checked against the memory available first (`limits.check_fits`, a
    UserError), so a small .gz cannot inflate without bound.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic != b"\x1f\x8b":  # gzip magic, whatever the file is called
            return _read_stream(raw, path, os.fstat(raw.fileno()).st_size)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                return _read_stream(fh, path, None)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxError(f"broken gzip data ({exc})") from None


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an idx file; gzip-compressed when ``path`` ends in ``.gz``."""
    array = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if dtype.kind == array.dtype.kind and dtype.itemsize == array.dtype.itemsize:
            break
    else:
        raise ValueError(f"idx cannot store dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError("idx needs 1 to 255 dimensions")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6)
    path.write_bytes(data)
