"""A folder of the four MNIST-format idx files (train/t10k images and labels, plain or .gz).

The t10k files are the test split; validation is carved from train. 8-bit images are scaled by
1/255; Fashion-MNIST (installed, or a copy of it named so) gets its class names, any other folder numbers
(--class-names names them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.data.assemble import assemble_dataset
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.idx import IdxError, read_idx
from toolchain.data.labels import check_labels, check_pair, mapping_note
from toolchain.data.splits import carve_val
from toolchain.errors import UserError
from toolchain.limits import check_fits

__all__ = ["FASHION_MNIST_CLASSES", "find_idx_files", "load_idx_folder"]

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four MNIST idx files in ``folder`` (plain or .gz; '-' or '.' before idx accepted)."""
    if not folder.is_dir():
        return None
    found: dict[str, Path] = {}
    for key, base in _IDX_FILES.items():
        alt = base.replace("-idx", ".idx")
        present = [folder / cand for cand in (base, base + ".gz", alt, alt + ".gz") if (folder / cand).is_file()]
        if len(present) > 1:  # which one is meant is not for cwtool to guess (a gunzip -k leaves both; they may differ)
            raise UserError(f"idx folder '{folder}' holds {' and '.join(p.name for p in present)}: keep one of them")
        if present:
            found[key] = present[0]
    if not found:
        return None
    if len(found) < len(_IDX_FILES):
        missing = [_IDX_FILES[k] for k in _IDX_FILES if k not in found]
        raise UserError(
            f"idx folder '{folder}' lacks {', '.join(missing)} (plain or .gz): "
            "put all four MNIST-format files there"
        )
    return found


def load_idx_folder(
    folder: Path, seed: int, val_fraction: float, *, name: str, given: list[str] | None = None, fashion_mnist: bool = False
) -> Dataset:
    """``fashion_mnist``: the installed Fashion-MNIST, whose classes get their names, as a copy of it does (a folder named
    like it, of its 60,000 and 10,000 28x28 images); any other is named by number (a folder called 'fashion-shoes' holds
    other classes)."""
    files = find_idx_files(folder)
    assert files is not None
    where = f"'{folder}'"
    arrays = {}
    for key, p in files.items():
        try:
            arrays[key] = read_idx(p)
        except IdxError as exc:
            raise UserError(f"'{p}' is not a valid idx file ({exc}): replace it with an intact copy") from None
        except OSError as exc:
            raise UserError(f"cannot read '{p}' ({exc.strerror or exc}): check the file and its permissions") from None
    for key in ("x_train", "x_test"):
        a = arrays[key]
        if a.ndim != 3 or a.dtype != np.uint8:
            raise UserError(
                f"'{files[key].name}' holds {a.dtype} data of shape {a.shape}: "
                "idx images must be unsigned bytes of shape (N, H, W)"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise UserError(
            f"train images are {arrays['x_train'].shape[1:]} but t10k images are "
            f"{arrays['x_test'].shape[1:]} in {where}: use images of one size"
        )
    xs, ys = {}, {}
    for split in ("train", "test"):
        y = check_labels(arrays[f"y_{split}"], files[f"y_{split}"].name, where)
        check_pair(arrays[f"x_{split}"], y, files[f"x_{split}"].name, files[f"y_{split}"].name, where)
        ys[split] = y
    n_values = arrays["x_train"].size + arrays["x_test"].size
    check_fits(4 * n_values, f"the images of {where} as float32 ({n_values:,} values)")
    for split in ("train", "test"):
        raw = arrays.pop(f"x_{split}")
        xs[split] = raw.reshape(raw.shape[0], 1, *raw.shape[1:])  # bytes until split: a quarter of the copying
    top = int(max(ys["train"].max(), ys["test"].max()))
    note = "idx uint8 images scaled by 1/255; validation carved from train"
    if given is not None:
        names = given
        note += "; " + mapping_note(given, "numeric labels, named by --class-names")
    else:
        copy = "fashion" in name.lower() and [x.shape for x in xs.values()] == [(60000, 1, 28, 28), (10000, 1, 28, 28)]
        names = FASHION_MNIST_CLASSES if fashion_mnist or copy else None
        if names is None:
            names = [str(i) for i in range(top + 1)]
        elif top >= len(names):
            names = None  # not really Fashion-MNIST labels: fall back to numbers
    xtr, ytr, xva, yva = carve_val(xs["train"], ys["train"], seed, val_fraction, names, where)
    xtr, xva, xte = (_scaled(x) for x in (xtr, xva, xs.pop("test")))
    pre = Preprocessing(scale=1 / 255, layout="NCHW", note=note)
    return assemble_dataset(
        name, (xtr, ytr, xva, yva, xte, ys["test"]), pre,
        where=where, class_names=names, given_splits=True, seed=seed, val_from_train=True,
    )


def _scaled(raw: np.ndarray) -> np.ndarray:
    x = raw.astype(np.float32)
    x *= np.float32(1 / 255)
    return x
