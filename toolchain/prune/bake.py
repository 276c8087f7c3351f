"""Bake the operating-point offsets into the classifier's bias, so every exported file carries them."""

from __future__ import annotations

import torch
from torch import nn


def bake_offsets(model: nn.Module, offsets: dict[int, float], example: torch.Tensor) -> nn.Module:
    """Add offsets[k] to the bias of output k of the layer that produces the logits (in place).

    The classifier is the last Linear/Conv whose outputs are the classes, found by a probe, never assumed: the
    offset classes' biases are raised by a step far above float32's rounding at these logits, and the logits must
    move by that step in exactly those classes (up to one constant per row, which a log_softmax after the classifier
    adds). The bias is then restored and the offsets added."""
    if not any(offsets.values()):
        return model
    model.eval()
    with torch.no_grad():
        before = model(example).float()
    num_classes = before.shape[1]
    scale = float(before.abs().max())
    step = max(1.0, 1e-3 * scale)  # rounding is about 1e-7 of the logits: the step stands ~1000 tolerances above it
    atol = max(1e-4, 16 * torch.finfo(torch.float32).eps * (scale + step))
    classes = [k for k, v in offsets.items() if v]
    candidates = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
                  or isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes]
    for layer in reversed(candidates):
        added = layer.bias is None  # a bias-less classifier gets one to hold the offsets (the checkpoint loader expects it)
        if added:
            layer.bias = nn.Parameter(torch.zeros(num_classes, device=layer.weight.device, dtype=layer.weight.dtype))
        saved = layer.bias.detach().clone()
        probe = torch.zeros_like(saved)
        probe[classes] = step
        with torch.no_grad():
            layer.bias.add_(probe)
            moved = model(example).float() - before
            layer.bias.copy_(saved)  # exactly as it was: b + step - step is not b in floating point
        gap = moved - probe.to(moved.device, moved.dtype)
        if torch.allclose(gap, gap[:, :1].expand_as(gap), atol=atol):
            delta = torch.zeros_like(saved)
            for k, v in offsets.items():
                delta[k] = v
            with torch.no_grad():
                layer.bias.add_(delta)
            return model
        if added:  # not the classifier: left as it was
            layer.bias = None
    raise ValueError("could not find the layer that produces the logits to bake the operating-point offsets into")
