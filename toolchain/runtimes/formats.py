"""The device-side registry: one DeviceFormat per artifact format, found by file suffix or by name.

Numpy and the runtimes only (no torch, no tensorflow): the modules named here import onnxruntime,
onnx and the LiteRT interpreter inside their functions, when a file is actually run or read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from toolchain.errors import UserError
from toolchain.runtimes.base import Runner
from toolchain.runtimes.litert import LiteRTRunner, litert_artifact_info
from toolchain.runtimes.litert_graph import describe_tflite_graph
from toolchain.runtimes.onnx import OnnxRunner, onnx_artifact_info
from toolchain.runtimes.onnx_graph import describe_onnx_graph


@dataclass(frozen=True)
class DeviceFormat:
    """One artifact format as a device sees it: how to run and describe a file, and what a target
    profile may ask of it."""

    name: str  # report.json's "format" and a profile's `format`
    suffix: str  # the file extension that selects it
    runtime: str  # the runtime a profile names for it
    int8_schemes: tuple[str, ...]  # the int8 layouts cwtool writes in this format: all a profile's int8_scheme may ask
    layouts: tuple[str, ...]  # image input layouts its files can have; the first is the default
    runner: Callable[..., Runner]  # runner(path, threads=1, layout=None)
    artifact_info: Callable[..., dict[str, Any]]  # artifact_info(path, runner=None)
    describe_graph: Callable[[Path], dict[str, Any]]  # see runtimes/graph.py

    def export_layout(self, profile_layout: str) -> str:
        """The input layout a file of this format gets for a profile asking for ``profile_layout``."""
        return profile_layout if profile_layout in self.layouts else self.layouts[0]


DEVICE_FORMATS: dict[str, DeviceFormat] = {
    f.name: f
    for f in (
        # onnxruntime's CPU kernels take NCHW; the exporter keeps torch's layout
        DeviceFormat("onnx", ".onnx", "onnxruntime", ("qdq",), ("NCHW",),
                     OnnxRunner, onnx_artifact_info, describe_onnx_graph),
        # litert-torch can transpose the input in-graph (NHWC: TFLite's native layout)
        DeviceFormat("tflite", ".tflite", "litert", ("full-integer",), ("NCHW", "NHWC"),
                     LiteRTRunner, litert_artifact_info, describe_tflite_graph),
    )
}
SUFFIXES = tuple(f.suffix for f in DEVICE_FORMATS.values())


def device_format(path: str | Path) -> DeviceFormat:
    """The format of an artifact, by its file suffix; a UserError for any other file."""
    path = Path(path)
    suffix = path.suffix.lower()
    for fmt in DEVICE_FORMATS.values():
        if fmt.suffix == suffix:
            return fmt
    if path.is_dir():  # an export's artifacts/ folder: "unsupported artifact" blamed a suffix it does not have
        raise UserError(f"'{path}' is a folder: give the {' or '.join(SUFFIXES)} files in it (e.g. {path}/*.onnx)")
    raise UserError(f"unsupported artifact {path}: cwtool runs {' and '.join(SUFFIXES)} files")
