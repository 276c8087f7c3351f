"""Eval mode for a probe, a trace or a count, with each module's own mode given back after."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode (no batch-norm statistics move, no dropout) inside the block; afterwards every module has
    the mode it had, not the root's: a layer a user froze with ``.eval()`` inside a training model stays frozen."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training
