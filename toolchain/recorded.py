"""What an exported file records of the data it was made for (compress and export write its class names and
preprocessing into ONNX metadata_props or the TFLite sidecar), read as untrusted values, and the checks of --data and
a baseline against it: the class numbering a gate judges by, and the preprocessing the rows get."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError, one_line, unprintable_in
from toolchain.data.labels import declared_names


PREPROCESSING_STEPS = ("color", "resize", "crop", "scale", "mean", "std")
IMAGE_FILE_STEPS = ("color", "resize", "crop")  # only where cwtool decoded image files: arrays come prepared
# what a refusal of image files says where the flags a model's or a file's record holds would have prepared them otherwise
PREPARATION_WORDS = ("differ in size", "--image-size", "--resize", "--normalize", "--color")

def recorded_value(runner, key: str):
    """The value an artifact records under ``key`` (ONNX metadata_props hold JSON text, a TFLite sidecar the value), or
    None: an edited file's text that is not JSON, or nested too deep to read, records nothing."""
    value = (getattr(runner, "metadata", None) or {}).get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


def column_mismatch(runner, rows: dict) -> str | None:
    """Where the artifact records the feature columns it was made for (a CSV's) and the rows of --data have others, or
    the same in another order, the refusal: features are read by position, and a gate that passed such rows (a note
    had said so) judged a model fed the wrong features."""
    from toolchain.data.identity import column_differences

    recorded = recorded_value(runner, "preprocessing")
    here = rows.get("preprocessing")
    columns = column_differences(recorded, here) if isinstance(recorded, dict) and isinstance(here, dict) else None
    if columns is None:
        return None
    return (f"{Path(runner.path).name} was made for rows of other feature columns ({columns}): features are read by "
            "position; give --data the columns it was made for, in their order")


def preprocessing_mismatch(runner, rows: dict) -> str | None:
    """A note when the artifact records (ONNX metadata_props or TFLite sidecar, written by compress and export)
    preprocessing other than the rows of --data got: the file was made for inputs prepared another way."""
    from toolchain.data.identity import as_recorded_size, step_words

    recorded = recorded_value(runner, "preprocessing")
    here = rows.get("preprocessing")
    if not isinstance(recorded, dict) or not isinstance(here, dict):
        return None
    shape = runner.dataset_sample_shape() if hasattr(runner, "dataset_sample_shape") else None
    here = as_recorded_size(recorded, here, shape)  # verify's advice for other-size images
    sides, x = list(shape[-2:]) if shape is not None and len(shape) == 3 else None, rows.get("x")
    if sides and recorded.get("resize") == sides and not recorded.get("crop") and not here.get("resize") \
            and not here.get("crop") and x is not None and list(np.shape(x)[-2:]) == sides:
        here = {**here, "resize": sides, "crop": []}  # images of its size, not resized: what a resize to its size gives
    steps = [k for k in PREPROCESSING_STEPS if here.get("color") or k not in IMAGE_FILE_STEPS]
    differ = [k for k in steps if k in recorded and recorded[k] != here.get(k)]
    if not differ:
        return None
    shown = ", ".join(f"{k} {step_words(recorded[k])} there, {step_words(here.get(k))} here" for k in differ)
    name = getattr(runner, 'shown_name', None) or Path(runner.path).name
    if here.get("color") and not recorded.get("color"):  # no image flag scales image files as its arrays were
        return (f"{name} was made for rows given as arrays, not image files, and prepared otherwise ({shown}): give --data "
                "rows prepared as its training's were (an .npz of them), or its FN here mean little")
    return (f"{name} was made for inputs preprocessed otherwise ({shown}): give --data the same "
            "--image-size, --resize and --normalize as when it was exported, or its FN here mean little")


def recorded_class_names(runner, k: int, placeholders: bool = False) -> list[str] | None:
    """The class names an artifact records (compress and export write them), when they are k printable names declared by
    its data (``placeholders``: also '0'..'k-1'); an edited file's other values are ignored."""
    value = recorded_value(runner, "class_names")
    if not (isinstance(value, list) and len(value) == k and all(isinstance(n, str) and len(n) <= 1000 for n in value)):
        return None
    if any(unprintable_in(n) is not None for n in value):  # a line break in a name would start a console line ("gate: passed")
        return None
    return list(value) if placeholders else declared_names(value)


def numbers_as_indices(names: list[str]) -> list[str]:
    """``names`` with every whole-number name replaced by its index: "3" naming class 0 in a file's list would make -p 3
    gate class 0 rather than the data's label 3."""
    return [str(i) if n.strip().isdigit() else n for i, n in enumerate(names)]


def _same_names(a: list[str], b: list[str]) -> bool:
    """The same names in the same order; a folder copied by macOS names "café" in another Unicode form: the same name."""
    import unicodedata

    return [unicodedata.normalize("NFC", n) for n in a] == [unicodedata.normalize("NFC", n) for n in b]


def _numbered(names: list[str]) -> str:
    """"cat=0, dog=1, ...": how a list numbers its classes, in a message."""
    return ", ".join(f"{one_line(n)[:40]}={i}" for i, n in enumerate(names[:12]))


def check_class_order(path: str, recorded: list[str] | None, declared: list[str] | None) -> None:
    """Refuse data whose classes are numbered otherwise than the file's: in another order (--class-names restores it), or
    other names altogether (folders x/ and y/ for a file made for a and b: no order mends that)."""
    import unicodedata

    if not (recorded and declared) or _same_names(recorded, declared):
        return
    known = {unicodedata.normalize("NFC", n) for n in recorded}
    others = [n for n in declared if unicodedata.normalize("NFC", n) not in known]
    if others:
        raise UserError(f"{one_line(Path(path).name)} was made for classes numbered {_numbered(recorded)}; --data numbers them "
                        f"{_numbered(declared)}, with {', '.join(one_line(n)[:40] for n in others[:5])} not among them: give "
                        "data labelled with the classes it was made for (folders or labels named as they are)")
    raise UserError(f"{one_line(Path(path).name)} was made for classes numbered {_numbered(recorded)}; --data numbers them "
                    f"{_numbered(declared)}: its FN here would count other classes; give --data the order it was trained in "
                    f"(--class-names {','.join(one_line(n)[:40] for n in recorded[:12])})")


def check_baseline_order(base: dict | None, base_names: list[str] | None, names: list[str] | None, where: str) -> None:
    """A baseline measured under another numbering of the classes (its names in another order than ``where``'s) holds
    every class's FN under another class's index."""
    if base is not None and base_names and names and len(base_names) == len(names) and not _same_names(base_names, names):
        raise UserError(f"baseline {base['path']} numbers the classes {_numbered(base_names)}; {where} numbers them "
                        f"{_numbered(names)}: its FN per class are other classes'; give the baseline measured with these "
                        "classes' numbering")


def color_in(records: list) -> str | None:
    """The color ("L" or "RGB") every preprocessing record names (an artifact's, as recorded_value reads it, or a
    checkpoint's training record's: untrusted values), or None (none recorded, or they differ)."""
    colors = {r.get("color") if isinstance(r, dict) and isinstance(r.get("color"), str) else None for r in records}
    return colors.pop() if len(colors) == 1 and colors <= {"L", "RGB"} else None


def _image_records(records: list) -> list[dict] | None:
    """The records, where each was made from image files (not arrays); else None."""
    return records if all(isinstance(r, dict) and r.get("color") in ("L", "RGB") for r in records) else None


def resizing_in(records: list) -> tuple[int | None, tuple[int, int] | None] | None:
    """How every preprocessing record says its images were sized, as the size flags take it: (--resize, --image-size) --
    (s, (h, w)) for the shorter side resized to s and center-cropped to h x w, (None, (h, w)) for a resize to h x w --
    or None (not recorded alike by all, none recorded, not made from image files, or values those flags would refuse)."""
    found = set()
    for recorded in _image_records(records) or []:  # none, or not all of image files: nothing found, None
        resize, crop = recorded.get("resize"), recorded.get("crop")
        if not (isinstance(resize, list) and isinstance(crop, list)):
            return None
        sides = [v for v in resize + crop if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65_536]
        if len(sides) != len(resize) + len(crop):
            return None
        if len(resize) == 1 and len(crop) == 2 and max(crop) <= resize[0]:
            found.add((resize[0], tuple(crop)))
        elif len(resize) == 2 and not crop:
            found.add((None, tuple(resize)))
        else:  # not resized (images all of one size): nothing for verify to repeat
            return None
    return found.pop() if len(found) == 1 else None


def normalization_in(records: list):
    """The normalization every preprocessing record names -- "none", or (means, stds) as --normalize takes them -- or
    None (none recorded, they differ, or a value --normalize would refuse)."""
    from toolchain.data.options import parse_normalize

    found = set()
    for recorded in _image_records(records) or []:  # none, or not all of image files: nothing found, None
        mean, std = recorded.get("mean"), recorded.get("std")
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) <= 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean + std)):
            return None
        found.add((tuple(mean), tuple(std)))
    if len(found) != 1:
        return None
    mean, std = found.pop()
    if not mean:
        return "none"
    try:
        return parse_normalize(f"{','.join(map(repr, map(float, mean)))}:{','.join(map(repr, map(float, std)))}")
    except UserError:
        return None


@dataclass(frozen=True)
class Preparation:
    """How a folder of images is read: each flag as given, else as the records (the files', or a checkpoint's training
    record) say the model's images were prepared."""

    color: str | None
    normalize: Any  # as applied: --normalize, or what the records say
    resize: int | None
    image_size: tuple[int, int] | None
    normalize_recorded: bool  # taken from the records, not from --normalize: a refusal names the record
    sized_as_recorded: bool  # sized as the records say, not by --resize or --image-size


def prepared_as(records: list, color, normalize, resize, image_size) -> Preparation:
    """The flags given (``normalize`` None or "auto": not given, auto being a guess from the image size), completed from
    preprocessing ``records`` (untrusted; none: the flags as given)."""
    recorded = normalization_in(records) if normalize in (None, "auto") else None
    sizing = resizing_in(records) if resize is None and image_size is None else None
    resize, image_size = sizing or (resize, image_size)
    return Preparation(color or color_in(records), normalize if recorded is None else recorded, resize, image_size,
                       recorded is not None, sizing is not None)


def preparation_notes(prepared: Preparation, sample_shape, whose: str, choosable: bool = True) -> list[str]:
    """What the records chose that the flags and the images' own size would not have (for samples of ``sample_shape``),
    with the flag that chooses otherwise where ``choosable`` (evaluate and verify; compress and export refuse a
    preparation other than a checkpoint's); ``whose``: who records it ("the artifacts record")."""
    notes = []
    if prepared.sized_as_recorded:
        h, w = prepared.image_size
        notes.append(f"the images were sized as {whose} (" + (f"shorter side resized to {prepared.resize}, center-cropped to "
                     if prepared.resize else "resized to ") + f"{h}x{w})" + (": give --resize or --image-size to choose otherwise"
                                                                             if choosable else ""))
    normalize = prepared.normalize
    if prepared.normalize_recorded and len(sample_shape) == 3 and normalize != auto_normalization(sample_shape):
        notes.append(f"the images were normalized as {whose} (" + ("none" if normalize == "none" else
                     f"mean {list(normalize[0])}, std {list(normalize[1])}") + ")"
                     + (": give --normalize to choose otherwise" if choosable else ""))
    return notes


def auto_normalization(sample_shape):
    """What --normalize auto gives images of ``sample_shape`` (C, H, W), as normalization_in says it ("none" or
    (means, stds))."""
    from toolchain.data.sources.image_folder import normalization_for

    mean, std, _ = normalization_for("auto", int(sample_shape[0]), tuple(sample_shape[1:]))
    return (tuple(mean), tuple(std)) if mean else "none"
