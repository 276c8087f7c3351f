"""The graph description of an .onnx file (see runtimes/graph.py), read with the `onnx` package.

The `onnx` package is optional on a device: without it the operators are not read (``ops`` None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import UserError
from toolchain.runtimes.base import runtime_errors, shape_bytes
from toolchain.runtimes.graph import activation_peak, static_nbytes

CONV_OPS = ("Conv", "QLinearConv", "ConvInteger")
MATMUL_OPS = ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger")


# Operators whose output size is read from another tensor's values at run time (a shape, a count, a size): the
# count of activations bounds them only where onnx infers that size from the file (torch.zeros(x.shape[0], 16) is one,
# sized by the batch; one ConstantOfShape of a computed shape filled 3 GB before any check saw it).
SIZED_BY_VALUES = ("ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot", "CenterCropPad")


@dataclass(frozen=True)
class GraphBounds:
    """What the runner learns of a graph before it runs it: its activation peak at batch 1 (bytes, as the shapes infer
    it), and the first operator whose output size is set at run time (None: every size is the file's)."""

    peak: int
    sized_at_run_time: str | None


def _inferred_graph(path: Path):
    """The file's graph with the shapes onnx infers (its weights not read from external data); None without onnx. The
    shapes the file declares for its inner tensors are dropped first: they are claims, not what the runtime makes."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    with runtime_errors(path, "read the graph of"):  # the file is untrusted: a broken protobuf is bad input
        model = onnx.load(str(path), load_external_data=False)
    del model.graph.value_info[:]
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)  # torch.zeros(x.shape[0], 16): sized by the batch
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


def _check_bounded(g, path: Path) -> str | None:
    """Refuse control flow (a Loop of 10**15 steps ran until a signal stopped it; an If's branch is a graph whose sizes
    no count of the top graph reads); return the first operator whose output size onnx cannot infer where that size is
    read from values at run time or the operator is outside onnx's standard set (None where there is none)."""
    symbols = {d.dim_param for i in g.input for d in i.type.tensor_type.shape.dim if d.dim_param}  # the batch, as named
    inferred = {vi.name: vi.type.tensor_type for vi in list(g.value_info) + list(g.output)}

    def known(name: str) -> bool:
        tt = inferred.get(name)
        return tt is not None and tt.HasField("shape") and all(
            d.dim_value > 0 or (d.dim_param and d.dim_param in symbols) for d in tt.shape.dim)

    found = None
    for n in g.node:
        if any(a.type in (5, 10) for a in n.attribute):  # GRAPH, GRAPHS: If, Loop, Scan or another op's subgraph
            raise UserError(f"{path} holds {'an' if n.op_type[0] in 'AEIOU' else 'a'} {n.op_type} operator, control flow with "
                            "a graph of its own: cwtool runs classifiers without control flow, whose memory and time it can "
                            "bound before they run; re-export it")
        standard = n.domain in ("", "ai.onnx")
        if found is None and (n.op_type in SIZED_BY_VALUES or not standard) and not all(known(o) for o in n.output if o):
            found = n.op_type if standard else f"{n.domain}.{n.op_type}"
    return found


def onnx_bounds(path: Path) -> GraphBounds | None:
    """What bounds the graph's memory before it runs (the runner reads it for every file it opens, without its weights),
    after refusing control flow; None without the onnx package."""
    g = _inferred_graph(path)
    if g is None:
        return None
    sized = _check_bounded(g, path)
    constants = _constant_names(g)
    return GraphBounds(_peak(g, _tensor_shapes(g, constants)[1], constants), sized)


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
