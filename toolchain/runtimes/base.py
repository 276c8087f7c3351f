"""The runner contract shared by every runtime: numpy in (dataset layout), float32 logits out.

No torch and no tensorflow here: this runs on a device that has numpy and one runtime.
"""

from __future__ import annotations

import abc
import json
import math
import operator
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from toolchain.data.samples import Samples, batch_rows
from toolchain.errors import UserError
from toolchain.input_paths import absent
from toolchain.limits import MAX_CLASSES  # a num_classes above cwtool's class limit is garbage, not a classifier

LAYOUTS = ("NCHW", "NHWC", "NC")

MAX_THREADS = 256  # --threads above this is a typo, not a machine
MAX_SIDECAR_BYTES = 64 << 20  # a sidecar is ~1 KB, megabytes where it names 45,000 CSV columns; export writes none larger
# The artifact's tensors together (at batch 1), and the static input of an ONNX file. Edge classifiers
# need a few MB; a mutated shape asks for many GB, and LiteRT memsets its arena before it says anything
# (a 17 GB tensor took 30 s and 17 GB of RAM): refuse before the runtime allocates.
MAX_TENSOR_BYTES = 2 << 30
CALL_BYTES = 512 << 20  # a file's activations in one call of many rows (the runtime's arena rounds up, the process adds its own)


def a_or_an(name: str) -> str:
    """An operator's name with its article, as a message says it ("an If", "a FILL")."""
    return f"{'an' if name[:1].upper() in 'AEIOU' else 'a'} {name}"


def check_threads(threads) -> int:
    """The runtime's thread count: a whole number in 1..MAX_THREADS, else a UserError."""
    try:
        n = operator.index(threads)
    except TypeError:
        raise UserError(f"--threads {threads!r}: give a whole number of threads (1 to {MAX_THREADS})") from None
    if not 1 <= n <= MAX_THREADS:
        raise UserError(f"--threads {n}: give between 1 and {MAX_THREADS} threads")
    return n


def short_error(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (native runtimes glue several messages together)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RuntimeFailure(UserError):
    """A runtime call that failed on an artifact: ``failed`` says which call and why ("run m.onnx: ..."), so that a caller
    that made the file itself (export) words it otherwise than "re-export it"."""

    def __init__(self, failed: str):
        super().__init__(f"the runtime failed to {failed}; the file is corrupt or unsupported: re-export it")
        self.failed = failed


def runtime_failure(path: str | Path, what: str, exc: BaseException) -> RuntimeFailure:
    """The UserError for a runtime call that failed on an artifact the runtime had loaded: such a file
    is corrupt or uses what this runtime cannot run; either way the user's file, not cwtool's bug."""
    return RuntimeFailure(f"{what} {path}: {short_error(exc)}")


@contextmanager
def runtime_errors(path: str | Path, what: str) -> Iterator[None]:
    """Wrap ONE native runtime call: whatever it raises becomes ``runtime_failure`` (exit 2).
    Only around the runtime's own calls -- cwtool's code around them must still fail loudly (exit 3)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime/LiteRT raise RuntimeError, ValueError, Fail, ...
        raise runtime_failure(path, what, exc) from exc


def metadata_layout(value, source: str) -> str | None:
    """A layout from untrusted metadata (sidecar JSON, ONNX metadata_props): None when absent or not a
    string (ignored: the layout is then inferred); a string that names no layout is a UserError."""
    if not isinstance(value, str) or not value.strip():
        return None
    layout = value.strip().upper()
    if layout not in LAYOUTS:
        raise UserError(f"{source} gives layout {value[:40]!r}, not one of {', '.join(LAYOUTS)}: fix it, or re-export the artifact")
    return layout


def explicit_layout(layout) -> str:
    """A layout the caller named (an argument or flag): one of LAYOUTS, any case."""
    text = str(layout).strip().upper()
    if text not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    return text


def metadata_num_classes(value) -> int | None:
    """num_classes from untrusted metadata: a whole number 1..MAX_CLASSES (an int, an integral float or
    a string of digits: ONNX metadata_props are strings); anything else is ignored (None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        n = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, int):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        n = int(value)
    else:
        n = None
    return n if n is not None and 1 <= n <= MAX_CLASSES else None


def resolve_num_classes(meta_value, out_width: int | None, path: Path, source: str) -> int | None:
    """The logits' width: the output shape's static width when it has one (metadata that contradicts it
    is a UserError), else the metadata's num_classes when valid, else None (found by a probe)."""
    n = metadata_num_classes(meta_value)
    if out_width == 1:
        raise UserError(f"{path} returns one value per row (an output of width 1), not one logit per class: cwtool verifies "
                        "classifiers by their (N, classes) logits; export the model without its argmax or threshold (a one-logit "
                        "binary model: with two)")
    if out_width is not None and out_width > 0:
        if n is not None and n != out_width:
            raise UserError(f"{source} says num_classes {n} but {path} outputs {out_width} logits: "
                            f"fix or delete {source}, or re-export the artifact")
        return int(out_width)
    return n


def check_io_shape(shape, what: str, path: Path) -> None:
    """A static input/output shape (LiteRT's) has rank >= 1 and every dim >= 1: a 0 or negative dim is a
    corrupt file, not a classifier."""
    dims = [int(d) for d in shape]
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"{path} has an {what} of shape {tuple(dims)}: not a classifier's; the file is corrupt: re-export it")


def check_tensor_bytes(nbytes: int, path: Path, what: str = "its tensors") -> None:
    if nbytes > MAX_TENSOR_BYTES:
        raise UserError(f"{path} asks for {nbytes / (1 << 30):.1f} GiB for {what} (cwtool allows "
                        f"{MAX_TENSOR_BYTES >> 30} GiB): the file is corrupt; re-export it")


def shape_bytes(shape, itemsize: int) -> int:
    """Bytes of a tensor of ``shape`` (negative dims count as 0; Python ints: no overflow)."""
    return math.prod(max(0, int(d)) for d in shape) * int(itemsize)


def sidecar_path(path: str | Path) -> Path:
    """Where an artifact's sidecar JSON lives (``model.tflite`` -> ``model.tflite.json``)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def model_source(path: Path) -> dict[str, Any]:
    """How a runtime is given the file at ``path``: ``{"path": str}``, or ``{"content": bytes}`` where the runtime (C++,
    which takes a path as UTF-8) would look for other bytes than the file system's name (a non-ASCII name under a locale
    whose file names are not UTF-8, such as a device image's ISO-8859-1): both runtimes said such a file did not exist."""
    import os

    text = str(path)
    try:
        if os.fsencode(text) == text.encode("utf-8"):
            return {"path": text}
    except UnicodeError:  # a name that is not UTF-8 at all (held as surrogate escapes)
        pass
    return {"content": Path(path).read_bytes()}


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The artifact's sidecar metadata, or {} when there is none or it is unreadable (a sidecar is a
    hint: untrusted, and its values are checked where they are used)."""
    from toolchain.small_files import read_small_file

    side = sidecar_path(path)
    try:
        data = json.loads(read_small_file(side, MAX_SIDECAR_BYTES, "sidecar", "").decode("utf-8"))
    except (OSError, ValueError, RecursionError, UserError):  # none, unreadable, too large, not UTF-8, not JSON, nested too deep
        return {}
    return data if isinstance(data, dict) else {}


def check_artifact_file(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact {path} {absent(path)}: check the path")
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
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f"the artifact's integer input has quantization scale {scale}: re-export it")
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
        parts_identity: the identity of the artifact's files when ``load_runner`` loaded it (None for a runner built
            otherwise): its sha256 is of these files only where they are still these.
    """

    path: Path
    runtime: str
    input_shape: tuple
    input_dtype: np.dtype
    output_dtype: np.dtype
    layout: str
    num_classes: int | None
    parts_identity: tuple | None = None

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
    def dataset_sample_shape(self, layout: str | None = None) -> tuple:
        """The per-sample shape the runner expects from the caller (dataset layout, no batch), with the file's input read
        in ``layout`` (default: its own)."""
        s = tuple(self.input_shape[1:])
        if (layout or self.layout) == "NHWC" and len(s) == 3:
            return (s[2], s[0], s[1])
        return s

    def _to_artifact_layout(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC" and x.ndim == 4:
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return np.ascontiguousarray(x)

    def _fits(self, got: tuple, layout: str | None = None) -> bool:
        want = self.dataset_sample_shape(layout)
        return len(want) == len(got) and all(w == -1 or w == g for w, g in zip(want, got))

    def check_input(self, x) -> None:
        """A UserError unless rows shaped like ``x``'s fit the file's input: read from the shape alone (rows read on
        demand are not decoded), so a wrong --resize is said before every image is."""
        self._check(x if isinstance(x, Samples) else np.empty((0, *np.shape(x)[1:]), np.float32))

    def _check(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, Samples):  # rows read on demand are float32 already, and read a batch at a time
            x = np.asarray(x)
            if x.dtype != np.float32:
                x = x.astype(np.float32)
        got = tuple(x.shape[1:])
        fits = self._fits(got)
        source = getattr(self, "layout_source", "")
        other = {"NCHW": "NHWC", "NHWC": "NCHW"}.get(self.layout)
        if not fits and source == "guess" and other is not None and self._fits(got, other):
            # No metadata said which layout the artifact has, and the guess does not fit the data:
            # the other image layout does (e.g. a 3x8x8 NHWC input looks channels-first).
            self.layout, fits = other, True
        if x.ndim >= 2 and not fits and source == "metadata" and other is not None and self._fits(got, other):
            # the data fits the file's input read the other way: the data's layout, or an edited record
            raise UserError(f"{self.path.name} records its input layout as {self.layout} (its metadata or .json sidecar), and "
                            f"samples of shape {got} fit its input {tuple(self.input_shape)} only read the other way: "
                            f"either the data is laid out otherwise than the file takes it (give NCHW rows), or the "
                            f"record was edited (restore it)")
        want = self.dataset_sample_shape()
        if len(self.input_shape) < 2:  # "expects () (NC, dataset layout)" said nothing of a file that takes no batch of rows
            raise UserError(f"{getattr(self, 'shown_name', None) or self.path.name} takes inputs of shape {tuple(self.input_shape)}, "
                            "no batch of samples: cwtool runs classifiers whose input is (batch, sample...); re-export it")
        if x.ndim < 2 or not fits:
            layout = "NCHW" if self.layout == "NHWC" else self.layout
            raise UserError(
                f"data samples have shape {got} but {getattr(self, 'shown_name', None) or self.path.name} expects {want} ({layout}, dataset layout): "
                f"pass data that matches the model's input"
            )
        return x

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits (N, num_classes) float32 for x (N, ...) float32 in the dataset layout (NCHW or NC): an array
        or rows read on demand (toolchain.data.samples), fed ``batch_size`` rows at a time and at most
        BATCH_BYTES of input, so memory follows the batch, not the number of rows."""
        x = self._check(x)
        if len(x) == 0:
            return np.zeros((0, self.num_classes or 0), np.float32)
        from toolchain.report.pace import RowPace

        out = []
        step = batch_rows(x, batch_size)
        per_row = getattr(self, "row_bytes", 0)  # what one row costs inside the file (its activations at batch 1)
        if per_row:  # rows a call at most as many as CALL_BYTES holds: a file of 1 GiB a row ran 256 at a time
            step = max(1, min(step, CALL_BYTES // per_row))
        if getattr(self, "one_row_a_call", False):  # its rows mix: its memory grows faster than the rows
            step = 1
        pace = RowPace(getattr(self, "shown_name", None) or self.path.name, len(x))
        for start in range(0, len(x), step):
            chunk = self._to_artifact_layout(np.asarray(x[start : start + step], dtype=np.float32))
            out.append(self._logits(self._run(chunk), len(chunk), out[0].shape[1] if out else None))
            pace(start + len(chunk))
        return np.concatenate(out, axis=0)

    def _logits(self, y, n: int, width: int | None) -> np.ndarray:
        """The runtime's output for ``n`` rows as (n, classes) float32; an output that cannot be that
        (no numbers, no elements, not n equal rows, another width than earlier chunks) is a UserError."""
        y = np.asarray(y)
        if y.dtype.kind in "fiub" and y.size == n and (y.ndim <= 1 or y.shape[0] == n):
            raise UserError(f"{self.path} returns one value per row (shape {y.shape}, {y.dtype}), not one logit per class: cwtool "
                            "verifies classifiers by their (N, classes) logits; export the model without its argmax or threshold (a one-logit binary "
                            "model: with two)")
        if y.dtype.kind not in "fiub" or y.size == 0 or y.size % n or (width is not None and y.size != n * width):
            raise UserError(f"{self.path} returned an output of shape {y.shape} ({y.dtype}) for {n} rows: "
                            "cwtool verifies classifiers with (N, classes) logits; re-export it")
        return y.reshape(n, -1).astype(np.float32, copy=False)

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
