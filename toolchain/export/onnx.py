"""PyTorch -> ONNX (fp32), one self-contained file with cwtool metadata.

Batch dimension: DYNAMIC by default ("batch"), so onnxruntime runners feed 256 rows per call
instead of looping row by row. The onnx2tf trap (a dynamic-batch ONNX converted at batch 1 gave a
silently wrong TFLite model) does not apply: cwtool makes its TFLite files from torch directly with
litert-torch. Pass ``static_batch=1`` for a fixed-shape file (onnx2tf, some NPUs' compilers).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

from toolchain.io import staged_path

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17


def layout_of(example_input) -> str:
    """NCHW for image inputs (N, C, H, W), NC for feature vectors (N, F)."""
    return "NCHW" if example_input.dim() == 4 else "NC"


def _export_torchscript(model, x, path: str, opset: int, dynamic: bool) -> None:
    import torch

    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _export_dynamo(model, x, path: str, opset: int, dynamic: bool) -> None:
    import torch

    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
            external_data=False,
        )


def set_metadata(model_proto, metadata: dict[str, Any]) -> None:
    """Add or overwrite string metadata_props on an onnx ModelProto (dicts and lists as JSON text)."""
    import json

    existing = {p.key: p for p in model_proto.metadata_props}
    for key, value in metadata.items():
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        if key in existing:
            existing[key].value = text
        else:
            entry = model_proto.metadata_props.add()
            entry.key, entry.value = str(key), text


def compact(model_proto) -> None:
    """Shorten the names of a graph's inner tensors and drop node names, doc strings and value_info.

    In a small int8 file the quantizer's names ("/features/features.1/features.1.0/Conv_output_0_
    QuantizeLinear_Output", ...) and the inferred shapes take about a quarter of the bytes; runtimes
    need none of them. The graph's input and output names (the runner's contract) are kept."""
    graph = model_proto.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in renamed:
            renamed[name] = f"t{len(renamed)}"
        return renamed[name]

    for init in graph.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        node.name = ""
        node.doc_string = ""
    del graph.value_info[:]
    graph.doc_string = ""
    model_proto.doc_string = ""


def _rewritten_where_sizes_do_not_follow(model, x, path: str, opset: int, dynamic: bool) -> None:
    """The legacy exporter writes some sizes as computations shape inference cannot follow (a ViT's class token expanded
    to the batch, `cls.expand(x.shape[0], -1, -1)`, goes through Where/Equal), which the runner refuses to open: the file
    is then written by the dynamo exporter, whose sizes follow, where it can."""
    from toolchain.runtimes.onnx_graph import sizes_follow

    if sizes_follow(Path(path)):
        return
    again = f"{path}.dynamo"
    try:
        _export_dynamo(model, x, again, opset, dynamic)
        if sizes_follow(Path(again)):
            os.replace(again, path)
    except Exception:  # noqa: BLE001 - the legacy file stays, and the runner says why it cannot open it
        pass
    finally:
        if os.path.exists(again):
            os.unlink(again)


def export_onnx(
    model,
    example_input,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    static_batch: int | None = None,
    num_classes: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` (eval mode) to one fp32 ONNX file; input "input", output "logits".

    example_input: one batch in the dataset layout (N, C, H, W) or (N, F); only its sample shape matters.
    static_batch: None -> dynamic batch dimension; an int -> that fixed batch size.
    metadata_props written: cwtool_version, layout, num_classes, precision ("fp32"), input_shape,
    plus ``metadata``. The file appears atomically (written beside, then renamed).
    """
    import onnx
    import torch

    import toolchain

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = example_input.detach().float()
    batch = static_batch or 1
    x = x[:1].repeat(batch, *([1] * (x.dim() - 1))) if len(x) != batch else x
    with torch.no_grad():
        out = model(x)
    n_classes = int(num_classes or out.shape[-1])

    with staged_path(path) as tmp:
        try:
            _export_torchscript(model, x, tmp, opset, static_batch is None)
        except Exception:  # the legacy exporter is deprecated; the dynamo one needs onnxscript
            _export_dynamo(model, x, tmp, opset, static_batch is None)
        else:
            _rewritten_where_sizes_do_not_follow(model, x, tmp, opset, static_batch is None)
        proto = onnx.load(tmp)
        set_metadata(
            proto,
            {
                "cwtool_version": toolchain.__version__,
                "layout": layout_of(x),
                "num_classes": n_classes,
                "precision": "fp32",
                "input_shape": ",".join(str(d) for d in ([-1] if static_batch is None else [batch]) + list(x.shape[1:])),
                **(metadata or {}),
            },
        )
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
    return path
