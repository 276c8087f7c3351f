"""Reader and writer for the idx format of MNIST and Fashion-MNIST (plain or gzip), numpy only.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data, big-endian, C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

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


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head == b"\x1f\x8b":  # gzip magic, whatever the file is called
            try:
                return gzip.decompress(fh.read())
            except (OSError, EOFError, zlib.error) as exc:
                raise IdxError(f"broken gzip data ({exc})") from None
        return fh.read()


def parse_idx(buf: bytes) -> np.ndarray:
    """Decode idx bytes into an array in native byte order (no copy for unsigned bytes)."""
    if len(buf) < 4:
        raise IdxError("file is shorter than the 4-byte idx header")
    if buf[0] != 0 or buf[1] != 0:
        raise IdxError("bad magic number (an idx file starts with two zero bytes)")
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        raise IdxError(f"unknown idx data type code 0x{code:02X}")
    if ndim == 0:
        raise IdxError("idx header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IdxError("file ends inside the idx header")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(buf) != expected:
        raise IdxError(
            f"header says shape {dims} ({expected} bytes) but the file has {len(buf)} bytes"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=header).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (``.gz`` or plain; gzip is detected from the bytes). Raises IdxError."""
    return parse_idx(_read_bytes(Path(path)))


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
