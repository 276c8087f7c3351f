"""The graph description of an .onnx file (see runtimes/graph.py), read with the `onnx` package.

The `onnx` package is optional on a device: without it the operators are not read (``ops`` None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import UserError
from toolchain.runtimes.base import a_or_an, runtime_errors, shape_bytes
from toolchain.runtimes.graph import activation_peak, static_nbytes

CONV_OPS = ("Conv", "QLinearConv", "ConvInteger")
MATMUL_OPS = ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger")


@dataclass(frozen=True)
class _Read:
    """A file's graph as cwtool bounds it: local functions inlined, the shapes the file declares for inner tensors and
    outputs dropped (claims, not what the runtime makes), a symbolic batch set to 1, every size then inferred; ``free``:
    the input's dims other than the batch that the file leaves open (none: every size follows from the file)."""

    graph: Any
    free: list
    shaped: bool  # the input declares a shape at all
    batched: bool = False  # its batch is left open (set here)
    followed: bool = True  # onnxruntime's symbolic inference ran through (else onnx's, which follows less)


def _inferred_graph(path: Path, batch: int = 1) -> _Read | None:
    """The file's graph with every size inferred at ``batch`` rows, 1 unless said (its weights not read from external data): onnxruntime's
    symbolic inference, which follows the shape arithmetic torch exports write (Shape, Gather, Concat into a Reshape,
    Expand, Range or Pad), else onnx's with data propagation; None without the onnx package."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None
    with runtime_errors(path, "read the graph of"):  # the file is untrusted: a broken protobuf is bad input
        model = onnx.load(str(path), load_external_data=False)
    try:
        from onnx import inliner

        model = inliner.inline_local_functions(model)  # a function's body is graph too (a ConstantOfShape hid in one)
    except Exception:  # noqa: BLE001 - an older onnx, or functions it cannot inline: their outputs stay unknown
        pass
    g = model.graph
    del g.value_info[:]
    for output in g.output:
        output.type.tensor_type.ClearField("shape")
    weights = {i.name for i in g.initializer}
    free, shaped, batched = [], True, False
    for i in g.input:
        if i.name in weights:
            continue
        tt = i.type.tensor_type
        shaped = shaped and tt.HasField("shape")
        for k, d in enumerate(tt.shape.dim):
            if d.dim_value <= 0 and k == 0:
                d.Clear()
                d.dim_value = batch
                batched = True
            elif d.WhichOneof("value") == "dim_value" and d.dim_value == 0:  # declared 0, not left open
                raise UserError(f"{path} declares an input of size 0 ({str(i.name)[:60]!r}, dimension {k}): no sample fits it; "
                                "the file is corrupt: re-export it")
            elif d.dim_value <= 0:
                free.append(d.dim_param or "?")
    inferred = _symbolic_inference(model)
    if inferred is not None:
        return _Read(inferred, free, shaped, batched)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - keep what we have: its unknown sizes are refused by the runner
        pass
    return _Read(model.graph, free, shaped, batched, followed=False)


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


_loaded: dict = {}


def _symbolic_shape_infer():
    """onnxruntime's symbolic_shape_infer module, loaded from its file: the package it sits in (onnxruntime.tools) imports
    torch where torch is installed, and the device tier never imports torch. None where it is not there."""
    if "module" not in _loaded:
        _loaded["module"] = None
        try:
            import importlib.util
            import sys

            spec = importlib.util.find_spec("onnxruntime")
            origin = Path(spec.origin).parent / "tools" / "symbolic_shape_infer.py" if spec and spec.origin else None
            if origin is not None and origin.is_file():
                module_spec = importlib.util.spec_from_file_location("cwtool_symbolic_shape_infer", origin)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[module_spec.name] = module
                module_spec.loader.exec_module(module)
                _loaded["module"] = module
        except Exception:  # noqa: BLE001 - another onnxruntime layout, or sympy missing: onnx's inference instead
            _loaded["module"] = None
    return _loaded["module"]


def _symbolic_inference(model):
    """onnxruntime's symbolic shape inference of ``model`` (its graph), run step by step: its own entry saves a model
    that it cannot follow to the working directory (sym_shape_infer_temp.onnx) and logs to stderr. None where it cannot
    run (no onnxruntime, an opset before 7, a graph it fails on): onnx's inference is used instead."""
    import logging

    ssi = _symbolic_shape_infer()
    if ssi is None:
        return None
    log = logging.getLogger(ssi.__name__)
    was, log.disabled = log.disabled, True
    try:
        opset = ssi.get_opset(model)
        if not opset or opset < 7:
            return None
        inference = ssi.SymbolicShapeInference(2**31 - 1, False, False, 0)
        inference._preprocess(model)
        while inference.run_:
            inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_.graph  # sizes it could not follow stay unknown: refused by _check_bounded
    except Exception:  # noqa: BLE001 - an untrusted graph it cannot follow
        return None
    finally:
        log.disabled = was


# Operators that make a tensor whose size is read from values: where onnxruntime's inference fails on a graph (it
# asserts on an attention's reshapes) and onnx's leaves sizes unknown, only these are refused for an unknown size.
SIZED_BY_VALUES = ("ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot", "CenterCropPad",
                   "BlackmanWindow", "HannWindow", "HammingWindow", "MelWeightMatrix", "Col2Im", "MaxUnpool", "AffineGrid",
                   "DFT", "STFT", "ScatterND", "ScatterElements", "NonZero", "TopK", "Compress", "Unique")


class SizeNotFollowed(UserError):
    """A tensor whose size the shape inference cannot follow at batch 1 (``_check_bounded``)."""


def sizes_follow(path: Path) -> bool:
    """Whether every size in ``path``'s graph follows from the file (the check the runner makes when it opens it): the
    exporter tries another way of writing a graph of its own that fails it."""
    read = _inferred_graph(path)
    try:
        if read is not None:
            _check_bounded(read, path)
    except SizeNotFollowed:
        return False
    except UserError:  # refused for another reason: no other writing of the graph changes that
        return True
    return True


def _check_bounded(read: _Read, path: Path) -> None:
    """Refuse what no count before running can bound: control flow (a Loop of 10**15 steps ran until a signal stopped it;
    an If's branch is a graph of its own), an input size other than the batch that the file leaves open, and a tensor
    whose size does not follow from the file at batch 1 (read from values the graph computes: a BlackmanWindow or a
    ConstantOfShape of a size made from the input's values filled 2.8 GB, the gate passed)."""
    g = read.graph
    for n in g.node:
        if any(a.type in (5, 10) for a in n.attribute):  # GRAPH, GRAPHS: If, Loop, Scan or another op's subgraph
            raise UserError(f"{path} holds {a_or_an(n.op_type)} operator, control flow with "
                            "a graph of its own: cwtool runs classifiers without control flow, whose memory and time it can "
                            "bound before they run; re-export it")
    if not read.shaped:
        return  # an input of no declared shape: no rows fit it (the runner's check refuses them before anything runs)
    if read.free:
        raise UserError(f"{path} leaves its input size open ({', '.join(map(str, read.free[:4]))}) beyond the batch: cwtool bounds "
                        "a file's memory at its input size before it runs; export it with a fixed sample shape")
    inferred = {vi.name: vi.type.tensor_type for vi in list(g.value_info) + list(g.output)}
    for n in g.node:
        standard = n.domain in ("", "ai.onnx")
        if n.op_type == "Resize" and standard:  # the inference takes these sizes as the output's: one inferred [1, 1, 464, 1] filled 3.2 GB
            odd = [a.name for a in n.attribute if (a.name == "axes" and a.ints) or (a.name == "keep_aspect_ratio_policy" and a.s != b"stretch")]
            if odd:
                raise UserError(f"{path} holds a Resize operator with {odd[0]} set, whose output size cwtool's count does not "
                                "follow: re-export it without")
        judged = read.followed or n.op_type in SIZED_BY_VALUES or not standard
        for name in n.output if judged else ():
            tt = inferred.get(name)
            if name and not (tt is not None and tt.HasField("shape") and all(d.HasField("dim_value") and d.dim_value >= 0
                                                                               for d in tt.shape.dim)):
                what = n.op_type if standard else f"{n.domain}.{n.op_type}"
                raise SizeNotFollowed(f"{path} holds {a_or_an(what)} operator whose output size does "
                                "not follow from the file (it depends on values the graph computes): cwtool cannot bound its "
                                "memory before it runs; re-export it with static shapes")


def _dims(g) -> dict[str, list[int]]:
    """{tensor: its dims} of the weights and of every inferred value (a size not inferred: 0)."""
    dims = {i.name: [max(0, int(d)) for d in i.dims] for i in g.initializer}
    dims.update({vi.name: [max(0, d.dim_value) if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
                 for vi in list(g.input) + list(g.value_info) + list(g.output) if vi.name not in dims})
    return dims


def _working_memory(g) -> int:
    """Bytes of the largest buffer a convolution unfolds its input into besides its output (onnxruntime's CPU kernels):
    a ConvTranspose's of kernel [1, 40, 64, 64] on a 64x64 image took 2.7 GB that no tensor of the graph shows.
    ConvTranspose: (output channels per group x kernel) x input pixels; Conv: (input channels per group x kernel) x
    output pixels; floats."""
    import math

    dims = _dims(g)
    most = 0
    for n in g.node:
        if n.op_type not in ("Conv", "ConvTranspose") or len(n.input) < 2 or not n.output:
            continue
        w = dims.get(n.input[1])
        image = dims.get(n.input[0] if n.op_type == "ConvTranspose" else n.output[0])
        if w and len(w) >= 3 and image and len(image) >= 3:
            most = max(most, w[1] * math.prod(w[2:]) * math.prod(image[2:]) * 4)
    return most


def _work(g) -> int:
    """Operations one row asks for at batch 1 (runtimes/graph.py, MAX_WORK): a convolution's or matrix product's
    multiply-accumulates (an Einsum's: its output times the sizes it sums over; a recurrent layer's: its steps times its
    weights), and for every other operator the elements it makes or reads, whichever are more. Sizes unknown count 0."""
    import math

    dims = _dims(g)

    def elements(name: str) -> int:
        return math.prod(dims[name]) if name in dims else 0

    def shape(node, k: int) -> list:
        return dims.get(node.input[k], []) if len(node.input) > k and node.input[k] else []

    total = 0
    for n in g.node:
        if n.op_type == "Constant":
            continue
        made = sum(elements(o) for o in n.output if o)
        op = n.op_type if n.domain in ("", "ai.onnx") else ""
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            total += made * math.prod(shape(n, 3 if op == "QLinearConv" else 1)[1:])
        elif op == "ConvTranspose":
            total += elements(n.input[0]) * math.prod(shape(n, 1)[1:])
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
            a = shape(n, 0)
            trans_a = op == "Gemm" and any(x.name == "transA" and x.i for x in n.attribute)
            total += made * (a[0] if trans_a and a else a[-1] if a else 0)
        elif op == "Einsum":
            equation = next((x.s.decode("ascii", "replace") for x in n.attribute if x.name == "equation"), "")
            sides = equation.replace(" ", "").split("->")
            sizes = {}
            for k, term in enumerate(sides[0].split(",")):
                for letter, d in zip(term.replace("...", ""), shape(n, k)[-len(term.replace("...", "")):] or []):
                    sizes[letter] = max(sizes.get(letter, 0), d)
            summed = [d for letter, d in sizes.items() if len(sides) > 1 and letter not in sides[1]]
            total += made * math.prod(summed)
        elif op in ("LSTM", "GRU", "RNN"):  # every step of every row: [steps, rows, inputs] or [rows, steps, inputs]
            steps_rows = math.prod(shape(n, 0)[:2]) if len(shape(n, 0)) >= 2 else 0
            total += steps_rows * (math.prod(shape(n, 1)) + math.prod(shape(n, 2)))
        else:
            total += max(made, sum(elements(i) for i in n.input if i))
    return int(total)


@dataclass(frozen=True)
class OnnxBounds:
    """What an ONNX file's memory and time come to before it runs: ``peak`` bytes at batch 1 (activations and the largest
    convolution's working buffer), whether its rows mix (two rows cost more than twice one: a Reshape of the batch into
    one axis, multiplied by itself, costs the square of the rows: 16 KB for one, 3.4 GB for 256), and ``work``, the
    operations of one row (_work; a fixed batch's divided by its rows)."""

    peak: int
    rows_mix: bool
    work: int = 0


def _peak_of(read: _Read) -> int:
    constants = _constant_names(read.graph)
    return _peak(read.graph, _tensor_shapes(read.graph, constants)[1], constants) + _working_memory(read.graph)


def onnx_bounds(path: Path) -> OnnxBounds | None:
    """The bounds of an ONNX file, without reading its weights (the runner checks them on every file it opens), after
    refusing what no such count can bound (``_check_bounded``); None without the onnx package."""
    read = _inferred_graph(path)
    if read is None:
        return None
    _check_bounded(read, path)
    peak, work = _peak_of(read), _work(read.graph)
    if not read.batched:  # a static batch: the runner feeds it that many rows, no other; its work is judged a row
        constants = _constant_names(read.graph)
        rows = next((d.dim_value for i in read.graph.input if i.name not in constants
                     for d in i.type.tensor_type.shape.dim[:1] if d.dim_value > 0), 1)
        return OnnxBounds(peak, False, work // rows)
    return OnnxBounds(peak, _peak_of(_inferred_graph(path, batch=2)) > 2 * peak + 4096, work)


def describe_onnx_graph(path: Path) -> dict[str, Any]:
    read = _inferred_graph(path)
    if read is None:
        return {"ops": None, "ops_note": "the onnx package is not installed: operators and MACs not read"}
    g = read.graph
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
