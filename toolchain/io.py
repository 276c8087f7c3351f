"""Writes that never leave a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from toolchain.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file into place with the usual permissions (mkstemp's are 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _writable_folder(folder: Path, flag: str, path: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a folder we may write in."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} '{path}': '{existing}' is a file, not a folder")
    try:  # os.access says yes to root on read-only mounts: only a real write tells
        fd, probe = tempfile.mkstemp(prefix=".cwtool-probe.", dir=existing)
    except OSError as exc:
        raise UserError(f"{flag} '{path}': cannot write in '{existing}' ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path | None, flag: str) -> None:
    """Refuse, before any work starts, an output file that could not be written."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} '{path}' is a folder: give a file path")
    _writable_folder(path.parent, flag, path)


def check_output_dir(path: str | Path | None, flag: str) -> None:
    """Refuse, before any work starts, an output folder that could not be created or written."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} '{path}' is a file: give a folder")
    _writable_folder(path, flag, path)


@contextmanager
def staged_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, with the
    usual file permissions (mkstemp's are owner-only), and on failure it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    except OSError as exc:  # a path under a file, a read-only or full disk: the user's to fix
        raise UserError(f"cannot write '{path}': {exc.strerror or exc}") from exc
    os.close(fd)
    try:
        yield tmp
        try:
            publish(tmp, path)
        except IsADirectoryError as exc:
            raise UserError(f"cannot write '{path}': it is a folder") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with staged_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
