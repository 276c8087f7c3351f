"""The files one artifact is made of: the model file and, for ONNX, the external data files that hold
its weights (torch.onnx.export writes `model.onnx` + `model.onnx.data`). A multi-file model is one
artifact: its size is the size of all of them, the bytes a device stores and loads.

The external files are named by the model file, which is untrusted: only a relative name without
'..' that is a plain file inside the model's own folder counts -- what onnxruntime itself reads.
With the `onnx` package the names come from the weights' records; without it (a light install on a
device) `<name>.data`, torch's default name, stands in when it exists.

Standard library only (the `onnx` package when installed).
"""

from __future__ import annotations

import os
from pathlib import Path

from toolchain.file_identity import changed_error, identity
from toolchain.runtimes.base import MAX_SIDECAR_BYTES, sidecar_path
from toolchain.limits import check_onnx_text

__all__ = ["external_data_files", "artifact_parts", "artifact_size", "parts_identity", "check_parts_unchanged"]

_LOCATIONS: dict[tuple, list[str] | None] = {}  # by the model file's path and identity: its graph parsed once however
# often its parts are asked for (before and after a load, at the hash)


def _declared_locations(path: Path) -> list[str] | None:
    """The external-data locations the file's weights name, or None when the `onnx` package cannot say."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        check_onnx_text(path)
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a readable model: the runner says so in its own words
        return []
    tensors = list(model.graph.initializer) + [s.values for s in model.graph.sparse_initializer]
    return [entry.value for t in tensors for entry in t.external_data if entry.key == "location" and entry.value]


def _inside(folder: Path, location: str) -> Path | None:
    """``location`` as a file inside ``folder``, or None when it points anywhere else or is not a plain file."""
    rel = Path(location)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    candidate = folder / rel
    try:
        root = folder.resolve()
        resolved = candidate.resolve()
        if root not in resolved.parents or not resolved.is_file():
            return None
    except (OSError, RuntimeError):  # a link loop, a name the OS refuses
        return None
    return candidate


def external_data_files(path: str | Path) -> list[Path]:
    """The external weight files of an .onnx file that exist inside its folder, in the order named;
    [] for other formats and for self-contained files."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        return []
    key = (os.path.realpath(path), identity(path))
    if key[1] is None or key not in _LOCATIONS:
        if len(_LOCATIONS) > 64:
            _LOCATIONS.clear()
        _LOCATIONS[key] = _declared_locations(path)
    locations = _LOCATIONS[key]
    if locations is None:
        locations = [path.name + ".data"]
    found = (_inside(path.parent, loc) for loc in dict.fromkeys(locations))
    return [f for f in found if f is not None and f.name != path.name]


def artifact_parts(path: str | Path) -> list[tuple[Path, str]]:
    """Every file of the artifact with its role: "model", "external data" (ONNX weights) and, when
    present, "sidecar" (`<name>.json`, which the runner reads for layout and class count; one too large for the runner
    to read is none of its parts, and was hashed whole: 50 GB read to fingerprint a file nothing reads)."""
    path = Path(path)
    parts = [(path, "model")] + [(f, "external data") for f in external_data_files(path)]
    side = sidecar_path(path)
    if side.is_file() and side.stat().st_size <= MAX_SIDECAR_BYTES:
        parts.append((side, "sidecar"))
    return parts


def artifact_size(path: str | Path) -> dict:
    """{"bytes": the model file plus its external data, "files": [{"name", "role", "bytes"}, ...]}.
    The sidecar is listed but not counted: it is metadata, not the model."""
    folder = Path(path).parent
    files = [{"name": str(p.relative_to(folder)), "role": role, "bytes": p.stat().st_size} for p, role in artifact_parts(path)]
    return {"bytes": sum(f["bytes"] for f in files if f["role"] != "sidecar"), "files": files}


def parts_identity(path: str | Path) -> tuple:
    """The identity (toolchain.file_identity) of every file the artifact is made of, by name."""
    return tuple((str(part), identity(part)) for part, _ in artifact_parts(path))


def check_parts_unchanged(path: str | Path, before: tuple | None) -> None:
    """Raise where a file of the artifact at ``path`` is not the one ``parts_identity`` found ``before``."""
    if before is None:
        return
    now = parts_identity(path)
    if now != before:
        was, is_now = dict(before), dict(now)
        part = next((p for p in {**was, **is_now} if was.get(p) != is_now.get(p)), str(path))  # a part gone or new too
        raise changed_error(part, "artifact file")
