"""The graph description of a .tflite file (see runtimes/graph.py), read with the LiteRT interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError
from toolchain.runtimes.base import check_tensor_bytes, runtime_errors
from toolchain.runtimes.graph import activation_peak, static_nbytes
from toolchain.runtimes.litert import interpreter_class, layer_macs, tensor_sizes
from toolchain.runtimes.load_probe import probed_content


def _interpreter(path: Path):
    cls, _ = interpreter_class()
    content = probed_content(path, cls)  # a file that crashes the runtime is refused here too (bench --target)
    try:  # without the default XNNPACK delegate, so the op list shows builtin ops, not DELEGATE
        from ai_edge_litert.interpreter import OpResolverType

        return cls(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except Exception:  # noqa: BLE001 - another interpreter, or no such option
        try:
            return cls(model_content=content)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot load TFLite artifact {path}: {str(e).splitlines()[0][:200]}; re-export it") from e


def describe_tflite_graph(path: Path) -> dict[str, Any]:
    interp = _interpreter(path)
    if not hasattr(interp, "_get_ops_details"):
        return {"ops": None, "ops_note": "this LiteRT interpreter does not list operators"}
    with runtime_errors(path, "read the operators of"):  # native calls on an untrusted file
        details = interp._get_ops_details()
        before = interp.get_tensor_details()
    check_tensor_bytes(tensor_sizes(before)[1], path)  # before allocating: a corrupt shape can ask for 17 GB
    with runtime_errors(path, "allocate the tensors of"):
        interp.allocate_tensors()
        tensors = {d["index"]: d for d in interp.get_tensor_details()}
        graph_inputs = [int(d["index"]) for d in interp.get_input_details()]
        graph_outputs = [int(d["index"]) for d in interp.get_output_details()]
    produced = {int(o) for op in details for o in op["outputs"]}

    def size(i):
        d = tensors.get(i)
        return 0 if d is None else static_nbytes([int(s) for s in d["shape"]], np.dtype(d["dtype"]).itemsize)

    consumed = {int(i) for op in details for i in op["inputs"] if int(i) >= 0}
    weights = [i for i in consumed if i not in produced and i not in graph_inputs]
    sizes = {i: size(i) for i in (produced | set(graph_inputs))}
    shapes = {i: list(d["shape"]) for i, d in tensors.items()}
    ops, macs = [], 0
    for op in details:
        name = op["op_name"]
        if name == "DELEGATE":
            continue
        ops.append(name)
        ins = [int(i) for i in op["inputs"]]
        outs = [int(o) for o in op["outputs"]]
        if len(ins) < 2 or not outs or outs[0] not in tensors or ins[1] not in tensors:
            continue
        macs += layer_macs(name, ins, static_nbytes([int(s) for s in tensors[outs[0]]["shape"]], 1), shapes)
    order = [([int(i) for i in op["inputs"] if int(i) >= 0], [int(o) for o in op["outputs"]])
             for op in details if op["op_name"] != "DELEGATE"]
    return {
        "ops": ops,
        "macs": int(macs),
        "weight_bytes": int(sum(size(i) for i in weights)),
        "activation_peak_bytes": activation_peak(order, sizes, graph_inputs, graph_outputs),
    }
