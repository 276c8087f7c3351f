"""Data flags as the command line gives them (text) -> what `load_data` takes."""

from __future__ import annotations

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
