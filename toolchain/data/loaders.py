"""Turn a ``--data`` spec into a `Dataset`.

Specs: ``digits``, ``breast-cancer`` (bundled with scikit-learn), ``fashion-mnist`` (the Debian
package ``dataset-fashion-mnist``), a ``.npz`` file, a ``.csv`` file, a folder of MNIST-format
idx files, or an ImageFolder-layout folder (one sub-folder per class).

This module only picks the source: each kind has its own module in `toolchain.data.sources`, and
they share the label, feature, split and assembly rules (`labels`, `features`, `splits`,
`assemble`). Only numpy is imported at module level: scikit-learn and Pillow are imported by the
sources that need them, so `cwtool verify` on a device can read an .npz with numpy alone. Every
problem with the user's data is raised as a one-line `UserError`.

Nothing in a data file is trusted (see `toolchain.limits`):
  * labels must be class indices below MAX_CLASSES (100,000); class-name lists at most that long;
  * declared sizes (.npy headers, zip members, idx headers, image dimensions) are checked against
    the memory available before anything is allocated, and every large array a loader builds
    (float32 features, split copies, the ImageFolder tensor) is checked the same way;
  * CSV lines longer than MAX_CSV_LINE characters and string labels longer than
    MAX_LABEL_CHARS are refused.

Preprocessing rules (recorded in `Preprocessing.note`, which the CLI prints):
  * .npz: uint8 images ((N,H,W), (N,C,H,W), (N,H,W,C)) are scaled by 1/255; every other integer
    array is kept as stored and cast to float32 (no scaling: tabular ages, counts, 0-16 digits,
    16-bit images); floats are kept (float64 -> float32); booleans become 0/1.
  * idx folders and ImageFolder hold 8-bit images: scaled by 1/255.
  * ImageFolder: every image must have the same size unless ``image_size`` is given, which
    resizes all of them (bilinear); 16-bit and float images are refused.
  * String labels (CSV label column, ImageFolder folder names) are numbered alphabetically
    unless ``class_names`` gives the order; the mapping is in the note and `Dataset.label_mapping`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from toolchain.data.dataset import Dataset
from toolchain.data.labels import given_names
from toolchain.data.options import reshaped
from toolchain.data.sources import KNOWN_SOURCES, NAMED_SETS
from toolchain.data.sources.csv_file import load_csv
from toolchain.data.sources.idx_folder import find_idx_files, load_idx_folder
from toolchain.data.sources.image_folder import load_image_folder
from toolchain.data.sources.named import load_breast_cancer, load_digits, load_fashion_mnist
from toolchain.data.sources.npz_file import load_npz
from toolchain.errors import UserError, one_line
from toolchain.input_paths import absent, user_path

__all__ = ["load_data"]


def load_data(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    label_column: str | None = None,
    image_size: tuple[int, int] | None = None,
    class_names: list[str] | None = None,
    input_shape: tuple[int, ...] | None = None,
    resize: int | None = None,
    normalize: str | tuple | None = None,
    color: str | None = None,
    min_classes: int = 2,
    small_classes_ok: bool = False,
) -> Dataset:
    """Load the dataset named by ``spec`` with train/val/test splits.

    One pool of samples (digits, breast-cancer, .npz with x/y, CSV, ImageFolder) is split
    stratified with ``seed`` into ``1 - val - test`` / ``val_fraction`` / ``test_fraction``.
    Sources with their own test split (.npz with x_train..., idx folders) keep it; when they have
    no validation split, ``val_fraction`` of their train split is carved off (seeded, stratified).
    ``label_column`` (a column name) applies to CSV only. ``image_size`` (height, width) applies
    to ImageFolder only: every image is resized to it (bilinear); without it all images must have
    the same size.

    ``class_names`` (one distinct name per class, in label order):
      * string labels (CSV label column, ImageFolder folder names) get their index in this list
        (a label missing from it is an error); without it they are numbered alphabetically;
      * numeric labels (CSV, .npz, idx, digits) are class indices: the list names them and must
        cover the largest label;
      * a source that stores its own names (.npz class_names, breast-cancer) must agree with it.

    ``input_shape`` gives flat rows the shape of one sample for the model (--input-shape).

    ``resize`` (the shorter side, center-cropped to ``image_size``) and ``normalize`` ("auto", "none",
    "imagenet" or (mean, std) per channel) and ``color`` (None: as the images are; "RGB" or "L": every image read so)
    apply to ImageFolder only (`sources.image_folder`). ``min_classes`` 1: an ImageFolder of one class folder is rows to judge
    (a device's check of the protected class alone), not data to train on. ``small_classes_ok``: a CSV or ImageFolder to
    be judged whole may hold a class of fewer than 3 rows (its splits, which nothing uses then, need not hold every class).
    """
    images = (resize, normalize, color)
    dataset = _load(spec, seed, val_fraction, test_fraction, label_column, image_size, class_names, images, min_classes,
                    small_classes_ok)
    if input_shape is None:
        return dataset
    from dataclasses import replace

    splits = {f"x_{s}": reshaped(getattr(dataset, f"x_{s}"), input_shape, dataset.name) for s in ("train", "val", "test")}
    note = f"{dataset.preprocessing.note}; samples reshaped to {tuple(input_shape)} (--input-shape)"
    layout = "NCHW" if len(input_shape) == 3 else dataset.preprocessing.layout
    return replace(dataset, **splits, preprocessing=replace(dataset.preprocessing, note=note, layout=layout))


def is_image_folder(spec) -> bool:
    """Whether --data ``spec`` is read as an ImageFolder (a folder, not of idx files): what the image flags apply to."""
    path = user_path(str(spec).strip())
    return path.is_dir() and not find_idx_files(path)


def _load(spec, seed, val_fraction, test_fraction, label_column, image_size, class_names, images, min_classes=2,
          small_classes_ok=False) -> Dataset:
    spec = str(spec).strip()
    _check_fractions(val_fraction, test_fraction)
    fr = (val_fraction, test_fraction)
    given = given_names(class_names)
    is_csv = spec.lower().endswith(".csv")
    if label_column is not None and not is_csv:
        raise UserError(
            f"--label-column only applies to a .csv file, not to --data '{spec}': drop it"
        )
    path = user_path(spec)
    if spec in NAMED_SETS and path.is_dir():  # read as the bundled set, the folder's images and flags were ignored
        raise UserError(f"--data '{spec}' names both the bundled data set and the folder '{spec}' here: give './{spec}' for the "
                        f"folder, or run where no folder '{spec}' is for the bundled set")
    if not path.exists() and spec not in NAMED_SETS:  # a mistyped path is the news, not the flags that only fit a folder
        if path.is_symlink():
            raise UserError(f"--data '{spec}' is a link to nothing ('{one_line(os.readlink(path))[:200]}'): give the data it was "
                            "meant to point to")
        if path.suffix.lower() in (".npz", ".csv"):
            _existing_file(path, spec)
        import difflib

        close = difflib.get_close_matches(spec.strip().lower(), NAMED_SETS, n=1, cutoff=0.75)  # --data digitz
        meant = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown --data '{spec}'{meant} (no such file or folder): {KNOWN_SOURCES}")
    if not is_image_folder(path):
        for flag, value in zip(("--image-size", "--resize", "--normalize", "--color"), (image_size, *images)):
            if value not in (None, "auto"):
                raise UserError(f"{flag} only applies to an ImageFolder folder, not to --data '{spec}': drop it")
    if spec == "digits":
        return load_digits(seed, fr, given)
    if spec == "breast-cancer":
        return load_breast_cancer(seed, fr, given)
    if spec == "fashion-mnist":
        return load_fashion_mnist(seed, val_fraction, given)

    lower = path.name.lower()
    if lower.endswith(".npz"):
        return load_npz(_existing_file(path, spec), seed, fr, given)
    if is_csv:
        return load_csv(_existing_file(path, spec), seed, fr, label_column, given, min_classes=min_classes,
                        small_classes_ok=small_classes_ok)
    if path.is_dir():
        if find_idx_files(path):
            return load_idx_folder(path, seed, val_fraction, name=path.resolve().name, given=given)
        return load_image_folder(path, seed, fr, image_size, given, *images, min_classes=min_classes,
                                 small_classes_ok=small_classes_ok)
    if path.exists() and not path.is_file():  # a pipe from `<(...)`, a device: read more than once, so never a stream
        raise UserError(f"--data '{spec}' is a pipe or device, not a file: save it to a .npz or .csv file first")
    if path.exists():
        raise UserError(f"unknown --data '{spec}' (not a .npz or .csv file): {KNOWN_SOURCES}")
    raise UserError(f"unknown --data '{spec}' (no such file or folder): {KNOWN_SOURCES}")


def _check_fractions(val: float, test: float) -> None:
    for name, v in (("validation", val), ("test", test)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
            raise UserError(f"{name} fraction {v!r} is out of range: give a number between 0 and 1")
    if val + test >= 1:
        raise UserError(
            f"validation fraction {val} + test fraction {test} leave nothing to train on: "
            "make their sum less than 1"
        )


def _existing_file(path: Path, spec: str) -> Path:
    if not path.exists():
        raise UserError(f"--data file '{spec}' {absent(spec)}: check the path")
    if not path.is_file():
        raise UserError(f"--data '{spec}' is not a file (a folder, pipe or device): give a .npz or .csv file")
    return path
