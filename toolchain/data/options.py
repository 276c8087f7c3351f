"""Data flags as the command line gives them (text) -> what `load_data` takes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from toolchain.data.samples import Reshaped
from toolchain.errors import UserError

MAX_SIDE = 16384


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``--image-size 224`` or ``224x160`` (height x width) -> (224, 224) / (224, 160)."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*([0-9]+)\s*(?:[xX]\s*([0-9]+))?\s*", str(text))
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
    parts = re.split(r"\s*[,xX]\s*|\s+", str(text).strip())  # an empty part ("1,2,x", "1,,2") is a typo, not a size
    if not parts or len(parts) > 4 or not all(re.fullmatch(r"[0-9]+", p) and 0 < int(p) <= MAX_SIDE for p in parts):
        raise UserError(f"--input-shape '{text}' is not 1 to 4 sizes from 1 to {MAX_SIDE:,}: give e.g. 1,28,28 (channels, "
                        "height, width)")
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
    if not isinstance(x, np.ndarray):  # rows read on demand: reshaped as they are read
        return Reshaped(x, tuple(shape))
    return x.reshape(len(x), *shape)


COLORS = {"rgb": "RGB", "gray": "L", "grey": "L"}


def parse_color(text: str | None) -> str | None:
    """``--color``: auto (None: gray when every image is gray, else RGB), rgb or gray -> None / "RGB" / "L"."""
    word = "auto" if text is None else str(text).strip().lower()
    if word == "auto":
        return None
    if word not in COLORS:
        raise UserError(f"--color '{text}' is not auto, rgb or gray")
    return COLORS[word]


def parse_normalize(text: str | None):
    """``--normalize``: auto, none, imagenet, or MEAN[,MEAN..]:STD[,STD..] (per channel, of pixels scaled to 0..1)
    -> "auto" / "none" / "imagenet" / (means, stds)."""
    if text is None:
        return "auto"
    word = str(text).strip().lower()
    if word in ("auto", "none", "imagenet"):
        return word
    parts = word.split(":")
    try:
        mean, std = ([float(v) for v in p.split(",")] for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        mean = std = None
    if not mean or not std or len(mean) != len(std) or not all(map(math.isfinite, mean + std)) or min(std) <= 0:
        raise UserError(f"--normalize '{text}' is not auto, none, imagenet or MEAN,..:STD,.. (one positive std per mean): "
                        "give e.g. imagenet or 0.5,0.5,0.5:0.25,0.25,0.25")
    if max(map(abs, mean)) > 1e6 or min(std) < 1e-6 or max(std) > 1e6:  # the normalized pixels would not fit float32
        raise UserError(f"--normalize '{text}': the means and stds are of pixels scaled to 0..1, so means within +-1e6 and stds "
                        "from 1e-6 to 1e6 (others make pixels that float32 cannot hold): give e.g. 0.5:0.25")
    return tuple(mean), tuple(std)


def parse_augment(text: str | None):
    """``--augment``: none, or crop and/or flip (comma-separated) -> None or a `dataset.Augment`."""
    from toolchain.data.dataset import Augment

    parts = [w.strip().lower() for w in str("none" if text is None else text).split(",")]
    words = set(parts)
    if words == {"none"}:
        return None
    if "" in words or not words <= {"crop", "flip"}:  # "crop," or "," is a typo, not "none"
        raise UserError(f"--augment '{text}' is not none, crop, flip or crop,flip: give e.g. crop,flip")
    return Augment(crop_scale=(0.25, 1.0) if "crop" in words else None, flip="flip" in words)


def verify_row_flags(request, class_names: list[str] | None = None) -> list[str]:
    """The flags that prepared ``request``'s rows (a compress or export request), as `cwtool verify` takes them: the
    re-check command a report prints runs as printed (the normalization verify reads from the files themselves).
    ``class_names``: the run's, named where its --test folder or CSV is re-checked (one without a class's folder or rows
    reads the others in another order, and verify refuses it)."""
    flags = []
    if request.image_size:
        flags += ["--image-size", "x".join(map(str, request.image_size))]
    if request.resize:
        flags += ["--resize", str(request.resize)]
    if request.color:
        flags += ["--color", {"RGB": "rgb", "L": "gray"}.get(request.color, str(request.color))]
    if request.input_shape:
        flags += ["--input-shape", ",".join(map(str, request.input_shape))]
    if request.label_column and (not request.test or str(request.test).strip().lower().endswith(".csv")):
        flags += ["--label-column", str(request.label_column)]  # a --test CSV is read with it too (verify refused it without)
    if request.class_names:
        names = request.class_names if isinstance(request.class_names, str) else ",".join(request.class_names)
        flags += ["--class-names", names]
    elif request.test and class_names and not any("," in str(n) for n in class_names) and (
            Path(str(request.test)).is_dir() or class_names != [str(i) for i in range(len(class_names))]):
        flags += ["--class-names", ",".join(map(str, class_names))]  # folders named 1..9 too: a folder's names are text
    return flags


def data_found_anywhere(spec: str) -> str:
    """``--data`` as a command run from another folder finds it: a path made absolute, a data set's name as it is."""
    from pathlib import Path

    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec
