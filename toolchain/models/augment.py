"""Batch augmentation for retraining: random shifts (zero padding) and optional horizontal flips.

Label-preserving for most image classifiers; flips are not (digits, text, anatomy with a side), so
they are a separate kind. Used with distillation, the teacher sees the same augmented batch
("consistent teaching"), so the student matches the dense model's function on more inputs.
"""

from __future__ import annotations

import torch

KINDS = ("none", "shift", "shift-flip")


def shift_flip(x: torch.Tensor, generator: torch.Generator, shift: int = 2, flip: bool = False) -> torch.Tensor:
    """Each NCHW image moved by up to ``shift`` pixels in each direction (vacated pixels 0), and mirrored
    left-right with probability 1/2 when ``flip``. Draws come from ``generator`` (CPU), so runs repeat."""
    if x.dim() != 4 or (shift <= 0 and not flip):
        return x
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None].expand(b, h, w)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :].expand(b, h, w)
    if flip:
        mirrored = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        cols = torch.where(mirrored[:, None, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None].expand(b, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def augmenter(kind: str, shift: int = 2):
    """``kind`` from KINDS -> ``f(x, generator)`` or None for "none"."""
    if kind not in KINDS:
        raise ValueError(f"augment must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "none":
        return None
    return lambda x, generator: shift_flip(x, generator, shift=shift, flip=kind == "shift-flip")
