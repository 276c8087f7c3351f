"""Fingerprints that let a report prove what it judged: files and data rows, by sha256.

numpy and the standard library only (and the `onnx` package, when installed, to find an ONNX file's
external data): `cwtool verify` computes the same fingerprints on a device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from toolchain.data.samples import batches
from toolchain.runtimes.parts import artifact_parts, check_parts_unchanged

__all__ = ["file_sha256", "folder_listing_sha256", "rows_sha256", "artifact_sha256"]

ROWS_HASH_VERSION = b"cwtool-rows/1"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_listing_sha256(folder: str | Path) -> str:
    """The names, sizes and modification times of the files a data folder's loader reads, two levels down (an idx
    folder's files, an ImageFolder's class folders and their images; hidden entries skipped, links followed as the
    loaders follow them): a folder with files added, removed, rewritten or swapped for others of the same size is
    another input, as make and rsync's quick check judge files. The contents are not read (20,000 dermoscopy images
    are gigabytes: minutes at every start); a copy that does not keep modification times is another input too."""
    from toolchain.input_paths import loader_entries

    h = hashlib.sha256(b"cwtool-listing/2")

    def stamp(path: Path) -> str:
        try:
            st = path.stat()
        except OSError:
            return "-1"
        return f"{st.st_size}\t{st.st_mtime_ns}"

    for top in loader_entries(Path(folder)):
        if top.is_dir():
            for entry in loader_entries(top):
                h.update(f"{top.name}/{entry.name}\t{stamp(entry)}\n".encode("utf-8", "surrogateescape"))
        else:
            h.update(f"{top.name}\t{stamp(top)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def artifact_sha256(path: str | Path, held: tuple | None = None) -> dict:
    """The fingerprint of an artifact: ``sha256`` of its model file (what `sha256sum model.onnx` prints)
    and ``files``, every file it is made of (the model, ONNX external data, the sidecar the runner reads)
    with its role, bytes and sha256, so a report proves which bytes were judged."""
    path = Path(path)
    files = [{"name": str(p.relative_to(path.parent)), "role": role, "bytes": p.stat().st_size, "sha256": file_sha256(p)}
             for p, role in artifact_parts(path)]
    check_parts_unchanged(path, held)  # ``held`` (the runner's parts_identity): the bytes hashed are the bytes judged
    return {"sha256": files[0]["sha256"], "files": files}


def rows_sha256(x, y: np.ndarray) -> str:
    """The identity of evaluation rows: their model inputs (float32, dataset layout, row order) and labels.
    Two evaluations are paired exactly when their hashes agree. The inputs are read a batch at a time
    (toolchain.data.samples): the same bytes in the same order, so the same hash as one array gives."""
    h = hashlib.sha256(ROWS_HASH_VERSION)
    if not hasattr(x, "shape"):
        x = np.asarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    h.update(repr((tuple(x.shape), tuple(y.shape))).encode())
    for batch in batches(x):
        h.update(memoryview(np.ascontiguousarray(batch, dtype=np.float32)).cast("B"))
    h.update(memoryview(y).cast("B"))
    return h.hexdigest()
