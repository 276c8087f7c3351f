"""The TFLite backend: torch -> .tflite with litert-torch, every precision (export/tflite.py), int8 via
PT2E (export/tflite_int8.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from toolchain.export.backend import ExportBackend, ExportJob, Int8Source
from toolchain.export.tflite import export_tflite
from toolchain.export.tflite_int8 import quantizable_modules, thin_input_modules


class TFLiteInt8Source(Int8Source):
    """The torch model itself (litert-torch quantizes while it converts); units are submodule names."""

    def __init__(self, model, job: ExportJob):
        self.model, self.job = model, job

    def quantizable_units(self) -> list[str]:
        return quantizable_modules(self.model, self.job.example)

    def thin_input_units(self, max_channels: int = 4) -> list[str]:
        return thin_input_modules(self.model, self.job.example, max_channels)

    def build(self, float_units: Sequence[str], dest: Path) -> Path:
        job = self.job
        return export_tflite(self.model, job.example, dest, "int8", job.layout, job.calibration_x,
                             float_modules=list(float_units), num_classes=job.num_classes, metadata=job.metadata)


class TFLiteBackend(ExportBackend):
    name = "tflite"
    needs = ("litert_torch", "litert-torch")

    def artifact_path(self, job: ExportJob, precision: str) -> Path:
        layout = f"_{job.layout.lower()}" if job.example.dim() == 4 else ""  # feature rows have no layout to name
        return job.out / f"model_{precision}{layout}.tflite"

    def export_float(self, model, job: ExportJob, precision: str = "fp32") -> Path:
        """fp32, or fp16 (fp16 weights, fp32 compute and I/O)."""
        return export_tflite(model, job.example, self.artifact_path(job, precision), precision, job.layout,
                             num_classes=job.num_classes, metadata=job.metadata)

    def int8_source(self, model, job: ExportJob, *, scratch: bool = False) -> Int8Source:
        return TFLiteInt8Source(model, job)  # nothing is written before a build, scratch or not
