"""LiteRT (.tflite) runner: ai_edge_litert, else tflite_runtime, else tensorflow.lite (only then).

Numpy and the interpreter only: no torch, and tensorflow only when nothing else exists.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError
from toolchain.runtimes.base import (
    LAYOUTS,
    Runner,
    check_artifact_file,
    dequantize_output,
    guess_layout,
    precision_from_counts,
    quantize_input,
    read_sidecar,
)


def interpreter_class() -> tuple[type, str]:
    """(Interpreter class, "package version") from the first LiteRT interpreter that imports."""
    from importlib import metadata

    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, f"tflite-runtime {metadata.version('tflite-runtime')}"
    except ImportError:
        pass
    try:
        import tensorflow as tf  # last resort: heavy, and only when nothing else is installed

        return tf.lite.Interpreter, f"tensorflow {tf.__version__}"
    except ImportError:
        raise UserError(
            "no LiteRT interpreter installed: pip install ai-edge-litert (or tflite-runtime on numpy<2)"
        ) from None


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


class LiteRTRunner(Runner):
    def __init__(self, path: str | Path, threads: int = 1, layout: str | None = None):
        self.path = check_artifact_file(path, (".tflite",))
        self._cls, self.runtime = interpreter_class()
        self.threads = max(1, int(threads))
        self._interp = self._new_interpreter()
        with _without_native_info():
            self._interp.allocate_tensors()
        ind, outd = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ind) != 1 or not outd:
            raise UserError(f"{self.path} has {len(ind)} inputs: cwtool runs single-input classifiers only")
        self._in, self._out = ind[0], outd[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.input_quant = tuple(self._in.get("quantization", (0.0, 0)))
        self.output_quant = tuple(self._out.get("quantization", (0.0, 0)))
        sig = self._in.get("shape_signature")
        self.dynamic_batch = sig is not None and len(sig) > 0 and int(sig[0]) == -1
        self.metadata = read_sidecar(self.path)
        meta_src = self.metadata
        self.layout_source = "argument" if layout else ("metadata" if meta_src.get("layout") else "guess")
        self.layout = (layout or meta_src.get("layout") or guess_layout(self.input_shape)).upper()
        if self.layout not in LAYOUTS:
            raise UserError(f"unknown layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")
        n = self.metadata.get("num_classes")
        self.num_classes = int(n) if n else int(self._out["shape"][-1])
        self._batched = None  # interpreter resized to a batch > 1, once known to work
        self._batched_ok: bool | None = True if self.dynamic_batch else None
        self._batched_n = 0

    def _new_interpreter(self):
        try:
            with _without_native_info():
                return self._cls(model_path=str(self.path), num_threads=self.threads)
        except Exception as e:  # ValueError for a file that is not a flatbuffer model
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"cannot load TFLite artifact {self.path}: {msg[:200]}; re-export it") from e

    # -- one invocation on an allocated interpreter ----------------------------------------
    def _invoke(self, interp, x: np.ndarray) -> np.ndarray:
        if self.input_dtype.kind in "iu":
            x = quantize_input(x, self.input_dtype, self.input_quant[0], int(self.input_quant[1]))
        else:
            x = x.astype(self.input_dtype, copy=False)
        interp.set_tensor(self._in["index"], x)
        interp.invoke()
        y = interp.get_tensor(self._out["index"])
        if self.output_dtype.kind in "iu":
            return dequantize_output(y, self.output_quant[0], int(self.output_quant[1]))
        return y.astype(np.float32).copy()

    def bound_call(self, x: np.ndarray):
        """set_tensor + invoke + get_tensor on an input quantized once (no numpy work per call)."""
        prepared = self._to_artifact_layout(self._check(x))[:1]
        if self.input_dtype.kind in "iu":
            prepared = quantize_input(prepared, self.input_dtype, self.input_quant[0], int(self.input_quant[1]))
        prepared = np.ascontiguousarray(prepared, dtype=self.input_dtype)
        interp, i, o = self._interp, self._in["index"], self._out["index"]

        def call():
            interp.set_tensor(i, prepared)
            interp.invoke()
            return interp.get_tensor(o)

        return call

    def _run_single(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._invoke(self._interp, x[i : i + 1]) for i in range(len(x))], axis=0)

    def _run_batched(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self._batched is None:
            self._batched = self._new_interpreter()
            self._batched_n = 0
        if self._batched_n != n:
            self._batched.resize_tensor_input(self._in["index"], [n, *self.input_shape[1:]])
            with _without_native_info():
                self._batched.allocate_tensors()
            self._batched_n = n
        return self._invoke(self._batched, x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 1 or self._batched_ok is False:
            return self._run_single(x)
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


def litert_artifact_info(path: str | Path) -> dict[str, Any]:
    runner = LiteRTRunner(path)
    counts: Counter = Counter()
    for d in runner._interp.get_tensor_details():
        counts[np.dtype(d["dtype"]).name] += int(np.prod(d["shape"])) if len(d["shape"]) else 1
    return {
        "format": "tflite",
        "bytes": Path(path).stat().st_size,
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
