"""Writes that never leave a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from toolchain import interrupts
from toolchain.errors import UserError
from toolchain.output_paths import SPECIAL, path_kind, links_at_start, check_output_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# (as given, made absolute; real; (device, inode)): folders cwtool fills with its own files
_own_folders: list[tuple[Path, Path, tuple[int, int]]] = []


def own_folder(folder: str | Path | None) -> None:
    """``folder`` (a run directory, checked before the work began) holds only cwtool's files from now on: a file bound for
    it is never published outside it, through a link to a folder that appeared there meanwhile, nor into another folder
    at its path (it was moved while cwtool ran). None: no more."""
    _own_folders.clear()
    if folder is not None:
        found = os.stat(folder)
        _own_folders.append((Path(os.path.abspath(folder)), Path(os.path.realpath(folder)), (found.st_dev, found.st_ino)))


def _check_stays_inside(path: Path) -> None:
    place = Path(os.path.abspath(path))
    for given, real, identity in _own_folders:
        if given in place.parents:
            try:  # renamed while a run ran, its later files went to a new folder at the old path, the run split in two
                found = os.stat(real)
                same = (found.st_dev, found.st_ino) == identity
            except OSError:
                same = False
            if not same:
                raise UserError(f"'{given}' is no longer the folder this run began in (moved, renamed or removed while cwtool "
                                "ran): nothing more was written; --resume the run in the folder where it is now")
            lands = Path(os.path.realpath(place.parent))
            if lands != real and real not in lands.parents:
                raise UserError(f"'{place.parent}' leads outside '{given}' to '{lands}' (a symbolic link that appeared while cwtool "
                                "ran): nothing was written there; remove the link, then --resume")


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file into place with the usual permissions (mkstemp's are 0600); not after a stop that
    code swallowed (interrupts.raise_if_stopped), nor out of the folder it was bound for (own_folder)."""
    interrupts.raise_if_stopped()
    _check_stays_inside(Path(path))
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


TMP_PREFIX = ".cwtool-tmp."  # every staged file starts so: a run left by kill -9 can be swept on --resume


def cannot_write(path: Path, exc: OSError) -> UserError:
    advice = environment_advice(exc)
    return UserError(f"cannot write '{path}': {exc.strerror or exc}" + (f": {advice}" if advice else ""))


def environment_advice(exc: OSError) -> str | None:
    """What to do about an error of the machine's, not of cwtool's (a full disk, a size limit, a read-only file system,
    a name too long); None for any other."""
    import errno

    return {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EFBIG: "raise the file size limit (ulimit -f) or write elsewhere", errno.EROFS: "write elsewhere",
            errno.ENAMETOOLONG: "give a shorter name"}.get(exc.errno)


@contextmanager
def staged_path(path: str | Path, follow_link: bool = False):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, with the
    usual file permissions (mkstemp's are owner-only), and on failure it is removed. A symbolic link
    at ``path`` is replaced itself: one that appeared in a folder cwtool writes while it ran must not
    send the bytes onto an input or elsewhere. ``follow_link`` writes through it instead (its target
    is replaced, the link stays), for an output the user named (write_named_output). A device or pipe
    is refused."""
    path = Path(path)
    _check_stays_inside(path)  # before a temporary is made where the link leads
    link = path.is_symlink()
    if link and follow_link:
        path, link = path.resolve(), False
    if not link and path_kind(path) == SPECIAL:
        raise UserError(f"cannot write '{path}': it is a device, pipe or socket")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # named by this process, so that a later write of the same file removes what a killed one left (kill -9); the
        # stem and suffix shortened (in bytes) so that prefix, stem, pid, mkstemp's 8 characters and suffix fit 255 bytes
        suffix = _first_bytes(path.suffix or ".tmp", 40)
        room = 255 - len(TMP_PREFIX) - len(f".{os.getpid()}.") - 8 - len(suffix.encode("utf-8", "surrogateescape"))
        stem = _first_bytes(path.stem, room)
        _sweep_left_files(path.parent, f"{TMP_PREFIX}{stem}.", suffix)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{stem}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    except OSError as exc:  # a path under a file, a read-only or full disk: the user's to fix
        raise cannot_write(path, exc) from exc
    os.close(fd)
    interrupts.staged(tmp)  # a signal that finds the main thread stuck in native code still removes it
    try:
        try:
            yield tmp
        except OSError as exc:  # a library's own writer (onnx.save on a full disk) names no file: this is the one
            if exc.filename is None and environment_advice(exc) is not None:
                raise cannot_write(path, exc) from exc
            raise
        try:
            publish(tmp, path)
        except IsADirectoryError as exc:
            raise UserError(f"cannot write '{path}': it is a folder") from exc
        except OSError as exc:
            raise cannot_write(path, exc) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        interrupts.unstaged(tmp)


def _first_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of its file-system encoding, never inside a character."""
    raw = text.encode("utf-8", "surrogateescape")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


LEFT_FILE_AFTER = 3600.0  # a staged file unchanged this long, its pid gone, was left: a write takes minutes at most


def _sweep_left_files(parent: Path, prefix: str, suffix: str) -> None:
    """Remove the staged files a killed writer of the same file left in ``parent`` (train --out, verify's reports: no run
    folder's --resume sweeps them). Best effort: only regular files, of processes gone, unchanged for LEFT_FILE_AFTER
    (another container's pids look gone from here)."""
    try:
        left = left_by_the_dead(parent, prefix, LEFT_FILE_AFTER, suffix=suffix)
    except OSError:
        return
    for entry in left:
        try:
            entry.unlink()
        except OSError:
            pass


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or not a pid this system has: not ours to judge
    return True


def left_by_the_dead(parent: Path, prefix: str, older_than: float = 0.0, any_name: bool = False,
                     suffix: str | None = None) -> list[Path]:
    """Folders ``<prefix><pid>.<random>`` in ``parent`` whose process is gone (kill -9 runs no cleanup); a running
    process's are left alone, and so is any other name (``prefix`` may be another's start: "v." and "v.2024.").
    ``any_name``: ``<prefix><any name>.<pid>.<random>`` instead. ``suffix``: regular files ``<prefix><pid>.<8 random>
    <suffix>`` (mkstemp's) instead of folders. ``older_than``: seconds since the entry last changed, for a folder others
    share (the system's temp dir): a process in another container sees none of this one's pids, and its live entry would
    look left."""
    import glob
    import stat
    import time

    found = []
    for entry in Path(parent).glob(f"{glob.escape(prefix)}*"):
        rest = entry.name[len(prefix):]
        if suffix is not None:
            if not rest.endswith(suffix):
                continue
            rest = rest[:len(rest) - len(suffix)]
        fields = rest.split(".")
        fields = fields[-2:] if any_name and len(fields) >= 3 else fields
        if not (len(fields) == 2 and fields[0].isascii() and fields[0].isdigit() and (suffix is None or len(fields[1]) == 8)):
            continue
        try:
            seen = entry.lstat()
        except OSError:
            continue
        kind = stat.S_ISREG(seen.st_mode) if suffix is not None else stat.S_ISDIR(seen.st_mode)  # a link is neither
        if kind and time.time() - seen.st_mtime >= older_than and not process_alive(int(fields[0])):
            found.append(entry)
    return found


SCRATCH_LEFT_AFTER = 6 * 3600.0  # a scratch folder unchanged this long, its pid gone, was left (a quantization takes minutes)


@contextmanager
def scratch_folder(prefix: str = "cwtool-"):
    """A temporary folder (in the system's temp dir) removed afterwards, even by a stop that finds the main thread
    stuck in native code; it names this process, so that the next one removes what a killed one left there."""
    import shutil

    for left in left_by_the_dead(Path(tempfile.gettempdir()), prefix, older_than=SCRATCH_LEFT_AFTER):
        shutil.rmtree(left, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}.") as folder:
        interrupts.staged(folder)
        try:
            yield folder
        finally:
            interrupts.unstaged(folder)


def atomic_write_bytes(path: str | Path, data: bytes, follow_link: bool = False) -> Path:
    with staged_path(path, follow_link) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as exc:  # a full disk, a file-size limit
            raise cannot_write(Path(path), exc) from exc
    return Path(path)


def atomic_write_npz(path: str | Path, arrays: dict) -> Path:
    """An .npz numpy reads as ``np.savez`` writes it, written a chunk at a time: a value is an array or
    (shape, dtype, chunks) whose chunks, stacked on the first axis, make that array."""
    import zipfile

    import numpy as np

    with staged_path(path) as tmp:
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, value in arrays.items():
                    whole = None if isinstance(value, tuple) else np.asarray(value)
                    shape, dtype, chunks = value if whole is None else (whole.shape, whole.dtype, [whole])
                    dtype = np.dtype(dtype)
                    if dtype.hasobject:  # its bytes would be pointers
                        raise ValueError(f"{name}: an object array cannot be written as bytes")
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                        np.lib.format.write_array_header_1_0(
                            entry, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
                        written = 0
                        for chunk in chunks:
                            chunk = np.ascontiguousarray(chunk, dtype=dtype)
                            if chunk.shape[1:] != tuple(shape[1:]):  # its bytes would be read as rows of another shape
                                raise ValueError(f"{name}: a chunk of shape {chunk.shape} for rows of {tuple(shape[1:])}")
                            written += len(chunk) if chunk.ndim else 1
                            entry.write(chunk.tobytes())
                        if written != (shape[0] if len(shape) else 1):
                            raise ValueError(f"{name}: {written} rows written for shape {tuple(shape)}")
        except OSError as exc:  # a full disk, a file-size limit
            raise cannot_write(Path(path), exc) from exc
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json_text(obj))


def write_named_output(path: str | Path, text: str, flag: str, inputs=()) -> Path:
    """Write an output the user named (``--json``, ``--markdown``, ``--junit``), through a link they made there before the
    command began (a link that took the name while it ran is replaced, not followed); checked against the command's
    inputs again just before."""
    place = os.path.abspath(path)
    theirs = os.path.islink(path) and links_at_start.get(place) == os.path.realpath(path)  # since the start, unchanged
    links_at_start.pop(place, None)
    check_output_file(path, flag, inputs)
    return atomic_write_bytes(path, text.encode("utf-8"), follow_link=theirs)


def json_text(obj) -> str:
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove staged files a killed process left in ``folder`` (recursively); returns what went."""
    folder = Path(folder)
    gone = []
    if not folder.is_dir():
        return gone
    for tmp in folder.rglob(f"{TMP_PREFIX}*"):
        if tmp.is_file() and not tmp.is_symlink():
            try:
                tmp.unlink()
                gone.append(tmp)
            except OSError:
                pass
    return gone
