"""Reading a small file a user hands to cwtool (a target profile, a baseline report, a TFLite sidecar).

A path can name a pipe or a device (read for ever, or without end: /dev/zero) or a file far larger than
any the caller reads; the size is checked before reading, and the read is bounded in case the file grows
between the check and the read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from toolchain.errors import UserError


def read_small_file(path: str | Path, limit: int, what: str, hint: str) -> bytes:
    """The bytes of the plain file ``path`` (links followed), at most ``limit`` of them. UserError, in words that start
    with ``what`` and end with ``hint``, for a folder, pipe or device, or a larger file; OSError as the system gives it."""
    path = Path(path)
    # O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one, before fstat could refuse it
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is a folder, pipe or device, not a plain file: {hint}")
        if st.st_size > limit:
            raise UserError(f"{what} {path} holds {st.st_size:,} bytes, more than {limit:,}: {hint}")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb", buffering=0) as f:
        data = _read_at_most(f, limit + 1, st.st_size)
    if len(data) > limit:  # it grew since the check
        raise UserError(f"{what} {path} holds more than {limit:,} bytes: {hint}")
    return data


def _read_at_most(f, most: int, expected: int) -> bytes:
    """Up to ``most`` bytes, a chunk at a time: read(most) asks the allocator for the whole limit up front (1 GiB for a
    70 KB baseline), which a process under a memory limit (ulimit -v, a device's 1 GB) cannot have."""
    chunks, size = [], 0
    chunk = min(most, max(expected + 1, 1 << 16))  # the whole file and one byte more in one read where it did not grow
    while size < most:
        data = f.read(min(chunk, most - size))
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)
