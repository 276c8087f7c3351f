"""How much text an ONNX file carries at its top level, read from the protobuf's wire format without parsing the model.

onnx and onnxruntime read a file's metadata_props whole, each in its own copies, before any check of cwtool's can run:
a file holding 100 MB of one metadata value took verify to 1.4 GB. The top-level fields are walked here instead (a tag,
a length, a seek), and a file whose metadata or doc string outgrows ``MAX_ONNX_TEXT_BYTES`` is refused first."""

from __future__ import annotations

from pathlib import Path

from toolchain.errors import UserError

MAX_ONNX_TEXT_BYTES = 16 << 20
"""The most bytes of metadata_props and doc_string a ModelProto may hold (cwtool's own files hold a few KB)."""

MAX_TOP_LEVEL_FIELDS = 100_000
"""A ModelProto has a few dozen top-level fields (opset imports, one graph, metadata, functions)."""

_TEXT_FIELDS = (6, 14)  # ModelProto.doc_string, ModelProto.metadata_props


def _varint(fh) -> int | None:
    value = 0
    for shift in range(0, 70, 7):
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None


def top_level_text_bytes(path: str | Path) -> int | None:
    """Bytes of the file's top-level metadata_props and doc_string; None where its top level is not a ModelProto's
    wire format (the runtime then says what is wrong in its own words)."""
    total = 0
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(0)
        for _ in range(MAX_TOP_LEVEL_FIELDS):
            if fh.tell() == size:
                return total
            tag = _varint(fh)
            if tag is None:
                return None
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                if _varint(fh) is None:
                    return None
                continue
            skip = {1: 8, 5: 4}.get(wire) if wire != 2 else _varint(fh)
            if skip is None or fh.tell() + skip > size:
                return None
            if wire == 2 and field in _TEXT_FIELDS:
                total += skip
            fh.seek(skip, 1)
    raise UserError(f"{path} holds over {MAX_TOP_LEVEL_FIELDS:,} top-level protobuf fields: not an ONNX model "
                    "cwtool reads; re-export it")


def check_onnx_text(path: str | Path) -> None:
    """Refuse, before onnx or onnxruntime reads it, an ONNX file whose metadata or doc string is over the cap."""
    found = top_level_text_bytes(path)
    if found is not None and found > MAX_ONNX_TEXT_BYTES:
        raise UserError(f"{path} holds {found / 2**20:,.0f} MiB of metadata and doc string (cwtool reads at most "
                        f"{MAX_ONNX_TEXT_BYTES >> 20} MiB): not a file cwtool made; re-export it")
