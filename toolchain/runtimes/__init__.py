"""numpy-in/numpy-out runners for exported artifacts: onnxruntime (.onnx) and LiteRT (.tflite), and what
can be read from a file without running it (artifact_info, describe_graph).

No torch and no tensorflow imports here (tensorflow.lite only as the last-resort interpreter):
`cwtool verify` runs these on a device with numpy and one runtime. Each format is one DeviceFormat
in runtimes/formats.py, picked by the file's suffix.

    runner = load_runner("model.tflite", threads=1)
    logits = runner.predict(x)            # x float32 in the dataset layout (NCHW images or NC features)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.runtimes.base import Runner, check_artifact_file, read_sidecar, sidecar_path
from toolchain.runtimes.formats import DEVICE_FORMATS, SUFFIXES, DeviceFormat, device_format

__all__ = ["Runner", "load_runner", "artifact_info", "describe_graph", "device_format", "sidecar_path", "read_sidecar",
           "DeviceFormat", "DEVICE_FORMATS", "FORMATS"]

FORMATS = {f.suffix: f.name for f in DEVICE_FORMATS.values()}  # suffix -> format name


def load_runner(path: str | Path, threads: int = 1, layout: str | None = None) -> Runner:
    """A Runner for an .onnx or .tflite file (picked by extension).

    layout overrides the artifact's own input layout ("NCHW", "NHWC", "NC"); by default it comes from
    the ONNX metadata_props or the ``<artifact>.json`` sidecar, else is inferred from the input shape.
    """
    from toolchain.runtimes.parts import check_parts_unchanged, parts_identity

    path = Path(path)
    fmt = device_format(path)
    before = parts_identity(path) if path.is_file() else None  # (a missing file: said by the runner in its words)
    runner = fmt.runner(path, threads=threads, layout=layout)
    check_parts_unchanged(path, before)  # the checks, the probe and the load were all of one file
    runner.parts_identity = before
    return runner


def artifact_info(path: str | Path, runner: Runner | None = None) -> dict[str, Any]:
    """format, precision (guessed from the weights), bytes, input/output shapes and dtypes, layout.

    ``runner``: a Runner already loaded from ``path`` (``load_runner(path)``), so the file is not loaded
    a second time (on a small device loading is most of a short verify)."""
    path = Path(path)
    return device_format(path).artifact_info(path, runner)


def describe_graph(path: str | Path) -> dict[str, Any]:
    """Operators used (in graph order), MACs per sample (Conv/Gemm/MatMul/FC only), weight bytes and
    the peak of live activation bytes at batch 1, plus "format" (runtimes/graph.py). ``ops`` is None
    when nothing here can read them."""
    path = check_artifact_file(path, SUFFIXES)
    fmt = device_format(path)
    return {**fmt.describe_graph(path), "format": fmt.name}
