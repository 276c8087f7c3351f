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


SPECIAL = "device, pipe or socket"


def _kind(path: Path) -> str:
    """'missing', 'folder', 'file', 'dangling link' or 'device, pipe or socket';
    a folder we may not look into is the user's to fix, not a crash."""
    try:
        if path.is_symlink() and not path.exists():
            return "dangling link"
        if not path.exists():
            return "missing"
        return "folder" if path.is_dir() else "file" if path.is_file() else SPECIAL
    except OSError as exc:
        raise UserError(f"cannot look at '{path}': {exc.strerror or exc}") from exc


def _writable_folder(folder: Path, flag: str, path: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a folder we may write in."""
    existing, kind = folder, _kind(folder)
    while kind == "missing" and existing != existing.parent:
        existing = existing.parent
        kind = _kind(existing)
    if kind != "folder":
        raise UserError(f"{flag} '{path}': '{existing}' is a {kind}, not a folder")
    try:  # os.access says yes to root on read-only mounts: only a real write tells
        fd, probe = tempfile.mkstemp(prefix=".cwtool-probe.", dir=existing)
    except OSError as exc:
        raise UserError(f"{flag} '{path}': cannot write in '{existing}' ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path | None, flag: str, inputs=()) -> None:
    """Refuse, before any work starts, an output file that could not be written, that is not a
    plain file (replacing /dev/null or a pipe with a regular file would be a disaster), or that
    is one of the command's own inputs."""
    if path is None:
        return
    path = Path(path)
    kind = _kind(path)
    if kind == "folder":
        raise UserError(f"{flag} '{path}' is a folder: give a file path")
    if kind in (SPECIAL, "dangling link"):
        raise UserError(f"{flag} '{path}' is a {kind}: give a plain file path")
    resolved = path.resolve()
    for given in inputs:
        if given is not None and Path(given).resolve() == resolved:
            raise UserError(f"{flag} '{path}' is also an input of this command: give another path")
    _writable_folder(path.parent, flag, path)


def check_output_dir(path: str | Path | None, flag: str) -> None:
    """Refuse, before any work starts, an output folder that could not be created or written."""
    if path is None:
        return
    path = Path(path)
    kind = _kind(path)
    if kind not in ("missing", "folder"):
        raise UserError(f"{flag} '{path}' is a {kind}: give a folder")
    _writable_folder(path, flag, path)


def _cannot_write(path: Path, exc: OSError) -> UserError:
    return UserError(f"cannot write '{path}': {exc.strerror or exc}")


@contextmanager
def staged_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, with the
    usual file permissions (mkstemp's are owner-only), and on failure it is removed. A link is
    written through (its target is replaced, the link stays); a device or pipe is refused."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if _kind(path) == SPECIAL:
        raise UserError(f"cannot write '{path}': it is a device, pipe or socket")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    except OSError as exc:  # a path under a file, a read-only or full disk: the user's to fix
        raise _cannot_write(path, exc) from exc
    os.close(fd)
    try:
        yield tmp
        try:
            publish(tmp, path)
        except IsADirectoryError as exc:
            raise UserError(f"cannot write '{path}': it is a folder") from exc
        except OSError as exc:
            raise _cannot_write(path, exc) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with staged_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as exc:  # a full disk, a file-size limit
            raise _cannot_write(Path(path), exc) from exc
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
