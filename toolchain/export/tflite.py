"""PyTorch -> TFLite with litert-torch (no TensorFlow): fp32, fp16 (weights) and full-integer int8.

- fp32: ``litert_torch.convert(model.eval(), (x,)).export(path)``.
- fp16: litert-torch's own recipe ``generative.quantize.quant_recipes.full_fp16_recipe()`` (runs
  ai-edge-quantizer's FLOAT_CASTING): weights stored as float16 and dequantized to float32 at load;
  compute and I/O stay float32. About half the fp32 size.
- int8: PT2E static quantization (export/tflite_int8.py: symmetric, per-channel weights, per-tensor
  int8 activations), calibrated on ``calibration_x`` (training rows), then
  ``convert(..., quant_config=QuantConfig(pt2e_quantizer=q))``. The result is full-integer:
  input and output tensors are int8 and carry (scale, zero_point); the runners quantize the input
  and dequantize the output.
- layout "NHWC" wraps the model in ``litert_torch.to_channel_last_io`` (input transposed in-graph).
- Files are static batch 1 (the runner resizes when the graph allows it, else loops).
- Every file is compacted (``compact``): the converter names each inner tensor after its full
  module path, several KB that no runtime reads.

A ``<file>.tflite.json`` sidecar records layout, num_classes, precision and cwtool version, since a
.tflite flatbuffer has no simple key/value metadata; runners read it and fall back to shape inference.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from toolchain import interrupts
from toolchain.errors import IMPORT_FAILURES, ConverterRefused, Interrupted, UserError, import_failed
from toolchain.export.tflite_int8 import pt2e_int8_module
from toolchain.io import TMP_PREFIX, cannot_write, publish
from toolchain.runtimes.base import MAX_SIDECAR_BYTES

PRECISIONS = ("fp32", "fp16", "int8")


def _repoint_handlers(closed, stream) -> None:
    """Logging handlers a library made inside the quiet block write to its stream, closed when the block ends: a warning
    after it (matplotlib's, when HOME cannot be written) printed a "--- Logging error ---" traceback in a passing run."""
    import logging

    loggers = [logging.getLogger(), *(lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is closed:
                handler.stream = stream  # not setStream: it flushes the closed one first


@contextlib.contextmanager
def quiet_native(enabled: bool = True):
    """Send fd 1/2 (absl/C++ logs, progress prints) to a temp file. On a failure its tail goes with the exception
    (``native_output``: the CLI shows it under --debug, beside the traceback), so bad input stays one line; on a stop
    it is dropped (a signal's one line is all a stopped run says)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    log = tempfile.TemporaryFile(mode="w+b")
    failure, text = None, None
    interrupts.console(saved[1])  # a stop's one line still reaches the user while fd 2 is the log
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # Python-level writes too, where sys.stdout/sys.stderr are not fd 1/2 (a host that captures them)
        text = open(os.dup(log.fileno()), "w", encoding="utf-8", errors="replace", closefd=True)
        with text, contextlib.redirect_stdout(text), contextlib.redirect_stderr(text), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (Interrupted, KeyboardInterrupt):
        raise
    except BaseException as exc:
        failure = exc
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        if text is not None:
            _repoint_handlers(text, sys.stderr)
        interrupts.console(None)
        os.close(saved[0])
        os.close(saved[1])
        if failure is not None:
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace")
            if tail.strip():
                try:
                    failure.native_output = tail
                except AttributeError:  # an exception type without a __dict__: shown now, as before
                    sys.stderr.write(tail)
        log.close()


def import_litert_torch():
    """litert_torch, configured quiet; a UserError when it is not installed or does not import."""
    try:
        with interrupts.uninterrupted_import():  # TensorFlow's first import: a stop inside it aborted the process
            import litert_torch
    except IMPORT_FAILURES as e:
        raise import_failed(e, "litert_torch", "litert-torch", "pip install 'cwtool[compress]'") from e
    litert_torch.config.show_progress = False
    return litert_torch


def compact(data: bytes) -> bytes:
    """Drop the names of a model's inner tensors, its subgraph names and its description.

    litert-torch names every tensor after the torch module path ("toolchain.models...FashionCNN/
    torch.nn.modules.container.Sequential_features/...;"): 4.4 KB of a 34 KB int8 file. The graph's
    input and output tensor names, the signature defs (a SignatureRunner's contract) and the metadata
    (min_runtime_version) are kept, and the operators, tensors and buffers are untouched, so every
    runtime computes the same. Files near the 2 GB flatbuffer limit (weights stored after it by
    offset) are returned as they are: re-packing would put the weights back inside."""
    from ai_edge_litert.tools import flatbuffer_utils

    if len(data) >= 2**30:
        return data
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.description = None
    for subgraph in model.subgraphs:
        subgraph.name = None
        io = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in io:
                tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _converted(litert_torch, module, sample, precision: str, calibration_x, layout: str, float_modules):
    """litert-torch's edge model of ``module`` in ``precision`` (int8: pt2e, calibrated on ``calibration_x``)."""
    if precision == "fp32":
        return litert_torch.convert(module, (sample,))
    if precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        return litert_torch.convert(module, (sample,), quant_config=quant_recipes.full_fp16_recipe())
    from litert_torch.quantize.quant_config import QuantConfig

    calib = calibration_x.transpose(0, 2, 3, 1) if layout == "NHWC" else calibration_x
    converted, quantizer = pt2e_int8_module(module, sample, calib, float_modules)
    return litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


def export_tflite(
    model,
    example_input,
    path: str | Path,
    precision: str = "fp32",
    layout: str = "NCHW",
    calibration_x: np.ndarray | None = None,
    *,
    float_modules: Sequence[str] = (),
    num_classes: int | None = None,
    metadata: dict[str, Any] | None = None,
    quiet: bool = True,
) -> Path:
    """Convert ``model`` to a batch-1 .tflite file with litert-torch; returns the path.

    example_input: a batch in the DATASET layout (N, C, H, W) or (N, F).
    precision: "fp32" | "fp16" (fp16 weights, fp32 compute and I/O) | "int8" (full integer, int8 I/O).
    layout: "NCHW" (as torch) or "NHWC" (input transposed in the graph); ignored ("NC") for 2-D input.
    calibration_x: int8 only; float32 TRAINING rows in the dataset layout (200-500 is plenty).
    float_modules: int8 only; submodule names (``tflite_int8.quantizable_modules(model)``) kept in float.
    Writes ``path`` and ``path + '.json'`` (layout, num_classes, precision, ...) atomically.
    """
    import torch

    import toolchain

    precision = precision.lower()
    if precision not in PRECISIONS:
        raise UserError(f"unknown TFLite precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    layout = layout.upper()
    x = example_input.detach().float()[:1].contiguous()
    if x.dim() != 4:
        if layout == "NHWC":
            raise UserError("layout NHWC needs image input (N, C, H, W); feature vectors are exported as NC")
        layout = "NC"
    elif layout not in ("NCHW", "NHWC"):
        raise UserError(f"unknown layout {layout!r}: use NCHW or NHWC")
    if precision == "int8":
        if calibration_x is None or len(calibration_x) == 0:
            raise UserError("int8 TFLite export needs calibration_x: rows from the training split")
        calibration_x = np.asarray(calibration_x, dtype=np.float32)
        if tuple(calibration_x.shape[1:]) != tuple(x.shape[1:]):
            raise UserError(
                f"calibration rows have shape {tuple(calibration_x.shape[1:])}, model input {tuple(x.shape[1:])}: use matching data"
            )
    elif float_modules:
        raise UserError("float_modules only applies to int8 export")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad():
        n_classes = int(num_classes or model(x).shape[-1])

    fd, tmp = tempfile.mkstemp(suffix=".tflite", dir=path.parent, prefix=f"{TMP_PREFIX}{path.stem}.")  # swept by --resume
    os.close(fd)
    for staged in (tmp, tmp + ".json"):  # removed even when a stop finds the converter stuck past the grace period
        interrupts.staged(staged)
    try:
        with quiet_native(quiet):
            litert_torch = import_litert_torch()  # its first import is noisy too (absl, torchao .so probes)
            module, sample = model, x
            if layout == "NHWC":
                module = litert_torch.to_channel_last_io(model, args=[0]).eval()
                sample = x.permute(0, 2, 3, 1).contiguous()
                float_modules = tuple(f"wrapped.{m}" for m in float_modules)
            try:
                edge = _converted(litert_torch, module, sample, precision, calibration_x, layout, float_modules)
            except UserError:
                raise
            except Exception as exc:  # torch.export or the converter cannot follow the model's forward
                detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                said = f"litert-torch cannot convert this model to TFLite ({detail}): export it with --format onnx"
                if isinstance(exc, MemoryError):  # the machine's limit, not a mix the search may pass over
                    raise UserError(said) from exc
                raise ConverterRefused(said, detail) from exc
            # the flatbuffer's bytes, written by Python: the converter's own writer takes the path as UTF-8, and under a
            # locale whose file names are not UTF-8 a run folder of a non-ASCII name "could not be opened" (exit 3)
            content = edge.model_content() if hasattr(edge, "model_content") else None
            if content is None:
                edge.export(tmp)
                content = Path(tmp).read_bytes()
        try:
            Path(tmp).write_bytes(compact(content))
        except OSError as exc:  # a full disk: said of the file being written (the staged name meant nothing)
            raise cannot_write(path, exc) from exc
        side = {  # no timings: the sidecar is part of the artifact, hashed with it, and the same export gives the same bytes
            "cwtool_version": toolchain.__version__,
            "format": "tflite",
            "layout": layout,
            "num_classes": n_classes,
            "precision": precision,
            "input_shape": list(sample.shape),
            "dataset_sample_shape": list(x.shape[1:]),
            "float_modules": [m.removeprefix("wrapped.") for m in float_modules],
            "converter": f"litert-torch {getattr(litert_torch, '__version__', '?')}",
            **_own_layout(metadata or {}, layout),
        }
        side_tmp = tmp + ".json"
        side_bytes = json.dumps(side, indent=2, sort_keys=True).encode()
        if len(side_bytes) > MAX_SIDECAR_BYTES:  # a sidecar no reader of cwtool's would read
            raise UserError(f"the sidecar of {path.name} would hold {len(side_bytes):,} bytes of names (columns, classes), "
                            f"more than the {MAX_SIDECAR_BYTES >> 20} MB verify reads: give fewer columns or classes, or export "
                            "with --format onnx")
        try:
            Path(side_tmp).write_bytes(side_bytes)
        except OSError as exc:
            raise cannot_write(path.with_name(path.name + ".json"), exc) from exc
        publish(tmp, path)
        publish(side_tmp, path.with_name(path.name + ".json"))
    finally:
        for leftover in (tmp, tmp + ".json"):
            if os.path.exists(leftover):
                os.unlink(leftover)
            interrupts.unstaged(leftover)
    return path


def _own_layout(metadata: dict, layout: str) -> dict:
    """``metadata`` with its image preprocessing laid out as this file's input is (an NHWC file's record said NCHW, the
    layout of the data set's rows, beside its own "layout": NHWC)."""
    pre = metadata.get("preprocessing")
    if isinstance(pre, dict) and pre.get("layout") in ("NCHW", "NHWC"):
        return {**metadata, "preprocessing": {**pre, "layout": layout}}
    return metadata
