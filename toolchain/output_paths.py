"""Where a command's outputs may go, checked before any work starts: never onto or into one of its inputs, never over a
run's record (a report, a manifest), never a device or pipe, never a folder that cannot be written; and on --resume, no
link among the files cwtool writes again. toolchain.io writes them."""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

from toolchain.errors import UserError, one_line, unprintable_in
from toolchain.input_paths import is_dir, walk_entries

__all__ = ["check_output_file", "check_output_dir", "check_own_files", "file_head", "SPECIAL"]


SPECIAL = "device, pipe or socket"
OS_LITTER = r"\.DS_Store|\._.+|Thumbs\.db|desktop\.ini"  # what Finder and Explorer leave in a folder they show


def is_os_litter(name: str) -> bool:
    return re.fullmatch(OS_LITTER, name) is not None


def holds_anything(folder: Path) -> bool:
    """Whether ``folder`` holds an entry other than what a file browser leaves (a new --out opened in Finder holds a
    .DS_Store, and was refused as a folder that is not a cwtool run)."""
    return any(not is_os_litter(p.name) for p in Path(folder).iterdir())


def path_kind(path: Path, flag: str | None = None) -> str:
    """'missing', 'folder', 'file', 'dangling link' or 'device, pipe or socket';
    a folder we may not look into is the user's to fix, not a crash (said as ``flag``'s, where given)."""
    try:
        if path.is_symlink() and not path.exists():
            return "dangling link"
        if not path.exists():
            return "missing"
        return "folder" if path.is_dir() else "file" if path.is_file() else SPECIAL
    except OSError as exc:
        raise UserError(f"{f'{flag}: ' if flag else ''}cannot look at '{path}': {exc.strerror or exc}") from exc


def _writable_folder(folder: Path, flag: str, path: Path) -> None:
    """The nearest existing folder at or above ``folder`` must be a folder we may write in."""
    existing, kind = folder, path_kind(folder, flag)
    while kind == "missing" and existing != existing.parent:
        existing = existing.parent
        kind = path_kind(existing, flag)
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


links_at_start: dict[str, str] = {}  # an output the user named that was a link when it was checked: where it led


def check_output_file(path: str | Path | None, flag: str, inputs=()) -> None:
    """Refuse, before any work starts, an output file that could not be written, that is not a
    plain file (replacing /dev/null or a pipe with a regular file would be a disaster), or that
    is one of the command's own inputs or lies inside an input folder."""
    if path is None:
        return
    path = Path(path)
    if os.path.islink(path):
        links_at_start[os.path.abspath(path)] = os.path.realpath(path)
    _printable_name(path, flag)
    if path.name and not path.name.strip():  # `--json "$OUT"` with OUT=" ": a file named by a space
        raise UserError(f"{flag} '{path}' is a name of spaces alone (an unset variable?): give a file path")
    kind = path_kind(path, flag)
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
    _refuse_a_runs_own(path, flag)
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


# what a compress run directory and an export folder keep, below their folder: --resume reads them back, sweeps its
# folders of what it did not write again, and verify checks the files against the report
RUN_KEEPS = {"manifest.json": ("rounds", "artifacts", "work", "plots", "pruned.pt", "calibration.npz", "compress.log", "report.html",
                               "report.json", "report.md", "manifest.json"),
             "export.json": ("artifacts", "calibration.npz", "export.log", "export.json", "export.md")}


def _refuse_a_runs_own(path: Path, flag: str) -> None:
    """Refuse an output that is, or lies inside, what a compress run directory or an export folder keeps (its rounds'
    weights, artifacts, calibration set, log, plots): a verify --markdown made a shipped artifact Markdown, a bench --json
    a round's summary, a train --out a round's weights, and an export inside plots/ was swept by the next --resume.
    Other files beside them (a verify report of your own) are yours."""
    places = {Path(os.path.abspath(path)), Path(os.path.realpath(path))}  # as written, and where a link leads
    for written, folder in ((w, f) for w in places for f in w.parents):  # work/a/b/c/x is swept with work/ too
        for record, keeps in RUN_KEEPS.items():
            marker = folder / record
            try:
                if not marker.is_file() or _run_record(marker) is None:
                    continue
            except OSError:
                continue
            part = written.relative_to(folder).parts[0]
            if part.casefold() in (k.casefold() for k in keeps):  # ARTIFACTS/ is artifacts/ where names ignore case (macOS)
                what = "compress run directory" if record == "manifest.json" else "export folder"
                raise UserError(f"{flag} '{path}' is in what the {what} '{folder}' keeps ('{part}'), which cwtool reads back "
                                "and replaces: give a path outside it")


def file_head(path: str | Path, size: int = 512) -> str:
    """The first ``size`` bytes of a plain file (callers check it is one: a FIFO would block), as text; "" where it
    cannot be read. Enough to tell what cwtool wrote from its opening lines."""
    try:
        with open(path, "rb") as f:
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return ""


# how the JSON each command writes begins: a --json replaces only an empty file or one of its own command's
OWN_JSON = {
    "evaluate": r'\{\s*"schema_version":\s*\d+,\s*"n":',
    "bench": r'\{\s*"schema_version":\s*\d+,\s*"results":',
    "targets": r'(\[\s*)?\{\s*"name":\s*"(?:[^"\\\n]|\\.)*",\s*"description":',
}


def check_replaceable(path: Path | None, flag: str, ours, holds: str) -> None:
    """An output replaces only an empty file (made for it) or one ``ours(path)`` knows as its command's own (an earlier
    run's, in a CI workspace); any other existing file is refused, saying what it ``holds``."""
    if path is None or not path.is_file() or path.stat().st_size == 0 or ours(path):
        return
    raise UserError(f"{flag} '{one_line(str(path))}' holds {holds}: give another path, or remove it first")


def check_json_replaceable(path: Path | None, command: str) -> None:
    """A --json report replaces only an empty file or JSON its command wrote before: it replaced a trained checkpoint, an
    exported TFLite file, its sidecar and a calibration set given to it by mistake."""
    check_replaceable(path, "--json", lambda p: re.match(OWN_JSON[command], file_head(p)) is not None,
                      f"a file {command} did not write")


def check_output_dir(path: str | Path | None, flag: str, inputs=()) -> None:
    """Refuse, before any work starts, an output folder that could not be created or written, that
    holds one of the command's inputs, or that lies inside an input folder."""
    if path is None:
        return
    path = Path(path)
    _printable_name(path, flag)
    kind = path_kind(path, flag)
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
    _refuse_a_runs_own(path, flag)
    _writable_folder(path, flag, path)


def check_own_files(folder, flag: str, limit: int = 100_000) -> None:
    """Refuse when a file cwtool writes again in ``folder`` (a resumed run's reports and log) is a symbolic link:
    staged writes replace a link's target, so a link left there (by hand, or by anyone who could write in the folder)
    would send cwtool's output onto an input or elsewhere. Hard links are fine: a staged write gives the name new bytes
    and leaves the other name's, and the log is made a file of its own before it is appended to (RunLog.attach).
    The folder is walked without following links inside it (a link to the folder itself is the user's choice)."""
    for seen, (path, depth) in enumerate(walk_entries(Path(folder), MAX_DEPTH + 1), 1):
        if seen > limit or depth > MAX_DEPTH:
            too_much = f"more than {limit:,} entries" if seen > limit else f"folders nested more than {MAX_DEPTH} deep"
            raise UserError(f"{flag} holds {too_much}: it is not a folder cwtool made; give another")
        try:
            st = path.lstat()
        except OSError:  # gone meanwhile: nothing to write through
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UserError(f"{flag}: '{path}' is a symbolic link, and cwtool writes its own files there: remove it or give another folder")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):  # reading or appending to a pipe waits for ever
            raise UserError(f"{flag}: '{path}' is a {SPECIAL}, not a file cwtool wrote: remove it or give another folder")


MAX_DEPTH = 32  # a run directory cwtool made nests 3 deep: os.walk's recursion ended 1,500 nested folders in exit 3
