"""Full-integer int8 for TFLite: litert-torch's PT2E route, and the units a float fallback can keep float.

PT2E static quantization with litert's PT2EQuantizer (symmetric, per-channel weights, per-tensor int8
activations), calibrated on training rows; export/tflite.py hands the result to litert-torch's convert.
The units are torch submodule names (Conv/Linear), the TFLite twin of export/onnx_int8.py's node names.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import numpy as np

from toolchain import interrupts
from toolchain.errors import UserError


TOP_LEVEL = "(top level)"  # a unit too: the operations the model's own forward runs outside any submodule (x * scale)


def _top_level_of(unit: str) -> str | None:
    """The module whose own forward ``unit`` names (TOP_LEVEL: the model, "" ; ``wrapped.`` + TOP_LEVEL: the model inside
    a layout wrapper), or None for a submodule's name."""
    if unit == TOP_LEVEL:
        return ""
    return unit[: -len(TOP_LEVEL) - 1] if unit.endswith("." + TOP_LEVEL) else None


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
    with interrupts.uninterrupted_import():
        from litert_torch.quantize import pt2e_quantizer as pq
        from litert_torch.quantize.pt2e_quantizer_utils import propagate_annotation

    keep = tuple(float_modules)

    class FloatFallbackQuantizer(pq.PT2EQuantizer):
        def __init__(self):
            super().__init__()
            self.float_modules = keep

        def annotate(self, model):
            if not self.float_modules:
                return super().annotate(model)
            model = self._annotate_for_static_quantization_config(model)
            for node in model.graph.nodes:
                names = _module_names(node)
                innermost = names[-1] if names else None
                if any(innermost == _top_level_of(m) if _top_level_of(m) is not None else
                       any(n == m or n.startswith(m + ".") for n in names) for m in self.float_modules):
                    node.meta.pop("quantization_annotation", None)
            propagate_annotation(model)
            return model

    q = FloatFallbackQuantizer()
    q.set_global(pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    return q


def quantizable_modules(model, example_input=None) -> list[str]:
    """Names of Conv/Linear submodules in definition order: candidates for ``float_modules``. With ``example_input``, in
    front of them what scales the input before any of them sees it, where that is not one of them: the model's own
    forward (``TOP_LEVEL``: ``self.body(x * self.scale)``) or a submodule without a Conv/Linear of its own (a
    ``Normalize``). Quantized, it rounds the input on one scale and erases the features whose scale is small: the file
    answers one class for every row (the TFLite twin of export.onnx_int8.quantizable_nodes's input arithmetic)."""
    from torch import nn

    layers = (nn.Conv1d, nn.Conv2d, nn.Linear)
    names = [n for n, m in model.named_modules() if isinstance(m, layers)]
    first = _first_reader(model, example_input, layers) if example_input is not None else None
    if first is not None and first not in names:
        names.insert(0, first)
    return names


def _first_reader(model, example_input, layers: tuple) -> str | None:
    """What first works on the input: the first submodule called (TOP_LEVEL where it is not handed the input itself), or
    None where that is one of ``layers`` or contains one, or the forward fails."""
    import torch

    from toolchain.models.modes import evaluating

    x = example_input.detach().float()[:1]
    calls: list[tuple[str, bool]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: calls.append((name, bool(args) and args[0] is x)))
             for name, m in model.named_modules() if name]
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    except Exception:  # a forward that fails here fails where it matters too, and says so there
        return None
    finally:
        for h in hooks:
            h.remove()
    if not calls:
        return None
    name, handed_the_input = calls[0]
    if not handed_the_input:
        return TOP_LEVEL
    module = model.get_submodule(name)
    return None if any(isinstance(m, layers) for m in module.modules()) else name


def thin_input_modules(model, example_input, max_channels: int = 4) -> list[str]:
    """Conv submodules that read the model's input directly with at most ``max_channels`` input
    channels (an image stem): the TFLite twin of export.onnx_int8.thin_input_convs. XNNPACK's int8
    path runs a 1-channel stem slower than its float one (measured on the Fashion-MNIST CNN), and the stem
    holds a few hundred weights, so keeping it float costs no size to speak of."""
    import torch
    from torch import nn

    from toolchain.models.modes import evaluating

    x = example_input.detach().float()[:1]
    hits: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: hits.append(name) if args and args[0] is x else None)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.in_channels <= max_channels
    ]
    if not hooks:
        return []
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(hits))


def _drop_eval_dropout(graph_module) -> None:
    """Remove the exported graph's dropout nodes of eval mode (``aten.dropout(x, p, train=False)``: identities) before it
    is quantized: with them in it, the full-integer file of a spatial mean -> Dropout -> Linear head agreed with its torch
    model on 28-70% of the rows (the quantized torch graph itself on 99.6%), 98.5% without them."""
    import torch

    aten = torch.ops.aten
    # the in-place variants (``nn.Dropout(inplace=True)``: torchvision's MobileNetV3 and EfficientNet heads) are
    # identities too in eval mode
    dropouts = {aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default,
                aten.feature_alpha_dropout.default, aten.dropout_.default, aten.feature_dropout_.default,
                aten.alpha_dropout_.default, aten.feature_alpha_dropout_.default}
    removed = False
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or node.target not in dropouts:
            continue
        train = node.kwargs.get("train", node.args[2] if len(node.args) > 2 else None)
        if train is False:
            node.replace_all_uses_with(node.args[0])
            graph_module.graph.erase_node(node)
            removed = True
    if removed:
        graph_module.recompile()


def pt2e_int8_module(module, x, calibration_x: np.ndarray, float_modules: Sequence[str]):
    """(module quantized by PT2E and calibrated on ``calibration_x``, its quantizer): what litert-torch's
    ``convert(..., quant_config=QuantConfig(pt2e_quantizer=quantizer))`` turns into a full-integer file.
    x: one sample in the module's own input layout; ``float_modules`` stay float."""
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
    _drop_eval_dropout(graph)  # before the quantizer places its observers: the head's input is observed where it is used
    prepared = prepare_pt2e(graph, quantizer)
    calib = torch.from_numpy(np.ascontiguousarray(calibration_x, dtype=np.float32))
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            prepared(calib[i : i + batch])
    converted = convert_pt2e(prepared, fold_quantize=False)
    with contextlib.suppress(Exception):
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(converted)
    submodules = dict(module.named_modules())
    unknown = [m for m in float_modules if _top_level_of(m) not in submodules and m not in submodules]
    if unknown:
        raise UserError(f"float_modules {unknown} name no submodule: use names from quantizable_modules(model)")
    return converted, quantizer
