"""Eval (or training) mode for a probe, a trace or a count, with each module's own mode given back after."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def in_mode(model: nn.Module, training: bool):
    """``model`` in training or eval mode inside the block; afterwards every module has the mode it had, not the
    root's: a layer a user froze with ``.eval()`` inside a training model stays frozen."""
    modes = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield model
    finally:
        for m, was in modes.items():
            m.training = was


def evaluating(model: nn.Module):
    """``model`` in eval mode (no batch-norm statistics move, no dropout) inside the block (``in_mode``)."""
    return in_mode(model, False)
