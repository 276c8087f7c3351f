"""Static int8 quantization of an fp32 ONNX file with onnxruntime: QDQ, per-channel, int8 weights and
activations, calibrated on a given set (from quantize.calibration, training split only).

Float fallback: ``nodes_to_exclude`` keeps named nodes in float. Names are those of the
*preprocessed* graph, listed (topologically) by ``quantizable_nodes`` -- the FN-aware fallback ranks
and excludes them.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from toolchain import interrupts
from toolchain.errors import IMPORT_FAILURES, UserError, import_failed, one_line
from toolchain.export.onnx import compact, set_metadata
from toolchain.io import scratch_folder, staged_path

QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
METHODS = ("minmax", "entropy", "percentile")


def _quantization():
    """onnxruntime.quantization; a UserError when onnxruntime is not installed or does not import."""
    try:
        with interrupts.uninterrupted_import():
            from onnxruntime import quantization
    except IMPORT_FAILURES as e:
        raise import_failed(e, "onnxruntime", "onnxruntime", "pip install onnxruntime, or cwtool[onnx]") from e
    return quantization


def _calibration_method(method: str):
    CalibrationMethod = _quantization().CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    try:
        return table[method.lower()]
    except KeyError:
        raise UserError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}") from None


@contextlib.contextmanager
def _quiet():
    """Silence onnxruntime.quantization's logging/prints (warnings about pre-processing, etc.)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _preprocess(fp32_path: Path, out_path: Path):
    """quant_pre_process (shape inference + ORT basic optimizations), then name any unnamed node
    deterministically so nodes_to_exclude can address every node. Returns the ModelProto."""
    import onnx

    quant_pre_process = _quantization().quant_pre_process

    if not fp32_path.is_file():
        raise UserError(f"ONNX model {fp32_path} does not exist: export it first")
    try:
        with _quiet():
            try:
                quant_pre_process(str(fp32_path), str(out_path))
            except AssertionError:  # its symbolic shape inference cannot follow some graphs (attention reshapes); ONNX's own can
                quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
        model = onnx.load(str(out_path))
    except UserError:
        raise
    except Exception as e:
        from toolchain.io import environment_advice

        advice = environment_advice(e) if isinstance(e, OSError) else None
        if advice:  # the machine's (a full TMPDIR), not onnxruntime's limits
            raise UserError(f"onnxruntime cannot prepare {fp32_path.name} for int8 quantization in the temporary folder "
                            f"'{out_path.parent.parent}' ({e.strerror or type(e).__name__}): {advice}, or set "
                            "TMPDIR to another folder") from e
        free = _free_bytes(out_path.parent)
        if free is not None and free < 4 * fp32_path.stat().st_size + (1 << 20):  # onnxruntime's own writer cut its file
            # (its preparation holds about three copies of the model at once)
            # short on a full disk without a word: what reads it back finds a corrupt model, not the model's fault
            raise UserError(f"onnxruntime cannot prepare {fp32_path.name} for int8 quantization: the temporary folder "
                            f"'{out_path.parent.parent}' has {free:,} bytes free, less than the prepared model needs "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:120]}): free space there, or set TMPDIR to "
                            "another folder") from e
        raise UserError(f"onnxruntime cannot prepare {fp32_path.name} for int8 quantization ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}): use --format tflite, or `cwtool export --format onnx --precision fp32`") from e
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    onnx.save(model, str(out_path))
    return model


def _free_bytes(folder: Path) -> int | None:
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _preprocessed(fp32_path: str | Path):
    """The pre-processed model (the graph whose node names quantize_onnx's nodes_to_exclude takes)."""
    with scratch_folder("cwtool-q-") as tmp:
        return _preprocess(Path(fp32_path), Path(tmp) / "pre.onnx")


INPUT_ARITHMETIC_OPS = ("Mul", "Add", "Sub", "Div")  # a model's own scaling of its input: quantized by onnxruntime too


def quantizable_nodes(fp32_path: str | Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes of the pre-processed graph, in topological order
    (the order onnx graphs are stored in), and of the arithmetic that reads the graph input (a model's own
    standardization, ``x * scale``): onnxruntime quantizes that too, so the input is rounded on one scale before the
    model scales it, which erases features whose scale is small (a file answering one class for every row; a reviewer's
    finding). Only kept in float can it be repaired. These are the names quantize_onnx's nodes_to_exclude takes."""
    model = _preprocessed(fp32_path)
    graph_inputs = {v.name for v in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS
            or (n.op_type in INPUT_ARITHMETIC_OPS and any(i in graph_inputs for i in n.input))]


def thin_input_convs(fp32_path: str | Path, max_channels: int = 4) -> list[str]:
    """Conv nodes (pre-processed names) that read the graph input and have at most ``max_channels``
    input channels: an image stem (1-4 channels). onnxruntime's int8 convolution pays its fixed cost
    per output pixel whatever the channel count, so on a 1-channel 28x28 stem it is slower than the
    float one (reproduce/README.md, "Channel counts and MLAS"); the stem holds a few hundred weights, so keeping it in
    float costs no size to speak of."""
    from onnx import numpy_helper

    model = _preprocessed(fp32_path)
    graph_inputs = {v.name for v in model.graph.input}
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    thin = []
    for node in model.graph.node:
        w = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if w is not None and node.input[0] in graph_inputs and w.ndim >= 3 and w.shape[1] <= max_channels:
            thin.append(node.name)
    return thin


class _ArrayReader:
    """CalibrationDataReader over an array, in batches the model's input accepts."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int):
        self.input_name, self.x, self.batch = input_name, x, batch
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.x):
            return None
        chunk = self.x[self.pos : self.pos + self.batch]
        self.pos += self.batch
        if len(chunk) < self.batch and self._static:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - len(chunk), axis=0)])
        return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self):
        self.pos = 0

    _static = False


def _reader(model, x: np.ndarray):
    CalibrationDataReader = _quantization().CalibrationDataReader

    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    static = dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0
    batch = int(dims[0].dim_value) if static else 64
    want = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims[1:])
    got = tuple(x.shape[1:])
    if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
        raise UserError(f"calibration rows have shape {got} but the model input expects {want}: use the model's training data")

    class Reader(_ArrayReader, CalibrationDataReader):
        pass

    r = Reader(inp.name, x, batch)
    r._static = bool(static)
    return r


@contextlib.contextmanager
def _calibration_failure():
    """onnxruntime's quantizer asserts on activation ranges float32 cannot scale (calibration rows of 1e38):
    the rows are the user's input, so say so (exit 2)."""
    try:
        yield
    except (AssertionError, FloatingPointError, OverflowError) as exc:
        raise UserError(f"onnxruntime cannot quantize the model on these calibration rows ({type(exc).__name__}: {exc}): "
                        "their activations have no int8 scale; give rows like the model's training inputs") from exc


def _unscalable_norms(model) -> list[str]:
    """Normalization nodes whose scale or bias is not a vector (LayerNorm over [C, H, W]): onnxruntime's quantizer fails
    on them while it rescales biases (a ValueError from numpy), so they stay float, listed in the file's quant_excluded."""
    shapes = {init.name: len(init.dims) for init in model.graph.initializer}
    norms = ("LayerNormalization", "InstanceNormalization", "GroupNormalization")
    return [n.name for n in model.graph.node if n.op_type in norms and any(shapes.get(i, 1) > 1 for i in n.input[1:])]


@contextlib.contextmanager
def _quantizer_failure():
    """An error raised inside onnxruntime's quantizer on a model it cannot quantize is the model's (exit 2, with the
    formats that can still be written); one raised in cwtool's own code stays a bug."""
    import traceback

    try:
        yield
    except (ValueError, TypeError, IndexError, KeyError, NotImplementedError) as exc:
        owners = [f for f in traceback.extract_tb(exc.__traceback__) if {"onnxruntime", "toolchain"} & set(Path(f.filename).parts)]
        if not owners or "onnxruntime" not in Path(owners[-1].filename).parts:  # the innermost of the two is cwtool's: a bug
            raise
        where = f"{Path(owners[-1].filename).stem}.{owners[-1].name}"
        raise UserError(f"onnxruntime's quantizer cannot quantize this model ({type(exc).__name__} in {where}: "
                        f"{one_line(str(exc))[:160]}): write the int8 file "
                        "as TFLite (--format tflite) or the ONNX file in fp32 (--precision fp32)") from exc


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_x: np.ndarray,
    method: str = "minmax",
    nodes_to_exclude: Sequence[str] | Iterable[str] = (),
    weight_bits: int = 7,
) -> Path:
    """fp32 ONNX -> static int8 QDQ ONNX (per-channel int8 weights, int8 activations).

    calibration_x: float32 rows in the model's input layout, drawn from the training split.
    method: "minmax" | "entropy" | "percentile" (onnxruntime CalibrationMethod).
    nodes_to_exclude: names from quantizable_nodes(fp32_path) to keep in float.
    weight_bits: 7 (onnxruntime's reduce_range: weights in [-64, 64]) or 8. x86 CPUs without VNNI
    (AVX2 only) multiply u8 x s8 pairs with VPMADDUBSW, whose 16-bit sums saturate on full-range
    weights: the same file then computes differently there than on a VNNI or ARM CPU (digits-cnn:
    96.5% argmax agreement on an AVX2 EPYC, 100% with 7-bit weights or unoptimized QDQ). Half a bit
    of weight precision buys a file that computes the same on every CPU, so 7 is the default.
    Input and output stay float32 (QDQ). metadata_props of the fp32 file are carried over, with
    precision=int8, quant_method and quant_excluded added; inner names are shortened (export.onnx.compact).
    Written atomically.
    """
    import onnx

    quantization = _quantization()
    QuantFormat, QuantType, quantize_static = quantization.QuantFormat, quantization.QuantType, quantization.quantize_static

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    calib_method = _calibration_method(method)
    x = np.asarray(calibration_x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise UserError("the calibration set is empty: pass at least one row (e.g. 200-500 training rows)")
    exclude = list(nodes_to_exclude)
    if weight_bits not in (7, 8):
        raise UserError(f"int8 weight bits must be 7 or 8, not {weight_bits}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with scratch_folder("cwtool-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        model = _preprocess(fp32_path, pre)
        names = {n.name for n in model.graph.node}
        unknown = [n for n in exclude if n not in names]
        if unknown:
            raise UserError(f"nodes_to_exclude names unknown nodes {unknown[:3]}: take names from quantizable_nodes()")
        exclude += [n for n in _unscalable_norms(model) if n not in exclude]
        q_tmp = Path(tmp) / "q.onnx"
        extra: dict = {}
        if calib_method.name == "Percentile":
            extra["CalibPercentile"] = 99.999
        with _quiet(), _calibration_failure(), _quantizer_failure():
            quantize_static(
                str(pre),
                str(q_tmp),
                _reader(model, x),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                reduce_range=weight_bits == 7,
                op_types_to_quantize=None,
                nodes_to_exclude=exclude or None,
                calibrate_method=calib_method,
                extra_options=extra,
            )
        qmodel = onnx.load(str(q_tmp))
        src = onnx.load(str(fp32_path), load_external_data=False)
        meta = {p.key: p.value for p in src.metadata_props}
        meta.update(
            precision="int8",
            quant_method=method.lower(),
            quant_weight_bits=str(weight_bits),
            quant_excluded=",".join(exclude),
        )  # no timings: the same model and calibration rows give the same bytes
        set_metadata(qmodel, meta)
        compact(qmodel)
        with staged_path(out_path) as staged:
            onnx.save(qmodel, staged)
    return out_path
