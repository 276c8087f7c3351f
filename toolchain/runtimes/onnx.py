"""onnxruntime runner. Imports onnxruntime and numpy only (the `onnx` package is optional, for artifact_info)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError
from toolchain.runtimes.base import (
    LAYOUTS,
    Runner,
    check_artifact_file,
    guess_layout,
    precision_from_counts,
    read_sidecar,
)

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the device
        raise UserError("onnxruntime is not installed: pip install onnxruntime (or cwtool[onnx])") from e
    return onnxruntime


def _dims(shape) -> tuple:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


class OnnxRunner(Runner):
    def __init__(self, path: str | Path, threads: int = 1, layout: str | None = None):
        ort = _ort()
        self.path = check_artifact_file(path, (".onnx",))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # InvalidProtobuf, Fail, NotImplemented...
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"cannot load ONNX artifact {self.path}: {msg[:200]}; re-export it") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{self.path} has {len(inputs)} inputs: cwtool runs single-input classifiers only")
        self._in, self._out = inputs[0], outputs[0]
        self.input_shape = _dims(self._in.shape)
        self.input_dtype = np.dtype(_ORT_TYPES.get(self._in.type, np.float32))
        self.output_dtype = np.dtype(_ORT_TYPES.get(self._out.type, np.float32))
        if self.input_dtype.kind != "f":
            raise UserError(f"{self.path} takes {self._in.type} input: export with float input (QDQ keeps float I/O)")
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        meta = {**read_sidecar(self.path), **self.metadata}
        meta_src = meta
        self.layout_source = "argument" if layout else ("metadata" if meta_src.get("layout") else "guess")
        self.layout = (layout or meta_src.get("layout") or guess_layout(self.input_shape)).upper()
        if self.layout not in LAYOUTS:
            raise UserError(f"unknown layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")
        out_shape = _dims(self._out.shape)
        n = meta.get("num_classes")
        self.num_classes = int(n) if n not in (None, "") else (out_shape[-1] if out_shape and out_shape[-1] > 0 else None)
        self.runtime = f"onnxruntime {ort.__version__}"
        self.static_batch = self.input_shape[0] if self.input_shape and self.input_shape[0] > 0 else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(self.input_dtype, copy=False)
        b = self.static_batch
        if b is None or len(x) == b:
            return self.session.run([self._out.name], {self._in.name: x})[0]
        outs = []
        for start in range(0, len(x), b):
            chunk = x[start : start + b]
            n = len(chunk)
            if n < b:  # pad the last chunk of a static-batch model
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)], axis=0)
            outs.append(self.session.run([self._out.name], {self._in.name: chunk})[0][:n])
        return np.concatenate(outs, axis=0)

    def bound_call(self, x: np.ndarray):
        """io_binding: the input is an OrtValue made once, the output is bound by name."""
        ort = _ort()
        prepared = np.ascontiguousarray(self._to_artifact_layout(self._check(x)), dtype=self.input_dtype)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self._in.name, ort.OrtValue.ortvalue_from_numpy(prepared))
        binding.bind_output(self._out.name)
        session = self.session

        def call():
            session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]

        return call


def onnx_artifact_info(path: str | Path) -> dict[str, Any]:
    runner = OnnxRunner(path)
    info: dict[str, Any] = {
        "format": "onnx",
        "bytes": Path(path).stat().st_size,
        "input_shape": list(runner.input_shape),
        "input_dtype": runner.input_dtype.name,
        "output_shape": list(_dims(runner._out.shape)),
        "output_dtype": runner.output_dtype.name,
        "layout": runner.layout,
        "num_classes": runner.num_classes,
        "metadata": runner.metadata,
    }
    counts: Counter = Counter()
    try:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        int8_max = None
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            counts[arr.dtype.name] += int(arr.size)
            if arr.dtype == np.int8 and arr.ndim >= 2 and arr.size:  # weights, not zero points
                int8_max = max(int8_max or 0, int(np.abs(arr.astype(np.int16)).max()))
        info["weight_elements"] = dict(counts)
        info["precision"] = precision_from_counts(counts)
        info["int8_weight_max"] = int8_max
    except ImportError:  # on a device without the onnx package: trust what the exporter wrote
        info["precision"] = runner.metadata.get("precision", "unknown")
        # files from before 7-bit weights, or from other tools, say nothing: assume the full range
        bits = runner.metadata.get("quant_weight_bits") or ("8" if info["precision"] == "int8" else "")
        info["int8_weight_max"] = {"7": 64, "8": 127}.get(bits)
    return info
