"""numpy-in/numpy-out runners for exported artifacts: onnxruntime (.onnx) and LiteRT (.tflite).

No torch and no tensorflow imports here (tensorflow.lite only as the last-resort interpreter):
`cwtool verify` runs these on a device with numpy and one runtime.

    runner = load_runner("model.tflite", threads=1)
    logits = runner.predict(x)            # x float32 in the dataset layout (NCHW images or NC features)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolchain.errors import UserError
from toolchain.runtimes.base import Runner, read_sidecar, sidecar_path

__all__ = ["Runner", "load_runner", "artifact_info", "sidecar_path", "read_sidecar", "FORMATS"]

FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"unsupported artifact {path}: cwtool runs .onnx and .tflite files")
    return fmt


def load_runner(path: str | Path, threads: int = 1, layout: str | None = None) -> Runner:
    """A Runner for an .onnx or .tflite file (picked by extension).

    layout overrides the artifact's own input layout ("NCHW", "NHWC", "NC"); by default it comes from
    the ONNX metadata_props or the ``<artifact>.json`` sidecar, else is inferred from the input shape.
    """
    path = Path(path)
    if _format(path) == "onnx":
        from toolchain.runtimes.onnx import OnnxRunner

        return OnnxRunner(path, threads=threads, layout=layout)
    from toolchain.runtimes.litert import LiteRTRunner

    return LiteRTRunner(path, threads=threads, layout=layout)


def artifact_info(path: str | Path, runner: Runner | None = None) -> dict[str, Any]:
    """format, precision (guessed from the weights), bytes, input/output shapes and dtypes, layout.

    ``runner``: a Runner already loaded from ``path`` (``load_runner(path)``), so the file is not loaded
    a second time (on a small device loading is most of a short verify)."""
    path = Path(path)
    if _format(path) == "onnx":
        from toolchain.runtimes.onnx import onnx_artifact_info

        return onnx_artifact_info(path, runner)
    from toolchain.runtimes.litert import litert_artifact_info

    return litert_artifact_info(path, runner)
