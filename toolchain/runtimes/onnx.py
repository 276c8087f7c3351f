"""onnxruntime runner. Imports onnxruntime and numpy only (the `onnx` package is optional, for artifact_info)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from toolchain import interrupts
from toolchain.errors import IMPORT_FAILURES, THREAD_REMEDY, InputCountError, UserError, import_failed, no_thread_left
from toolchain.runtimes.base import (
    Runner,
    check_artifact_file,
    model_source,
    check_tensor_bytes,
    check_threads,
    explicit_layout,
    guess_layout,
    metadata_layout,
    precision_from_counts,
    read_sidecar,
    resolve_num_classes,
    runtime_errors,
    runtime_failure,
    shape_bytes,
    short_error,
    sidecar_path,
)
from toolchain.runtimes.graph import check_work
from toolchain.limits import check_onnx_text
from toolchain.runtimes.parts import artifact_size

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
        with interrupts.uninterrupted_import():
            import onnxruntime
    except IMPORT_FAILURES as e:  # pragma: no cover - depends on the device
        raise import_failed(e, "onnxruntime", "onnxruntime", "pip install onnxruntime, or cwtool[onnx]") from e
    # Its own log would print (in colour) what cwtool turns into its one line: a failure raises, and is said once.
    onnxruntime.set_default_logger_severity(4)
    return onnxruntime


def _dims(shape) -> tuple:
    """Static dims as ints, symbolic or unknown ones as -1 (no shape at all: ())."""
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape or ())


def _check_shape(shape, what: str, path: Path) -> None:
    """A static 0 or negative dim (symbolic ones are fine) is a corrupt file."""
    if shape is not None and any(isinstance(d, int) and d <= 0 for d in shape):
        raise UserError(f"{path} has an {what} of shape {shape}: not a classifier's; the file is corrupt: re-export it")


def _check_not_tflite(path: Path) -> None:
    """A TFLite file named .onnx was "Protobuf parsing failed; re-export it": its header says what it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return  # the runtime says why it cannot be read
    if head[4:8] == b"TFL3":
        raise UserError(f"{path} is a TFLite file (its header says TFL3), named .onnx: rename it .tflite")


def _unfit_graph(path: Path) -> str | None:
    """Why a graph that onnxruntime would not load is no classifier's (no output, no input), where the onnx package can
    tell; else None (the runtime's own words follow)."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - not readable here either: the runtime's words say it
        return None
    weights = {i.name for i in graph.initializer}
    if not graph.output:
        return "declares no output"
    if not [i for i in graph.input if i.name not in weights]:
        return "declares no input"
    return None


class OnnxRunner(Runner):
    def __init__(self, path: str | Path, threads: int = 1, layout: str | None = None):
        ort = _ort()
        self.path = check_artifact_file(path, (".onnx",))
        _check_not_tflite(self.path)
        check_onnx_text(self.path)
        threads = check_threads(threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # see _ort
        self.session = self._session(ort, opts)
        # What the graph makes of its input is checked before anything runs (the runtime has read the file first: a
        # corrupt one is said as it finds it): a 3 KB file can Expand one image into gigabytes, or size a tensor from
        # values it computes (needs the onnx package; a device without it runs the file as it is).
        from toolchain.runtimes.onnx_graph import onnx_bounds

        bounds = onnx_bounds(self.path)
        if bounds is not None and bounds.peak:
            check_tensor_bytes(bounds.peak, self.path, "its activations at batch 1")
        if bounds is not None:
            check_work(bounds.work, self.path)
        self.row_bytes = bounds.peak if bounds is not None else 0
        self.one_row_a_call = bounds is not None and bounds.rows_mix
        with runtime_errors(self.path, "read the inputs and outputs of"):
            inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
            metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if len(inputs) != 1 or not outputs:
            raise InputCountError(self.path, len(inputs))
        self._in, self._out = inputs[0], outputs[0]
        _check_shape(self._in.shape, "input", self.path)
        _check_shape(self._out.shape, "output", self.path)
        if self._in.type not in _ORT_TYPES or self._out.type not in _ORT_TYPES:
            raise UserError(f"{self.path} maps {self._in.type} to {self._out.type}: cwtool runs classifiers with one "
                            "float input tensor and a numeric output tensor; re-export it")
        self.input_shape = _dims(self._in.shape)
        self.input_dtype = np.dtype(_ORT_TYPES[self._in.type])
        self.output_dtype = np.dtype(_ORT_TYPES[self._out.type])
        if self.input_dtype.kind != "f":
            raise UserError(f"{self.path} takes {self._in.type} input: export with float input (QDQ keeps float I/O)")
        # The runner pads a chunk to a static batch: an absurd static shape must not become an absurd array.
        check_tensor_bytes(shape_bytes([max(1, d) for d in self.input_shape], self.input_dtype.itemsize), self.path, "its input")
        self.metadata: dict[str, str] = {str(k): str(v) for k, v in metadata.items()}
        meta = {**read_sidecar(self.path), **self.metadata}  # the file's own metadata wins over a sidecar

        def source(key: str) -> str:
            return f"the metadata of {self.path}" if key in self.metadata else f"sidecar {sidecar_path(self.path)}"

        meta_layout = None if layout else metadata_layout(meta.get("layout"), source("layout"))
        self.layout_source = "argument" if layout else ("metadata" if meta_layout else "guess")
        self.layout = explicit_layout(layout) if layout else (meta_layout or guess_layout(self.input_shape))
        out_dims = _dims(self._out.shape)
        self.num_classes = resolve_num_classes(meta.get("num_classes"), out_dims[-1] if out_dims else None, self.path,
                                               source("num_classes"))
        self.runtime = f"onnxruntime {ort.__version__}"
        self.static_batch = self.input_shape[0] if self.input_shape and self.input_shape[0] > 0 else None

    def _session(self, ort, opts):
        try:
            source = model_source(self.path)
        except OSError as e:
            raise UserError(f"cannot read ONNX artifact {self.path}: {e.strerror or e}") from e
        try:
            # enable_fallback=0: on a failure onnxruntime's Python wrapper would otherwise print an "EP Error"
            # banner to stdout and load the file a second time (older versions ignore the keyword)
            return ort.InferenceSession(source.get("path") or source["content"], sess_options=opts,
                                        providers=["CPUExecutionProvider"], enable_fallback=0)
        except OSError as e:
            raise UserError(f"cannot read ONNX artifact {self.path}: {e.strerror or e}") from e
        except Exception as e:  # InvalidProtobuf, Fail, NotImplemented...
            if "content" in source:  # its weights in files beside it are found by the file's path, which the runtime cannot use
                raise UserError(f"cannot load ONNX artifact {self.path} ({short_error(e)}): its name has characters this "
                                "locale's file names encode otherwise than UTF-8; rename it, or run under a UTF-8 locale "
                                "(LC_ALL=C.UTF-8)") from e
            if no_thread_left(e):  # the process's limit, not the file: re-exporting it would not help
                raise UserError(f"cannot load ONNX artifact {self.path}: onnxruntime could not start its threads "
                                f"({' '.join(str(e).split())[-160:]}): {THREAD_REMEDY}"
                                + (", or give --threads 1" if opts.intra_op_num_threads > 1 else "")) from e
            unfit = _unfit_graph(self.path)  # what no classifier's graph lacks, said before the runtime's own words
            if unfit:
                raise UserError(f"{self.path} {unfit}: cwtool runs classifiers with one input and one output; re-export it") from e
            raise UserError(f"cannot load ONNX artifact {self.path}: {short_error(e)}; re-export it") from e

    def _session_run(self, x: np.ndarray):
        in_name, out_name = self._in.name, self._out.name
        options = _ort().RunOptions()
        options.log_severity_level = 4  # a run stopped by a signal is reported by cwtool, not logged by onnxruntime
        interrupts.stoppable(options)  # a signal can stop a run that would not end (a loop of 10**15 steps)
        try:
            with runtime_errors(self.path, "run"):
                return self.session.run([out_name], {in_name: x}, options)[0]
        finally:
            interrupts.done(options)

    def _run(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(self.input_dtype, copy=False)
        b = self.static_batch
        if b is None or len(x) == b:
            return self._session_run(x)
        outs = []
        for start in range(0, len(x), b):
            chunk = x[start : start + b]
            n = len(chunk)
            if n < b:  # pad the last chunk of a static-batch model
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)], axis=0)
            out = np.asarray(self._session_run(chunk))
            if out.ndim < 1 or len(out) != b:
                raise UserError(f"{self.path} returned an output of shape {out.shape} for a batch of {b}: "
                                "cwtool verifies classifiers with (N, classes) logits; re-export it")
            outs.append(out[:n])
        return np.concatenate(outs, axis=0)

    def bound_call(self, x: np.ndarray):
        """io_binding: the input is an OrtValue made once, the output is bound by name."""
        ort = _ort()
        prepared = np.ascontiguousarray(self._to_artifact_layout(self._check(x)), dtype=self.input_dtype)
        in_name, out_name = self._in.name, self._out.name
        with runtime_errors(self.path, "bind the input and output of"):
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(in_name, ort.OrtValue.ortvalue_from_numpy(prepared))
            binding.bind_output(out_name)
        session, path = self.session, self.path

        def call():
            try:  # no context manager here: this is the timed call (a try costs nothing in Python 3.11)
                session.run_with_iobinding(binding)
                return binding.copy_outputs_to_cpu()[0]
            except Exception as exc:  # noqa: BLE001 - the runtime's own failure on this file
                raise runtime_failure(path, "run", exc) from exc

        return call


def onnx_artifact_info(path: str | Path, runner: OnnxRunner | None = None) -> dict[str, Any]:
    runner = runner if runner is not None else OnnxRunner(path)
    info: dict[str, Any] = {
        "format": "onnx",
        **artifact_size(path),  # bytes: the model file and its external data, one artifact
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
    except ImportError:  # on a device without the onnx package: trust what the exporter wrote
        info["precision"] = runner.metadata.get("precision", "unknown")
        # files from before 7-bit weights, or from other tools, say nothing: assume the full range
        bits = runner.metadata.get("quant_weight_bits") or ("8" if info["precision"] == "int8" else "")
        info["int8_weight_max"] = {"7": 64, "8": 127}.get(bits)
        return info
    with runtime_errors(path, "read the weights of"):  # the onnx package may refuse what onnxruntime took
        # External data stays where it is: the file names it, and cwtool only counts weights here.
        model = onnx.load(str(path), load_external_data=False)
    int8_max = None
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            with runtime_errors(path, "read the weights of"):
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
            counts[dtype.name] += shape_bytes(init.dims, 1)
            continue
        with runtime_errors(path, "read the weights of"):
            arr = numpy_helper.to_array(init)
        counts[arr.dtype.name] += int(arr.size)
        if arr.dtype == np.int8 and arr.ndim >= 2 and arr.size:  # weights, not zero points
            int8_max = max(int8_max or 0, int(np.abs(arr.astype(np.int16)).max()))
    info["weight_elements"] = dict(counts)
    info["precision"] = precision_from_counts(counts)
    info["int8_weight_max"] = int8_max
    return info
