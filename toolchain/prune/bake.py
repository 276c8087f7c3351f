"""Bake the operating-point offsets into the classifier's bias, so every exported file carries them."""

from __future__ import annotations

import torch
from torch import nn


def bake_offsets(model: nn.Module, offsets: dict[int, float], example: torch.Tensor) -> nn.Module:
    """Add offsets[k] to the bias of output k of the layer that produces the logits (in place).

    The classifier is the last Linear/Conv whose outputs are the classes; the result is checked
    by a forward pass (logits must move by exactly the offsets), never assumed."""
    if not any(offsets.values()):
        return model
    model.eval()
    with torch.no_grad():
        before = model(example).float()
    num_classes = before.shape[1]
    candidates = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
                  or isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes]
    for layer in reversed(candidates):
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(num_classes, device=layer.weight.device, dtype=layer.weight.dtype))
        delta = torch.zeros_like(layer.bias)
        for k, v in offsets.items():
            delta[k] = v
        with torch.no_grad():
            layer.bias.add_(delta)
            moved = model(example).float() - before
        expected = torch.zeros(num_classes, device=moved.device)
        for k, v in offsets.items():
            expected[k] = v
        gap = moved - expected
        # Equal up to a per-row constant: a log_softmax after the classifier shifts every logit alike. The tolerance
        # grows with the logits: float32 holds a logit of 1e4 to about 1e-3.
        atol = max(1e-4, 64 * torch.finfo(torch.float32).eps * float(before.abs().max()))
        if torch.allclose(gap, gap[:, :1].expand_as(gap), atol=atol):
            return model
        with torch.no_grad():
            layer.bias.sub_(delta)
    raise ValueError("could not find the layer that produces the logits to bake the operating-point offsets into")
