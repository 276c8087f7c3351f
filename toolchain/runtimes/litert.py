"""LiteRT (.tflite) runner: ai_edge_litert, else tflite_runtime, else tensorflow.lite (only then).

Numpy and the interpreter only: no torch, and tensorflow only when nothing else exists.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import IMPORT_FAILURES, InputCountError, UserError, import_failed, is_not_installed
from toolchain.runtimes.base import (
    a_or_an,
    MAX_TENSOR_BYTES,
    Runner,
    check_artifact_file,
    check_io_shape,
    check_tensor_bytes,
    check_threads,
    dequantize_output,
    explicit_layout,
    guess_layout,
    metadata_layout,
    precision_from_counts,
    quantize_input,
    read_sidecar,
    resolve_num_classes,
    runtime_errors,
    runtime_failure,
    short_error,
    sidecar_path,
)
from toolchain.runtimes.graph import check_work
from toolchain.runtimes.load_probe import probed_content
from toolchain.runtimes.parts import artifact_size


def interpreter_class() -> tuple[type, str]:
    """(Interpreter class, "package version") from the first LiteRT interpreter that imports; a stop waits for the
    imports (one raised inside a native library's initialisation aborts the process)."""
    from toolchain import interrupts

    with interrupts.uninterrupted_import():
        return _interpreter_class()


def _interpreter_class() -> tuple[type, str]:
    from importlib import metadata

    failures = []  # (module, package, install, exception): said at the end if none imports
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except IMPORT_FAILURES as e:
        failures.append(("ai_edge_litert", "ai-edge-litert", "pip install ai-edge-litert, or tflite-runtime on numpy<2", e))
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, f"tflite-runtime {metadata.version('tflite-runtime')}"
    except IMPORT_FAILURES as e:
        failures.append(("tflite_runtime", "tflite-runtime", "pip install tflite-runtime, or ai-edge-litert", e))
    try:
        import tensorflow as tf  # last resort: heavy, and only when nothing else is installed

        return tf.lite.Interpreter, f"tensorflow {tf.__version__}"
    except IMPORT_FAILURES:
        pass
    # an interpreter that is installed but fails to load says why; else the first choice is named as missing
    module, package, install, exc = next((f for f in failures if not is_not_installed(f[3], f[0])), failures[0])
    raise import_failed(exc, module, package, install) from None


_STDERR_LOCK = threading.Lock()


@contextmanager
def _without_native_info():
    """LiteRT's C++ side writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to the
    process's stderr for every interpreter, in the middle of tables and before error lines. Catch
    native stderr while an interpreter is built or allocated; pass on everything but INFO lines.
    Where stderr is closed, or another thread holds the redirection, it runs unfiltered."""
    if sys.stderr is None or not _STDERR_LOCK.acquire(blocking=False):
        yield
        return
    try:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # fd 2 closed: nothing to filter
            saved = None
        if saved is None:
            yield
            return
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                for line in caught.read().decode("utf-8", "replace").splitlines():
                    if not line.startswith("INFO: "):
                        print(line, file=sys.stderr)
    finally:
        _STDERR_LOCK.release()


def tensor_sizes(details) -> tuple[Counter, int]:
    """(elements per dtype name, total bytes) of LiteRT tensor details; a detail that names no dtype or
    shape numpy understands is skipped (it is counted by nothing cwtool runs)."""
    counts: Counter = Counter()
    total = 0
    for d in details:
        try:
            dtype = np.dtype(d["dtype"])
            n = math.prod(max(0, int(s)) for s in d["shape"])
        except (KeyError, TypeError, ValueError):
            continue
        counts[dtype.name] += n
        total += n * dtype.itemsize
    return counts, total


# The inputs that set an operator's output size from their values at run time: the 2 GiB check reads declared shapes,
# so a size computed inside the graph (SHAPE, MUL, then FILL of 3 GB) must be a constant of the file. Control flow runs
# graphs of its own, for as long as they say.
SIZED_BY_VALUES = {"FILL": (0,), "RANGE": (0, 1, 2), "BROADCAST_TO": (1,), "TILE": (1,), "ONE_HOT": (1,), "PAD": (1,),
                   "PADV2": (1,), "MIRROR_PAD": (1,), "RESIZE_BILINEAR": (1,), "RESIZE_NEAREST_NEIGHBOR": (1,),
                   "RESHAPE": (1,), "SCATTER_ND": (2,), "SPARSE_TO_DENSE": (1,), "TRANSPOSE_CONV": (0,),
                   "UNSORTED_SEGMENT_SUM": (2,), "UNSORTED_SEGMENT_PROD": (2,), "UNSORTED_SEGMENT_MAX": (2,),
                   "UNSORTED_SEGMENT_MIN": (2,), "RANDOM_STANDARD_NORMAL": (0,), "RANDOM_UNIFORM": (0,), "MULTINOMIAL": (1,),
                   "SPACE_TO_BATCH_ND": (1, 2), "BATCH_TO_SPACE_ND": (1, 2)}
CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE", "CALL", "STABLEHLO_COMPOSITE", "STABLEHLO_WHILE", "STABLEHLO_CASE")  # run other subgraphs


def layer_macs(name: str, ins: list[int], out_n: int, shapes: dict) -> int:
    """Multiply-accumulates of one CONV_2D, CONV_3D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV, BATCH_MATMUL or
    sequence LSTM/RNN operator making ``out_n`` elements (0 for others); ``shapes``: {tensor index: its dims}."""
    w = [int(d) for d in shapes.get(ins[1], [])] if len(ins) > 1 else []
    if name == "CONV_2D" and len(w) == 4:  # weights (O, kh, kw, I)
        return out_n * w[1] * w[2] * w[3]
    if name == "CONV_3D" and len(w) == 5:  # weights (kd, kh, kw, I, O)
        return out_n * w[0] * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D" and len(w) == 4:  # weights (1, kh, kw, O)
        return out_n * w[1] * w[2]
    if name == "FULLY_CONNECTED" and len(w) == 2:  # weights (O, I)
        return out_n * w[1]
    if name == "TRANSPOSE_CONV" and len(ins) >= 3 and len(w) == 4 and ins[2] in shapes:
        return math.prod(max(1, int(d)) for d in shapes[ins[2]]) * w[0] * w[1] * w[2]
    if "SEQUENCE_LSTM" in name or "SEQUENCE_RNN" in name:  # every step of every row, times its weight matrices
        x = [int(d) for d in shapes.get(ins[0], [])] if ins else []
        rows = x[0] * x[1] if len(x) == 3 else x[0] if x else 0
        return rows * sum(math.prod(int(d) for d in shapes[i]) for i in ins[1:] if len(shapes.get(i, [])) == 2)
    if name == "BATCH_MATMUL" and ins and len(shapes.get(ins[0], [])) >= 2:  # whichever side is summed (adjoint or not)
        a = [int(d) for d in shapes[ins[0]]]
        return out_n * max(a[-1], a[-2])
    return 0


def operations(ops: list, shapes: dict) -> int:
    """Operations one call asks for (runtimes/graph.py, MAX_WORK): per operator its multiply-accumulates, or the
    elements it makes or reads, whichever are more."""
    def elements(i: int) -> int:
        return math.prod(max(0, int(d)) for d in shapes[i]) if i in shapes else 0

    total = 0
    for op in ops:
        ins, outs = [int(i) for i in op["inputs"] if int(i) >= 0], [int(o) for o in op["outputs"]]
        made = sum(elements(o) for o in outs)
        total += max(layer_macs(str(op["op_name"]), ins, made, shapes), made, sum(elements(i) for i in ins))
    return int(total)


def check_bounded(interp, path: Path) -> None:
    """Refuse, before anything is allocated, what the declared shapes cannot bound: control flow, and an operator whose
    output size is read from a tensor the graph computes (or takes as its input). An interpreter that lists no
    operators (tflite-runtime) runs the file as it is."""
    if not hasattr(interp, "_get_ops_details"):
        return
    with runtime_errors(path, "read the operators of"):
        ops = interp._get_ops_details()
        graph_inputs = {int(d["index"]) for d in interp.get_input_details()}
    computed = {int(o) for op in ops for o in op["outputs"]} | graph_inputs
    for op in ops:
        name = str(op["op_name"])
        if name in CONTROL_FLOW:
            raise UserError(f"{path} holds {a_or_an(name)} operator, control flow with a graph of its own: cwtool runs classifiers "
                            "without control flow, whose memory and time it can bound before they run; re-export it")
        ins = [int(i) for i in op["inputs"]]
        if any(k < len(ins) and ins[k] in computed for k in SIZED_BY_VALUES.get(name, ())):
            raise UserError(f"{path} holds {a_or_an(name)} operator whose output size is computed at run time: cwtool cannot "
                            "bound its memory before it runs; re-export it with static shapes")


class LiteRTRunner(Runner):
    def __init__(self, path: str | Path, threads: int = 1, layout: str | None = None):
        self.path = check_artifact_file(path, (".tflite",))
        self.threads = check_threads(threads)
        self._cls, self.runtime = interpreter_class()
        self._content = probed_content(self.path, self._cls)  # a file that crashes the runtime is refused before this
        # process loads it; the bytes probed are the bytes loaded, however often
        self._interp = self._new_interpreter()
        with runtime_errors(self.path, "read the tensors of"):
            details = self._interp.get_tensor_details()
            ind, outd = self._interp.get_input_details(), self._interp.get_output_details()
        # Shapes come from the file: check them before allocate_tensors, which memsets whatever they ask for.
        self.tensor_bytes = tensor_sizes(details)[1]
        check_tensor_bytes(self.tensor_bytes, self.path)
        check_bounded(self._interp, self.path)
        if len(ind) != 1 or not outd:
            raise InputCountError(self.path, len(ind))
        self._in, self._out = ind[0], outd[0]
        check_io_shape(self._in["shape"], "input", self.path)
        check_io_shape(self._out["shape"], "output", self.path)
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        if self.input_dtype.kind not in "fiu" or self.output_dtype.kind not in "fiu":
            raise UserError(f"{self.path} maps {self.input_dtype} to {self.output_dtype}: cwtool runs classifiers with "
                            "numeric input and output tensors; re-export it")
        self.input_quant = tuple(self._in.get("quantization", (0.0, 0)))
        self.output_quant = tuple(self._out.get("quantization", (0.0, 0)))
        for what, dtype, (scale, _) in (("input", self.input_dtype, self.input_quant), ("output", self.output_dtype, self.output_quant)):
            if dtype.kind in "iu" and not (math.isfinite(scale) and scale >= 0 and (scale > 0 or what == "output")):
                raise UserError(f"{self.path} has an integer {what} with quantization scale {scale}: the file is corrupt; re-export it")
        with _without_native_info(), runtime_errors(self.path, "allocate the tensors of"):
            self._interp.allocate_tensors()
            allocated = self._interp.get_tensor_details()
        # The shapes a file declares are claims: preparing the operators sizes their outputs as their constant inputs say
        # (a FILL of constant dims [750M] declared [1] made 3 GB). Counted again, the file is refused before it runs.
        self.tensor_bytes = tensor_sizes(allocated)[1]  # what a batch is judged by (_run): the sizes as allocated
        check_tensor_bytes(self.tensor_bytes, self.path, "its tensors as allocated")
        if hasattr(self._interp, "_get_ops_details"):  # (tflite-runtime lists no operators: its files run as they are)
            with runtime_errors(self.path, "read the operators of"):
                ops = self._interp._get_ops_details()
            rows = max(1, int(self._in["shape"][0])) if len(self._in["shape"]) else 1  # judged a row, as an ONNX file
            check_work(operations(ops, {int(d["index"]): list(d["shape"]) for d in allocated}) // rows, self.path)
        sig = self._in.get("shape_signature")
        self.dynamic_batch = sig is not None and len(sig) > 0 and int(sig[0]) == -1
        self.metadata = read_sidecar(self.path)
        source = f"sidecar {sidecar_path(self.path)}"
        meta_layout = None if layout else metadata_layout(self.metadata.get("layout"), source)
        self.layout_source = "argument" if layout else ("metadata" if meta_layout else "guess")
        self.layout = explicit_layout(layout) if layout else (meta_layout or guess_layout(self.input_shape))
        out_shape = [int(d) for d in self._out["shape"]]
        self.num_classes = resolve_num_classes(self.metadata.get("num_classes"), out_shape[-1], self.path, source)
        self._batched = None  # interpreter resized to a batch > 1, once known to work
        self._batched_ok: bool | None = True if self.dynamic_batch else None
        self._batched_n = 0

    def _new_interpreter(self):
        try:
            with _without_native_info():
                return self._cls(model_content=self._content, num_threads=self.threads)
        except Exception as e:  # ValueError for a file that is not a flatbuffer model
            raise UserError(f"cannot load TFLite artifact {self.path}: {short_error(e)}; re-export it") from e

    # -- one invocation on an allocated interpreter ----------------------------------------
    def _invoke(self, interp, x: np.ndarray) -> np.ndarray:
        if self.input_dtype.kind in "iu":
            x = quantize_input(x, self.input_dtype, self.input_quant[0], int(self.input_quant[1]))
        else:
            x = x.astype(self.input_dtype, copy=False)
        try:  # inline, not runtime_errors(): this runs once per row where the graph takes batch 1 only
            interp.set_tensor(self._in["index"], x)
            interp.invoke()
            y = interp.get_tensor(self._out["index"])
        except Exception as exc:  # noqa: BLE001 - the runtime's own failure on this file
            raise runtime_failure(self.path, "run", exc) from exc
        if self.output_dtype.kind in "iu":
            return dequantize_output(y, self.output_quant[0], int(self.output_quant[1]))
        return y.astype(np.float32).copy()

    def bound_call(self, x: np.ndarray):
        """set_tensor + invoke + get_tensor on an input quantized once (no numpy work per call)."""
        prepared = self._to_artifact_layout(self._check(x))[:1]
        if self.input_dtype.kind in "iu":
            prepared = quantize_input(prepared, self.input_dtype, self.input_quant[0], int(self.input_quant[1]))
        prepared = np.ascontiguousarray(prepared, dtype=self.input_dtype)
        interp, i, o, path = self._interp, self._in["index"], self._out["index"], self.path

        def call():
            try:  # no context manager here: this is the timed call (a try costs nothing in Python 3.11)
                interp.set_tensor(i, prepared)
                interp.invoke()
                return interp.get_tensor(o)
            except Exception as exc:  # noqa: BLE001 - the runtime's own failure on this file
                raise runtime_failure(path, "run", exc) from exc

        return call

    def _run_single(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._invoke(self._interp, x[i : i + 1]) for i in range(len(x))], axis=0)

    def _run_batched(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self._batched is None:
            self._batched = self._new_interpreter()
            self._batched_n = 0
        if self._batched_n != n:
            with _without_native_info(), runtime_errors(self.path, f"resize to a batch of {n}"):
                self._batched.resize_tensor_input(self._in["index"], [n, *self.input_shape[1:]])
                self._batched.allocate_tensors()
            self._batched_n = n
        return self._invoke(self._batched, x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 1 or self._batched_ok is False or self.tensor_bytes * len(x) > MAX_TENSOR_BYTES:
            return self._run_single(x)  # a batch that would take more memory than the bound runs row by row
        if self._batched_ok is None:
            # A static batch-1 model may or may not survive a resize (a hard-coded reshape breaks it,
            # sometimes silently): try once, compare with batch-1 results, and remember the verdict.
            try:
                y = self._run_batched(x)
                ref = self._run_single(x[:8])
                tol = 1e-4 + 1e-3 * float(np.abs(ref).max())
                if self.output_dtype.kind in "iu":
                    tol = max(tol, 2.0 * float(self.output_quant[0] or 0))
                self._batched_ok = y.shape[0] == len(x) and bool(np.allclose(y[:8], ref, atol=tol, rtol=0))
            except Exception:
                self._batched_ok = False
            if not self._batched_ok:
                self._batched = None
                return self._run_single(x)
            return y
        return self._run_batched(x)

    @property
    def batched(self) -> bool | None:
        """True once batched invocation is verified, False when the model only runs batch 1."""
        return self._batched_ok


def litert_artifact_info(path: str | Path, runner: LiteRTRunner | None = None) -> dict[str, Any]:
    runner = runner if runner is not None else LiteRTRunner(path)
    with runtime_errors(runner.path, "read the tensors of"):
        details = runner._interp.get_tensor_details()  # after allocation: the shapes the kernels settled on
    counts = tensor_sizes(details)[0]
    return {
        "format": "tflite",
        **artifact_size(path),  # bytes: the model file and its external data, one artifact
        "precision": precision_from_counts(counts),
        "input_shape": list(runner.input_shape),
        "input_dtype": runner.input_dtype.name,
        "input_quantization": list(runner.input_quant),
        "output_shape": [int(d) for d in runner._out["shape"]],
        "output_dtype": runner.output_dtype.name,
        "output_quantization": list(runner.output_quant),
        "layout": runner.layout,
        "num_classes": runner.num_classes,
        "tensor_elements": dict(counts),
        "metadata": runner.metadata,
    }
