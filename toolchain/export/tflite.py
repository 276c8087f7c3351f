"""PyTorch -> TFLite with litert-torch (no TensorFlow): fp32, fp16 (weights) and full-integer int8.

- fp32: ``litert_torch.convert(model.eval(), (x,)).export(path)``.
- fp16: litert-torch's own recipe ``generative.quantize.quant_recipes.full_fp16_recipe()`` (runs
  ai-edge-quantizer's FLOAT_CASTING): weights stored as float16 and dequantized to float32 at load;
  compute and I/O stay float32. About half the fp32 size.
- int8: PT2E static quantization with litert's PT2EQuantizer (symmetric, per-channel weights,
  per-tensor int8 activations), calibrated on ``calibration_x`` (training rows), then
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
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from toolchain.errors import UserError
from toolchain.io import publish

PRECISIONS = ("fp32", "fp16", "int8")


@contextlib.contextmanager
def quiet_native(enabled: bool = True):
    """Send fd 1/2 (absl/C++ logs, progress prints) to a temp file; replay it on failure."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    log = tempfile.TemporaryFile(mode="w+b")
    ok = False
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
        ok = True
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        if not ok:
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace")
            if tail.strip():
                sys.stderr.write(tail)
        log.close()


def _litert():
    try:
        import litert_torch
    except ImportError as e:
        raise UserError("litert-torch is not installed: pip install 'cwtool[compress]'") from e
    litert_torch.config.show_progress = False
    return litert_torch


def _module_names(node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [v[0] for v in stack.values() if isinstance(v, tuple) and v and isinstance(v[0], str)]


def make_pt2e_quantizer(float_modules: Iterable[str] = ()):
    """litert's PT2EQuantizer, symmetric per-channel, leaving the named submodules in float.

    litert's own ``set_module_name(name, None)`` asserts ("not supported yet"), and its module-name
    filter expects dynamo's ``L__self___x`` keys, which torch 2.13's export writes as
    ``L__self__x`` -- so it never matches. Here annotations are stripped by the fully qualified
    module names torch.export records in ``nn_module_stack`` instead.
    """
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.pt2e_quantizer_utils import propagate_annotation

    keep = tuple(float_modules)

    class FloatFallbackQuantizer(pq.PT2EQuantizer):
        def __init__(self):
            super().__init__()
            self.float_modules = keep
            self.stripped: list[str] = []

        def annotate(self, model):
            if not self.float_modules:
                return super().annotate(model)
            model = self._annotate_for_static_quantization_config(model)
            for node in model.graph.nodes:
                names = _module_names(node)
                if any(n == m or n.startswith(m + ".") for n in names for m in self.float_modules):
                    if node.meta.pop("quantization_annotation", None) is not None:
                        self.stripped.append(node.name)
            propagate_annotation(model)
            return model

    q = FloatFallbackQuantizer()
    q.set_global(pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    return q


def quantizable_modules(model) -> list[str]:
    """Names of Conv/Linear submodules in definition order: candidates for ``float_modules``."""
    from torch import nn

    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def thin_input_modules(model, example_input, max_channels: int = 4) -> list[str]:
    """Conv submodules that read the model's input directly with at most ``max_channels`` input
    channels (an image stem): the TFLite twin of quantize.onnx_int8.thin_input_convs. XNNPACK's int8
    path runs a 1-channel stem slower than its float one (measured: docs/BENCHMARKS.md), and the stem
    holds a few hundred weights, so keeping it float costs no size to speak of."""
    import torch
    from torch import nn

    x = example_input.detach().float()[:1]
    hits: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: hits.append(name) if args and args[0] is x else None)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.in_channels <= max_channels
    ]
    if not hooks:
        return []
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return list(dict.fromkeys(hits))


def _int8_module(module, x, calibration_x: np.ndarray, float_modules: Sequence[str]):
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = make_pt2e_quantizer(float_modules)
    # Calibrate in batches: the activation observers (HistogramObserver) cost ~0.1 s a call, so
    # row-by-row calibration of 300 rows took 31 s against 1 s in batches of 64. That needs a graph
    # exported with a dynamic batch; litert's convert re-exports it at batch 1 afterwards.
    batch = 64
    try:
        x2 = x.repeat(2, *([1] * (x.dim() - 1)))
        dyn = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
        graph = torch.export.export(module, (x2,), dynamic_shapes=dyn).module()
    except Exception:  # a model that specialises its batch size: calibrate row by row
        graph, batch = torch.export.export(module, (x,)).module(), 1
    prepared = prepare_pt2e(graph, quantizer)
    calib = torch.from_numpy(np.ascontiguousarray(calibration_x, dtype=np.float32))
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            prepared(calib[i : i + batch])
    converted = convert_pt2e(prepared, fold_quantize=False)
    with contextlib.suppress(Exception):
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(converted)
    if float_modules and not quantizer.stripped:
        raise UserError(f"float_modules {list(float_modules)} match no submodule: use names from quantizable_modules(model)")
    return converted, quantizer


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
    float_modules: int8 only; submodule names (``quantizable_modules(model)``) kept in float.
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

    t0 = time.perf_counter()
    fd, tmp = tempfile.mkstemp(suffix=".tflite", dir=path.parent, prefix=f".{path.stem}.")
    os.close(fd)
    try:
        with quiet_native(quiet):
            litert_torch = _litert()  # its first import is noisy too (absl, torchao .so probes)
            module, sample = model, x
            if layout == "NHWC":
                module = litert_torch.to_channel_last_io(model, args=[0]).eval()
                sample = x.permute(0, 2, 3, 1).contiguous()
                float_modules = tuple(f"wrapped.{m}" for m in float_modules)
            if precision == "fp32":
                edge = litert_torch.convert(module, (sample,))
            elif precision == "fp16":
                from litert_torch.generative.quantize import quant_recipes

                edge = litert_torch.convert(module, (sample,), quant_config=quant_recipes.full_fp16_recipe())
            else:
                from litert_torch.quantize.quant_config import QuantConfig

                calib = calibration_x.transpose(0, 2, 3, 1) if layout == "NHWC" else calibration_x
                converted, quantizer = _int8_module(module, sample, calib, float_modules)
                edge = litert_torch.convert(converted, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
            edge.export(tmp)
        Path(tmp).write_bytes(compact(Path(tmp).read_bytes()))
        seconds = time.perf_counter() - t0
        side = {
            "cwtool_version": toolchain.__version__,
            "format": "tflite",
            "layout": layout,
            "num_classes": n_classes,
            "precision": precision,
            "input_shape": list(sample.shape),
            "dataset_sample_shape": list(x.shape[1:]),
            "float_modules": [m.removeprefix("wrapped.") for m in float_modules],
            "converter": f"litert-torch {getattr(litert_torch, '__version__', '?')}",
            "convert_seconds": round(seconds, 3),
            **(metadata or {}),
        }
        side_tmp = tmp + ".json"
        Path(side_tmp).write_text(json.dumps(side, indent=2, sort_keys=True))
        publish(tmp, path)
        publish(side_tmp, path.with_name(path.name + ".json"))
    finally:
        for leftover in (tmp, tmp + ".json"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return path
