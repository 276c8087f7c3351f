"""The ONNX backend: torch -> fp32 .onnx (export/onnx.py), fp32 .onnx -> int8 QDQ (export/onnx_int8.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from toolchain.export.backend import ExportBackend, ExportJob, Int8Source
from toolchain.export.onnx import export_onnx
from toolchain.export.onnx_int8 import quantizable_nodes, quantize_onnx, thin_input_convs


class OnnxInt8Source(Int8Source):
    """An fp32 .onnx file; units are the node names of its pre-processed graph."""

    def __init__(self, fp32: Path, job: ExportJob):
        self.fp32, self.job = fp32, job

    def quantizable_units(self) -> list[str]:
        return quantizable_nodes(self.fp32)

    def thin_input_units(self, max_channels: int = 4) -> list[str]:
        return thin_input_convs(self.fp32, max_channels)

    def build(self, float_units: Sequence[str], dest: Path) -> Path:
        return quantize_onnx(self.fp32, dest, self.job.calibration_x, method=self.job.calibration_method,
                             nodes_to_exclude=list(float_units))


class OnnxBackend(ExportBackend):
    name = "onnx"
    needs = ("onnxruntime", "onnxruntime")

    def artifact_path(self, job: ExportJob, precision: str) -> Path:
        return job.out / f"model_{precision}.onnx"

    def export_float(self, model, job: ExportJob, precision: str = "fp32") -> Path:
        """The fp32 file (the ONNX exporter writes fp32 only), written once an export: the int8 file is
        quantized from it as well. A file an earlier run left (a resumed run) is written again: its model
        may hold another offset."""
        path = self.artifact_path(job, "fp32")
        if path not in job.written:
            export_onnx(model, job.example, path, num_classes=job.num_classes, metadata=job.metadata)
            job.written.add(path)
        return path

    def int8_source(self, model, job: ExportJob, *, scratch: bool = False) -> Int8Source:
        if scratch:
            fp32 = export_onnx(model, job.example, job.work / self.name / "shifted_fp32.onnx", num_classes=job.num_classes,
                               metadata=job.metadata)
        else:
            fp32 = self.export_float(model, job)
        return OnnxInt8Source(fp32, job)
