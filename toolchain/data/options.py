"""Data flags as the command line gives them (text) -> what `load_data` takes."""

from __future__ import annotations

import math
import re

from toolchain.errors import UserError

MAX_SIDE = 16384


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``--image-size 224`` or ``224x160`` (height x width) -> (224, 224) / (224, 160)."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", str(text))
    if not found:
        raise UserError(f"--image-size '{text}' is not HEIGHTxWIDTH or one side: give e.g. 224 or 224x160")
    h = int(found.group(1))
    w = int(found.group(2) or h)
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise UserError(f"--image-size '{text}' is out of range: give sides from 1 to {MAX_SIDE}")
    return h, w


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``--input-shape 1,28,28`` (or 1x28x28): the shape one sample of flat rows has for the model."""
    if text is None:
        return None
    parts = [p for p in re.split(r"[,x\s]+", str(text).strip()) if p]
    if not parts or len(parts) > 4 or not all(p.isdigit() and 0 < int(p) <= MAX_SIDE for p in parts):
        raise UserError(f"--input-shape '{text}' is not 1 to 4 positive sizes: give e.g. 1,28,28 (channels, height, width)")
    return tuple(int(p) for p in parts)


def reshaped(x, shape: tuple[int, ...] | None, where: str):
    """Rows of ``x`` as samples of ``shape`` (C-order, as numpy reshapes): flat rows from a CSV or .npz fed
    to an image model. The sizes must agree exactly."""
    if shape is None:
        return x
    have = tuple(x.shape[1:])
    if math.prod(have) != math.prod(shape):
        raise UserError(f"--input-shape {','.join(map(str, shape))} holds {math.prod(shape):,} values but the samples of {where} "
                        f"have {math.prod(have):,} (shape {have}): give a shape of the same size")
    return x.reshape(len(x), *shape)
