"""The graph description of an .onnx file (see runtimes/graph.py), read with the `onnx` package.

The `onnx` package is optional on a device: without it the operators are not read (``ops`` None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.runtimes.base import runtime_errors, shape_bytes
from toolchain.runtimes.graph import activation_peak, static_nbytes

CONV_OPS = ("Conv", "QLinearConv", "ConvInteger")
MATMUL_OPS = ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger")


def _inferred_graph(path: Path):
    """The file's graph with the shapes onnx infers (its weights not read from external data); None without onnx."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    with runtime_errors(path, "read the graph of"):  # the file is untrusted: a broken protobuf is bad input
        model = onnx.load(str(path), load_external_data=False)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - keep what we have
        pass
    return model.graph


def _tensor_shapes(g, constants: set[str]) -> tuple[dict[str, list], dict[str, int]]:
    """({tensor: dims}, {computed tensor: bytes at batch 1}) of the graph's inputs, inferred values and outputs."""
    import numpy as np
    from onnx import helper

    shapes: dict[str, list] = {}
    sizes: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        shapes[vi.name] = dims
        try:
            item = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        except Exception:  # noqa: BLE001
            item = 4
        if vi.name not in constants:
            sizes[vi.name] = static_nbytes(dims, item)
    return shapes, sizes


def _peak(g, sizes: dict[str, int], constants: set[str]) -> int:
    order = [([i for i in n.input if i], [o for o in n.output if o]) for n in g.node if n.op_type != "Constant"]
    inputs = [i.name for i in g.input if i.name not in constants]
    return activation_peak(order, sizes, inputs, [o.name for o in g.output])


def _constant_names(g) -> set[str]:
    return {i.name for i in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant" and n.output}


def onnx_activation_peak(path: Path) -> int | None:
    """The graph's activation peak at batch 1, in bytes, without reading its weights (the runner checks it on every
    file it opens); None without the onnx package."""
    g = _inferred_graph(path)
    if g is None:
        return None
    constants = _constant_names(g)
    return _peak(g, _tensor_shapes(g, constants)[1], constants)


def describe_onnx_graph(path: Path) -> dict[str, Any]:
    g = _inferred_graph(path)
    if g is None:
        return {"ops": None, "ops_note": "the onnx package is not installed: operators and MACs not read"}
    import numpy as np
    from onnx import helper, numpy_helper

    with runtime_errors(path, "read the weights of"):
        consts = {i.name: numpy_helper.to_array(i) for i in g.initializer if not i.external_data}
        # weights in external data files (torch's `model.onnx.data`): known by shape, their bytes not read
        consts.update({i.name: _External.of(i, helper) for i in g.initializer if i.external_data})
    for n in g.node:  # Constant nodes hold weights too
        if n.op_type == "Constant" and n.attribute:
            try:
                consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            except Exception:  # noqa: BLE001
                pass
    dq = {n.output[0]: n.input[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input and n.output}
    shapes, sizes = _tensor_shapes(g, set(consts))
    ops, macs = [], 0
    for n in g.node:
        if n.op_type == "Constant":
            continue
        ops.append(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
        out = shapes.get(n.output[0]) if n.output else None
        w = _weight(n, consts, dq)
        if out is None or w is None:
            continue
        out_n = static_nbytes(out, 1)
        if n.op_type in CONV_OPS and w.ndim >= 3:
            macs += out_n * int(np.prod(w.shape[1:]))
        elif n.op_type in MATMUL_OPS and w.ndim == 2:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            macs += out_n * int(w.shape[1] if trans_b else w.shape[0])
    return {
        "ops": ops,
        "macs": int(macs),
        "weight_bytes": int(sum(a.nbytes for a in consts.values())),
        "activation_peak_bytes": _peak(g, sizes, set(consts)),
    }


@dataclass(frozen=True)
class _External:
    """A weight stored in an external data file: what the MAC and memory counts need, without its bytes."""

    shape: tuple
    nbytes: int

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @classmethod
    def of(cls, tensor, helper) -> "_External":
        import numpy as np

        shape = tuple(max(0, int(d)) for d in tensor.dims)
        return cls(shape, shape_bytes(shape, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize))


def _weight(node, consts: dict, dq: dict):
    """The constant weight of a Conv/Gemm/MatMul, looking through a DequantizeLinear (QDQ graphs)."""
    idx = 3 if node.op_type in ("QLinearConv", "QLinearMatMul") else 1
    if len(node.input) <= idx:
        return None
    name = node.input[idx]
    return consts.get(name, consts.get(dq.get(name, "")))
