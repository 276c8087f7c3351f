"""The contract of a host-side format backend: what the export stage asks of ONNX and TFLite alike.

A backend writes a run's float artifact and prepares int8 builds. int8 goes through an Int8Source:
one float model made ready to quantize (ONNX: its fp32 file; TFLite: the torch model), which lists
the units a float fallback may keep in float and builds int8 files with any of them kept float. The
units are each format's own names (ONNX: pre-processed node names; TFLite: torch submodule names).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class ExportJob:
    """What every export of one run shares."""

    example: Any  # torch tensor: one input row in the dataset layout
    num_classes: int
    layout: str  # the TFLite input layout, "NCHW" or "NHWC" (ONNX files stay NCHW)
    calibration_x: np.ndarray | None  # float32 training rows for int8 calibration (None: no int8 file asked)
    calibration_method: str  # ONNX int8: "minmax" | "entropy" | "percentile"
    out: Path  # the run's artifacts/ folder
    work: Path  # scratch for int8 candidates; the stage removes it
    metadata: dict = field(default_factory=dict)  # recorded in every file (ONNX metadata_props, TFLite sidecar): the preprocessing
    written: set = field(default_factory=set)  # the files this export wrote (a file left by an earlier run is never reused)


class Int8Source(abc.ABC):
    """One float model, ready to be quantized again and again (the FN-aware fallback builds many)."""

    @abc.abstractmethod
    def quantizable_units(self) -> list[str]:
        """Names of the Conv/Gemm/MatMul (Linear) units, in graph order: what ``build`` may keep float."""

    @abc.abstractmethod
    def thin_input_units(self, max_channels: int = 4) -> list[str]:
        """Convs that read the graph input with at most ``max_channels`` channels (an image stem):
        int8 kernels run those slower than float ones, and they hold a few hundred weights."""

    @abc.abstractmethod
    def build(self, float_units: Sequence[str], dest: Path) -> Path:
        """An int8 file at ``dest`` calibrated on the job's rows, with ``float_units`` kept in float."""


class ExportBackend(abc.ABC):
    name: str  # the format, as report.json and target profiles name it
    needs: tuple[str, str]  # (module to import, pip package) the backend's converter needs

    @abc.abstractmethod
    def artifact_path(self, job: ExportJob, precision: str) -> Path:
        """Where the run's artifact of this precision lands."""

    @abc.abstractmethod
    def export_float(self, model, job: ExportJob, precision: str = "fp32") -> Path:
        """The run's float artifact of ``model``; returns its path."""

    @abc.abstractmethod
    def int8_source(self, model, job: ExportJob, *, scratch: bool = False) -> Int8Source:
        """``model`` ready to quantize. scratch: the model is a throwaway variant (an offset baked into a
        copy), so whatever is written for it goes under job.work, never among the artifacts."""
