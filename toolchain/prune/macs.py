"""Multiply-accumulates of a model after a channel plan, without building the smaller model.

`toolchain.models.profile.count_macs` counts with Torch-Pruning's op counter on a real model. A plan
search asks that question a dozen times a round; shrinking a copy each time costs a dependency graph
per question. Channel removal leaves every output's spatial size alone, so each layer's count is a
fixed multiple of its channel counts: measured once per layer on the model as it is, then rescaled by
the parameter shapes a plan leaves. Conv and Linear layers scale with their weights (and bias) and
normalization layers with their channels; parameterless layers (activations, pooling) with the
channels of the last layer before them in execution order that produces as many channels as they see.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from toolchain.models.modes import evaluating

_PARAMETRIC = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


class MacModel:
    def __init__(self, model: nn.Module, example_input: Any):
        import torch_pruning as tp

        with torch.no_grad():
            total, _, per_layer, _ = tp.utils.count_ops_and_params(model, example_input, layer_wise=True)
        names = {m: n for n, m in model.named_modules()}
        batch = int(example_input.shape[0]) if isinstance(example_input, torch.Tensor) else 1
        # (kind, name, count, bias part of the count, output dim of the weight): "weighted" layers scale with their
        # weight (and the bias part with its output channels), "channels" ones with a parameter's first dim, "fixed" not
        self.layers: list[tuple[str, str, float, float, int]] = []
        seen_channels = self._execution(model, example_input)
        for m, flops in per_layer.items():
            if not flops or m not in names or any(True for _ in m.children()):
                continue
            name, flops = names[m], flops / batch
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                out_dim = 1 if getattr(m, "transposed", False) else 0
                bias = (seen_channels[name]["bias_flops"] / batch) if m.bias is not None else 0.0
                self.layers.append(("weighted", name, flops - bias, bias, out_dim))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                self.layers.append(("channels", f"{name}.weight", flops, 0.0, 0))
            else:
                source = seen_channels.get(name, {}).get("source")
                self.layers.append(("channels", source, flops, 0.0, 0) if source else ("fixed", name, flops, 0.0, 0))
        self.total = float(total)

    @staticmethod
    def _execution(model: nn.Module, example_input: Any) -> dict[str, dict]:
        """One forward pass: for each layer, the bias part of its count (conv: output positions x out
        channels; linear: out features) and, for parameterless layers, the parameter tensor whose first
        dim produced the channels they see."""
        names = {m: n for n, m in model.named_modules()}
        info: dict[str, dict] = {}
        producers: list[tuple[str, int]] = []  # (parameter name of the channel dim, channels), in execution order
        hooks = []

        def hook(m, inputs, output):
            name = names[m]
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            if isinstance(m, nn.modules.conv._ConvNd):
                info[name] = {"bias_flops": float(output.numel())}
                producers.append((f"{name}.weight", int(m.out_channels)))
            elif isinstance(m, nn.Linear):
                info[name] = {"bias_flops": float(m.out_features)}
                producers.append((f"{name}.weight", int(m.out_features)))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                producers.append((f"{name}.weight", int(m.num_features)))
            elif x is not None and x.dim() >= 2:
                channels = int(x.shape[1])
                source = next((p for p, c in reversed(producers) if c == channels), None)
                info[name] = {"source": source}

        for m in model.modules():
            if not any(True for _ in m.children()):
                hooks.append(m.register_forward_hook(hook))
        try:
            with evaluating(model), torch.no_grad():
                model(example_input)
        finally:
            for h in hooks:
                h.remove()
        return info

    def count(self, before: dict[str, tuple], after: dict[str, list]) -> int:
        """MACs once every parameter has the shape in ``after`` (``before``: the shapes measured)."""
        total = self.total
        for kind, name, flops, bias, out_dim in self.layers:
            if kind == "weighted":
                weight = f"{name}.weight"
                total += flops * (math.prod(after[weight]) / math.prod(before[weight]) - 1)
                total += bias * (after[weight][out_dim] / before[weight][out_dim] - 1)
            elif kind == "channels" and name in before:
                total += flops * (after[name][0] / before[name][0] - 1)
        return int(round(total))
