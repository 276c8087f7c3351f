"""Multiply-accumulates of a model after a channel plan, without building the smaller model.

`toolchain.models.profile.count_macs` counts them on a real model. A plan search asks that question a dozen
times a round; shrinking a copy each time costs a dependency graph per question. Channel removal leaves
every output's spatial size alone, so a convolution's or linear layer's count is its weight's element count
times a fixed number of positions: measured once per layer on the model as it is, then rescaled by the
weight shapes a plan leaves. What runs outside those layers (a functional matrix product) stays as measured.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from toolchain.models.modes import evaluating


class MacModel:
    def __init__(self, model: nn.Module, example_input: Any):
        from toolchain.models.profile import count_macs

        names = {m: n for n, m in model.named_modules()}
        batch = int(example_input.shape[0]) if isinstance(example_input, torch.Tensor) and example_input.dim() else 1
        positions: dict[str, float] = {}  # weight name -> positions it is applied at, per sample

        def hook(m, inputs, output):
            name = f"{names[m]}.weight"
            if isinstance(m, nn.modules.conv._ConvNd):  # a transposed one is applied at each input position
                at, k = (inputs[0] if m.transposed else output), m.weight.dim() - 2
                rows = at.shape[0] if at.dim() == k + 2 else 1
                positions[name] = positions.get(name, 0.0) + math.prod(at.shape[-k:]) * rows / batch
            elif isinstance(m, nn.Linear):  # on rows, or on a sequence's every position
                positions[name] = positions.get(name, 0.0) + output.numel() / m.out_features / batch

        hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        try:
            with evaluating(model), torch.no_grad():
                model(example_input)
        finally:
            for h in hooks:
                h.remove()
        weights = dict(model.named_parameters())
        # (weight name, positions): a layer's count is its weight's elements times its positions
        self.layers = [(name, at) for name, at in positions.items() if name in weights]
        self.total = float(count_macs(model, example_input))

    def count(self, before: dict[str, tuple], after: dict[str, list]) -> int:
        """MACs once every parameter has the shape in ``after`` (``before``: the shapes measured)."""
        total = self.total
        for name, at in self.layers:
            if name in before:
                total += at * (math.prod(after[name]) - math.prod(before[name]))
        return int(round(total))
