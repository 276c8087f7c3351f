"""The runner contract shared by every runtime: numpy in (dataset layout), float32 logits out.

No torch and no tensorflow here: this runs on a device that has numpy and one runtime.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError

LAYOUTS = ("NCHW", "NHWC", "NC")


def sidecar_path(path: str | Path) -> Path:
    """Where an artifact's sidecar JSON lives (``model.tflite`` -> ``model.tflite.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The artifact's sidecar metadata, or {} when there is none or it is unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_artifact_file(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact {path} does not exist: check the path")
    if not path.is_file():
        raise UserError(f"artifact {path} is not a file: pass an .onnx or .tflite file")
    if path.suffix.lower() not in suffixes:
        raise UserError(f"artifact {path} has an unsupported extension: use one of {', '.join(suffixes)}")
    if path.stat().st_size == 0:
        raise UserError(f"artifact {path} is empty: re-export it")
    return path


def guess_layout(shape: tuple[int, ...]) -> str:
    """Layout from an input shape alone (the last resort when there is no metadata)."""
    if len(shape) == 2:
        return "NC"
    if len(shape) == 4:
        c_first, c_last = shape[1], shape[3]
        if c_last in (1, 3, 4) and c_first not in (1, 3, 4):
            return "NHWC"
        return "NCHW"
    return "NC" if len(shape) < 4 else "NCHW"


def quantize_input(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """float32 -> int8/uint8 with the tensor's own (scale, zero point)."""
    info = np.iinfo(dtype)
    if not scale:
        raise UserError("the artifact's integer input carries no quantization scale: re-export it")
    q = np.round(x / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if not scale:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class Runner(abc.ABC):
    """Runs one exported artifact. Subclasses fill the attributes and implement ``_run``.

    Attributes:
        path: the artifact.
        runtime: e.g. "onnxruntime 1.32.0" or "ai-edge-litert 2.3.0".
        input_shape: the artifact's own input shape (batch dim first; -1/None when dynamic).
        input_dtype / output_dtype: numpy dtypes of the artifact's input and output tensors.
        layout: the artifact's input layout, "NCHW", "NHWC" or "NC".
        num_classes: width of the logits.
    """

    path: Path
    runtime: str
    input_shape: tuple
    input_dtype: np.dtype
    output_dtype: np.dtype
    layout: str
    num_classes: int | None

    # ---- what subclasses implement -------------------------------------------------------
    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:  # x already in the artifact's layout, float32
        """Logits for one chunk already in the artifact's layout."""

    def bound_call(self, x: np.ndarray):
        """A zero-argument callable that runs one inference on ``x`` (dataset layout) prepared once:
        layout, dtype and int8 input quantization are done here, not per call. Timing it measures
        what the runtime itself costs per call, as an application that keeps its buffers would see.
        Runtimes with a cheaper bound path (onnxruntime's io_binding) override this."""
        prepared = self._to_artifact_layout(self._check(x))
        return lambda: self._run(prepared)

    # ---- shared logic ---------------------------------------------------------------------
    def dataset_sample_shape(self) -> tuple:
        """The per-sample shape the runner expects from the caller (dataset layout, no batch)."""
        s = tuple(self.input_shape[1:])
        if self.layout == "NHWC" and len(s) == 3:
            return (s[2], s[0], s[1])
        return s

    def _to_artifact_layout(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC" and x.ndim == 4:
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return np.ascontiguousarray(x)

    def _fits(self, got: tuple) -> bool:
        want = self.dataset_sample_shape()
        return len(want) == len(got) and all(w == -1 or w == g for w, g in zip(want, got))

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        got = tuple(x.shape[1:])
        fits = self._fits(got)
        if not fits and getattr(self, "layout_source", "") == "guess" and self.layout in ("NCHW", "NHWC"):
            # No metadata said which layout the artifact has, and the guess does not fit the data:
            # the other image layout might (e.g. a 3x8x8 NHWC input looks channels-first).
            guessed = self.layout
            self.layout = "NHWC" if guessed == "NCHW" else "NCHW"
            fits = self._fits(got)
            if not fits:
                self.layout = guessed
        want = self.dataset_sample_shape()
        if x.ndim < 2 or not fits:
            layout = "NCHW" if self.layout == "NHWC" else self.layout
            raise UserError(
                f"data samples have shape {got} but {self.path.name} expects {want} ({layout}, dataset layout): "
                f"pass data that matches the model's input"
            )
        return x

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits (N, num_classes) float32 for x (N, ...) float32 in the dataset layout (NCHW or NC)."""
        x = self._check(x)
        if len(x) == 0:
            return np.zeros((0, self.num_classes or 0), np.float32)
        out = []
        for start in range(0, len(x), max(1, int(batch_size))):
            chunk = self._to_artifact_layout(x[start : start + batch_size])
            out.append(np.asarray(self._run(chunk), dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(out, axis=0)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "runtime": self.runtime,
            "input_shape": list(self.input_shape),
            "input_dtype": np.dtype(self.input_dtype).name,
            "output_dtype": np.dtype(self.output_dtype).name,
            "layout": self.layout,
            "num_classes": self.num_classes,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} {self.runtime} {self.layout} {self.input_shape}>"


def precision_from_counts(counts: dict[str, int]) -> str:
    """'int8' if any int8/uint8 tensor exists, else 'fp16' if any fp16 tensor exists, else 'fp32'.

    Float models carry no 8-bit tensors, and an int8 file stays an int8 file when some layers were kept
    in float (cwtool keeps a thin input conv and FN-critical layers so; on a small model they can hold
    most of the weights). fp16 TFLite files keep fp16 weights and dequantize them to fp32 at load time,
    so fp32 tensors of the same size exist beside them: any fp16 tensor at all means an fp16 file.
    """
    if counts.get("int8", 0) + counts.get("uint8", 0):
        return "int8"
    if counts.get("float16", 0):
        return "fp16"
    return "fp32"


def cpu_lacks_vnni(cpuinfo: str | Path = "/proc/cpuinfo", machine: str | None = None) -> bool:
    """True on an x86 CPU that reports no VNNI. There onnxruntime multiplies u8 x s8 pairs with
    VPMADDUBSW, whose 16-bit sums saturate on full-range int8 weights, so an int8 ONNX file with
    8-bit weights computes differently than on a VNNI x86 or an ARM CPU. False where it cannot
    tell (no /proc/cpuinfo) and on other architectures."""
    import platform

    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    return flags is not None and not {"avx512_vnni", "avx_vnni"} & set(flags)
