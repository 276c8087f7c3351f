"""Whether a file is still the one cwtool began to read. cwtool reads an input by its path at each step (its checks, the
runtime's load, the run, the sha256 a report records), and another process that renames a file over that path between
two steps makes them about different files: a report's sha256 of a file verify did not judge, a Loop bomb or a crashing
TFLite file swapped in after the checks that refuse it (a reviewer's races, won by timing alone). The identity taken
before the first step, found the same after the last, makes every step about one file. Standard library only."""

from __future__ import annotations

import os
from pathlib import Path

from toolchain.errors import UserError

__all__ = ["identity", "fd_identity", "check_unchanged", "changed_error"]


def identity(path: str | Path) -> tuple | None:
    """Device, inode, size and modification time: a rename over the path is another inode, a write moves the
    modification time. Not the change time, which a chmod or a hard link (a backup's `cp -al`) moves too. None where the
    file cannot be looked at (its reader says why)."""
    try:
        return _key(os.stat(path))
    except (OSError, ValueError):
        return None


def fd_identity(fd: int) -> tuple:
    """The identity of the file open at ``fd``."""
    return _key(os.fstat(fd))


def _key(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def changed_error(path: str | Path, what: str = "file") -> UserError:
    return UserError(f"{what} '{path}' changed while cwtool read it (another process wrote or replaced it): run the "
                     "command again once nothing writes to it")


def check_unchanged(path: str | Path, before: tuple | None, what: str = "file") -> None:
    """Raise where ``path`` is no longer the file whose ``identity`` was ``before``."""
    if before is not None and identity(path) != before:
        raise changed_error(path, what)
