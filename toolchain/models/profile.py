"""Model size and cost: parameter count, multiply-accumulates, fp32 bytes."""

from __future__ import annotations

from typing import Any

from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: Any) -> int:
    """Multiply-accumulates per sample of a forward pass on ``example_input`` (Torch-Pruning's op counter
    averages over the batch; it counts on a deep copy in eval mode, so the model is left untouched)."""
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        macs, _ = tp.utils.count_ops_and_params(model, example_input)
    return int(macs)


def model_bytes_fp32(model: nn.Module) -> int:
    """Bytes of the model's parameters and floating-point buffers (e.g. BN running stats) stored as fp32."""
    n = count_params(model)
    n += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return 4 * n
