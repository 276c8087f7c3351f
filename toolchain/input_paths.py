"""The files and folders a command reads: the paths its outputs are checked against (toolchain.io never writes
over one), found without reading or running any of them."""

from __future__ import annotations

import os
from pathlib import Path

from toolchain.errors import UserError
from toolchain.limits import check_onnx_text


def user_path(spec: str | Path) -> Path:
    """A path as the user typed it, ``~`` expanded; a ``~name`` of no such user is bad input, not a crash."""
    try:
        return Path(str(spec)).expanduser()
    except RuntimeError as exc:  # "Could not determine home directory"
        raise UserError(f"'{spec}': {exc}: give the path without ~") from exc


def absent(path: str | Path) -> str:
    """How a path that does not exist is said: a link to nothing (or a loop of links) is named as such, not as a typo."""
    return "is a link to nothing (or a loop of links)" if Path(str(path)).is_symlink() else "does not exist"


ONNX_PROTO_LIMIT = 2 << 30  # protobuf's own limit: a larger .onnx file holds no graph onnx can parse


def artifact_files(path: str | Path) -> list[Path]:
    """An exported artifact and the files that travel with it: its sidecar ``<name>.json`` and, for
    ONNX, the external weight files it names (read without loading the weights; the `onnx` package
    is optional on a device, where ``<name>.data``, torch's default name, stands in)."""
    if not str(path).strip() or not Path(path).name:  # `cwtool verify "$ARTIFACT"`, the variable unset; '.', '/'
        unset = " (an empty argument: an unset variable?)" if str(path).strip() in ("", ".") else ""  # '' arrives as '.'
        raise UserError(f"artifact '{path}' names no file{unset}: give the .onnx or .tflite file")
    path = Path(path)
    files = [path, path.with_name(path.name + ".json")]
    if path.suffix.lower() == ".onnx":
        files.append(path.with_name(path.name + ".data"))
        if not path.is_file() or path.stat().st_size > ONNX_PROTO_LIMIT:  # a pipe would hang the read, /dev/zero fill
            return list(dict.fromkeys(files))  # the memory; neither is a model: the runner refuses it in its own words
        try:
            import onnx

            check_onnx_text(path)
            model = onnx.load(str(path), load_external_data=False)
            for init in model.graph.initializer:
                for entry in init.external_data:
                    if entry.key == "location" and entry.value:
                        files.append(path.parent / entry.value)
        except Exception:  # not installed, or not a readable model: the runner says so in its own words
            pass
    return list(dict.fromkeys(files))


def input_paths(*specs, artifacts=(), arch: str | None = None) -> list[Path]:
    """The files and folders a command reads, for checking its outputs against: the given paths that
    exist (a data spec such as `digits` names no file), every artifact with its sidecar and external
    data, and the code file of a ``file.py:Class`` architecture."""
    found: list[Path] = []
    for spec in specs:
        if spec is not None and str(spec).strip() and user_path(spec).exists():
            found.append(user_path(spec))
            if found[-1].is_dir():  # an image or idx folder's links read files elsewhere: those are inputs too
                found += _links_under(found[-1])
    for art in artifacts:
        found += artifact_files(art)
    if arch:
        target, sep, _ = str(arch).rpartition(":")
        if sep and target.endswith(".py"):
            found.append(Path(target))
        elif sep:
            found += _module_files(target)
    return found


def _module_files(name: str) -> list[Path]:
    """The source files a ``module:Class`` architecture's import may run, found without running any of them (the
    checks come before the import: a package's __init__ is code): a top-level module's file, or for ``a.b.c`` every
    a/__init__.py, a/b/__init__.py, a/b/c.py and a/b/c/__init__.py under every import path. More than the import
    will read where packages repeat across paths; an output refused for any of them is refused rightly."""
    import importlib.util
    import sys

    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return []
    if len(parts) == 1:
        try:
            spec = importlib.util.find_spec(name)  # a top-level name is found, not imported
        except Exception:
            return []
        origin = getattr(spec, "origin", None)
        return [Path(origin)] if origin and os.path.isabs(origin) and Path(origin).is_file() else []  # not "built-in"
    found = []
    for entry in dict.fromkeys(sys.path):
        base = Path(entry or ".")
        found += [base.joinpath(*parts[:depth], "__init__.py") for depth in range(1, len(parts) + 1)]
        found.append(base.joinpath(*parts[:-1], f"{parts[-1]}.py"))
    return [f for f in found if f.is_file()]


def _links_under(folder: Path) -> list[Path]:
    """The symbolic links a data folder's loader follows, down to the depth it reads (an ImageFolder's class folders and
    their images; an idx folder's files): each is read where it points. Bounded, so that a link to / costs no walk."""
    links = []
    for entry in loader_entries(folder):
        if entry.is_symlink():
            links.append(entry)
        links += [inner for inner in loader_entries(entry) if inner.is_symlink() and not is_dir(inner)]  # a class folder's images
    return links


def is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder; False where it cannot be looked at."""
    try:
        return path.is_dir()
    except OSError:
        return False


def loader_entries(folder: Path) -> list[Path]:
    """The entries of a folder the data loaders read, by name (none for a file or an unreadable folder: the loader says
    so in its own words; hidden ones are skipped, as the loaders skip them)."""
    try:
        return sorted(e for e in folder.iterdir() if not e.name.startswith(".")) if is_dir(folder) else []
    except OSError:
        return []


def walk_entries(folder: Path, max_depth: int | None = None):
    """(path, depth) of every entry below ``folder`` (depth 1: its own entries), links not followed, folders deeper than
    ``max_depth`` not entered, without recursion: os.walk's (and a recursive walk's) ended a folder nested 1,100 deep in
    exit 3. An entry gone or unreadable meanwhile is passed over, as os.walk does."""
    stack = [(Path(folder), 1)]
    while stack:
        here, depth = stack.pop()
        try:
            with os.scandir(here) as listing:
                found = list(listing)
        except OSError:
            continue
        for entry in found:
            yield Path(entry.path), depth
            try:
                if (max_depth is None or depth < max_depth) and entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), depth + 1))
            except OSError:
                continue
