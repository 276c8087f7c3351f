"""Writes that never leave a half-written file behind."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from toolchain import interrupts
from toolchain.errors import UserError, one_line, unprintable_in
from toolchain.input_paths import is_dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_own_folders: list[tuple[Path, Path]] = []  # (as given, made absolute; real): folders cwtool fills with its own files


def own_folder(folder: str | Path | None) -> None:
    """``folder`` (a run directory, checked before the work began) holds only cwtool's files from now on: a file bound for
    it is never published outside it, through a link to a folder that appeared there meanwhile. None: no more."""
    _own_folders.clear()
    if folder is not None:
        _own_folders.append((Path(os.path.abspath(folder)), Path(os.path.realpath(folder))))


def _check_stays_inside(path: Path) -> None:
    place = Path(os.path.abspath(path))
    for given, real in _own_folders:
        if given in place.parents:
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


SPECIAL = "device, pipe or socket"
TMP_PREFIX = ".cwtool-tmp."  # every staged file starts so: a run left by kill -9 can be swept on --resume


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


def _real(path) -> Path | None:
    """``path`` resolved, or None for a link loop (nothing can be written there, nor read)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):
        return None


def _inside(path: Path, folder: Path) -> bool:
    return folder in path.parents


def _places(path) -> tuple[Path | None, Path]:
    """Where ``path`` is: its real path (None for a link loop) and the path as written, made absolute."""
    return _real(path), Path(os.path.abspath(path))


def _overlaps(output: Path, inputs) -> Path | None:
    """The input that ``output`` would replace or write into (an input folder), if any: by its real path, by the path
    as written (a link inside an input folder), and by identity (a hard link to an input)."""
    out, written = _places(output)
    for given in inputs:
        src, src_written = _places(given) if given is not None else (None, None)
        if src is None:
            continue
        if out == src or written == src_written or (is_dir(src) and ((out and _inside(out, src)) or _inside(written, src_written))):
            return Path(given)
        try:
            if output.exists() and os.path.samefile(output, src):
                return Path(given)
        except OSError:
            pass
    return None


def _printable_name(path: Path, flag: str) -> None:
    """An output's name is printed in console and log lines: a line break or terminal escape in it would start a line of
    its own there ("gate: passed")."""
    char = unprintable_in(path)
    if char is not None:
        raise UserError(f"{flag} '{one_line(path)}' has a line break or a control character in its name ({char}): give another name")


_links_at_start: dict[str, str] = {}  # an output the user named that was a link when it was checked: where it led


def check_output_file(path: str | Path | None, flag: str, inputs=()) -> None:
    """Refuse, before any work starts, an output file that could not be written, that is not a
    plain file (replacing /dev/null or a pipe with a regular file would be a disaster), or that
    is one of the command's own inputs or lies inside an input folder."""
    if path is None:
        return
    path = Path(path)
    if os.path.islink(path):
        _links_at_start[os.path.abspath(path)] = os.path.realpath(path)
    _printable_name(path, flag)
    kind = _kind(path)
    if kind == "folder":
        empty = " (an empty value, such as an unset $GITHUB_STEP_SUMMARY, reads as '.')" if str(path) == "." else ""
        raise UserError(f"{flag} '{path}' is a folder{empty}: give a file path")
    if kind in (SPECIAL, "dangling link"):
        raise UserError(f"{flag} '{path}' is a {kind}: give a plain file path")
    clash = _overlaps(path, inputs)
    if clash is not None:
        where = f"lies inside the input folder '{clash}', which is" if is_dir(clash) else (
            "is" if _real(clash) == _real(path) else f"is '{clash}', which is")
        raise UserError(f"{flag} '{path}' {where} also an input of this command: give another path")
    record = _run_record(path) if kind == "file" else None
    if record is not None:
        raise UserError(f"{flag} '{path}' is {record}, which the files it lists are checked against: give another path")
    _writable_folder(path.parent, flag, path)


def _run_record(path: Path) -> str | None:
    """What ``path`` holds where it begins as a compress run's report.json, report.md or manifest.json, or an export's
    export.json or export.md (records other checks rest on, verify's baseline and --resume's, and their words), else
    None. A verify --json given a run's report.json by mistake made it a verify of its own artifact, and a later
    --baseline on it passed a file the run had failed."""
    import re

    head = file_head(path)
    if re.match(r'\{\s*"schema_version":\s*\d+,\s*"kind":\s*"cwtool-export"', head):
        return "an export's export.json"
    if re.match(r'\{\s*"schema_version":\s*\d+,\s*"tool":\s*\{[^{}]*\},\s*"run_id":', head):
        return "a compress run's report.json"
    if re.match(r'\{\s*"run_id":\s*"[0-9a-f]+",\s*"inputs":', head):  # what --resume rests on
        return "a compress run's manifest.json"
    if head.startswith("# cwtool compress report"):
        return "a compress run's report.md"
    if head.startswith("# cwtool export report"):
        return "an export's export.md"
    return None


def file_head(path: str | Path, size: int = 512) -> str:
    """The first ``size`` bytes of a plain file (callers check it is one: a FIFO would block), as text; "" where it
    cannot be read. Enough to tell what cwtool wrote from its opening lines."""
    try:
        with open(path, "rb") as f:
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return ""


def check_output_dir(path: str | Path | None, flag: str, inputs=()) -> None:
    """Refuse, before any work starts, an output folder that could not be created or written, that
    holds one of the command's inputs, or that lies inside an input folder."""
    if path is None:
        return
    path = Path(path)
    _printable_name(path, flag)
    kind = _kind(path)
    if kind not in ("missing", "folder"):
        raise UserError(f"{flag} '{path}' is a {kind}: give a folder")
    out, written = _places(path)
    for given in inputs:
        src, src_written = _places(given) if given is not None else (None, None)
        if src is None:
            continue
        if src == out or (out and _inside(src, out)) or src_written == written or _inside(src_written, written):
            raise UserError(f"{flag} '{path}' holds '{given}', an input of this command: give another folder")
        if is_dir(src) and ((out and _inside(out, src)) or _inside(written, src_written)):
            raise UserError(f"{flag} '{path}' lies inside the input folder '{given}': give a folder outside it")
    _writable_folder(path, flag, path)


def check_own_files(folder, flag: str, limit: int = 100_000) -> None:
    """Refuse when a file cwtool writes again in ``folder`` (a resumed run's reports and log) is a symbolic link:
    staged writes replace a link's target, so a link left there (by hand, or by anyone who could write in the folder)
    would send cwtool's output onto an input or elsewhere. Hard links are fine: a staged write gives the name new bytes
    and leaves the other name's, and the log is made a file of its own before it is appended to (RunLog.attach).
    The folder is walked without following links inside it (a link to the folder itself is the user's choice)."""
    entries = (Path(root) / name for root, dirs, files in os.walk(folder, followlinks=False) for name in dirs + files)
    for seen, path in enumerate(entries, 1):
        if seen > limit:
            raise UserError(f"{flag} holds more than {limit:,} entries: it is not a folder cwtool made; give another")
        try:
            st = path.lstat()
        except OSError:  # gone meanwhile: nothing to write through
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UserError(f"{flag}: '{path}' is a symbolic link, and cwtool writes its own files there: remove it or give another folder")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):  # reading or appending to a pipe waits for ever
            raise UserError(f"{flag}: '{path}' is a {SPECIAL}, not a file cwtool wrote: remove it or give another folder")


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
    if not link and _kind(path) == SPECIAL:
        raise UserError(f"cannot write '{path}': it is a device, pipe or socket")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the stem shortened so that prefix, stem, mkstemp's 8 characters and the suffix fit a 255-byte name
        stem = path.stem.encode("utf-8", "surrogateescape")[:180].decode("utf-8", "ignore") if len(path.name.encode(
            "utf-8", "surrogateescape")) > 200 else path.stem
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{stem}.", suffix=(path.suffix or ".tmp")[:40], dir=path.parent)
    except OSError as exc:  # a path under a file, a read-only or full disk: the user's to fix
        raise cannot_write(path, exc) from exc
    os.close(fd)
    interrupts.staged(tmp)  # a signal that finds the main thread stuck in native code still removes it
    try:
        yield tmp
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


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or not a pid this system has: not ours to judge
    return True


def left_by_the_dead(parent: Path, prefix: str, older_than: float = 0.0) -> list[Path]:
    """Folders ``<prefix><pid>.<random>`` in ``parent`` whose process is gone (kill -9 runs no cleanup); a running
    process's are left alone, and so is any other name (``prefix`` may be another's start: "v." and "v.2024.").
    ``older_than``: seconds since the folder last changed, for a folder others share (the system's temp dir): a process
    in another container sees none of this one's pids, and its live folder would look left."""
    import glob
    import time

    found = []
    for entry in Path(parent).glob(f"{glob.escape(prefix)}*"):
        fields = entry.name[len(prefix):].split(".")
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if (len(fields) == 2 and fields[0].isascii() and fields[0].isdigit() and entry.is_dir() and not entry.is_symlink()
                and age >= older_than and not process_alive(int(fields[0]))):
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
    theirs = os.path.islink(path) and _links_at_start.get(place) == os.path.realpath(path)  # since the start, unchanged
    _links_at_start.pop(place, None)
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
