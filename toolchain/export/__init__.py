"""Host-side export (torch allowed): one backend per artifact format, registered once here.

    backend = export_backend("onnx")
    path = backend.export_float(model, job)              # the run's float artifact
    source = backend.int8_source(model, job)             # units to keep float, int8 builds
    source.build(source.thin_input_units(), dest)

The device side (running and reading the files, no torch) is toolchain.runtimes.formats.
"""

from __future__ import annotations

from toolchain.errors import UserError
from toolchain.export.backend import ExportBackend, ExportJob, Int8Source
from toolchain.export.onnx_backend import OnnxBackend
from toolchain.export.tflite_backend import TFLiteBackend

__all__ = ["EXPORT_BACKENDS", "ExportBackend", "ExportJob", "Int8Source", "export_backend"]

EXPORT_BACKENDS: dict[str, ExportBackend] = {b.name: b for b in (OnnxBackend(), TFLiteBackend())}


def export_backend(fmt: str) -> ExportBackend:
    """The backend of an artifact format ("onnx", "tflite")."""
    try:
        return EXPORT_BACKENDS[fmt]
    except KeyError:
        raise UserError(f"unknown artifact format {fmt!r}: use one of {', '.join(EXPORT_BACKENDS)}") from None
