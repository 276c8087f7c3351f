"""Every row of an x/y-only .npz, in file order -- numpy only, for `cwtool verify`.

`load_data` splits such a file into train/val/test (shuffled, and it refuses classes too small
to split). verify wants the opposite: each row once, in the order stored, so that per-sample
predictions line up with a baseline computed on the same file. The samples get exactly the
preprocessing `load_data` gives them (the same helpers read and convert them, with the same
limits: declared sizes checked against memory before reading, labels below MAX_CLASSES).
"""

from __future__ import annotations

import numpy as np

from toolchain.data.dataset import Preprocessing
from toolchain.data.features import npz_features
from toolchain.data.labels import agree_names, check_labels, check_pair, given_names
from toolchain.data.npz import npz_keys, read_npz
from toolchain.data.sources.npz_file import SPLIT_KEYS, npz_class_names
from toolchain.errors import UserError, one_line
from toolchain.input_paths import user_path

__all__ = ["is_pool_npz", "load_rows", "load_prepared_rows"]


def is_pool_npz(spec: str) -> bool:
    """True when `spec` is an existing .npz holding one pool (x, y) and no given splits."""
    path = user_path(spec)
    if not path.name.lower().endswith(".npz") or not path.is_file():
        return False
    try:
        keys = npz_keys(path)  # the zip directory only
    except UserError:  # unreadable: let load_data report it in its own words
        return False
    return "x" in keys and "y" in keys and not keys & set(SPLIT_KEYS)


def load_rows(
    spec: str, class_names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str] | None, str]:
    """(x float32 in dataset layout, y int64, class names or None, preprocessing note) of an x/y .npz,
    in file order.

    ``class_names`` follows `load_data`'s rule for .npz: it names numeric labels, and must agree
    with the file's own class_names when it has some.
    """
    x, y, names, pre = load_prepared_rows(spec, class_names)
    return x, y, names, pre.note


def load_prepared_rows(
    spec: str, class_names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str] | None, Preprocessing]:
    """``load_rows`` with the whole Preprocessing (its scale says whether x held 8-bit pixels)."""
    path = user_path(spec)
    where = f"'{path}'"
    given = given_names(class_names)
    _keys, arrays = read_npz(path, {"x", "y", "class_names"}, mappable_keys={"x"})
    for k in ("x", "y"):
        if k not in arrays:
            raise UserError(f"{where} has no '{k}' array: store both x and y (np.savez(f, x=..., y=...))")
    names = agree_names(npz_class_names(arrays, where), given, where)
    y = check_labels(arrays["y"], "y", where)
    (x,), pre = npz_features(arrays, ["x"], where)
    check_pair(x, y, "x", "y", where)
    if names is not None and len(y) and int(y.max()) >= len(names):
        raise UserError(
            f"{where} has label {int(y.max())} but only {len(names)} class name{'s' if len(names) != 1 else ''}: "
            "give one name per class index 0..max label"
        )
    return x, y, names if names is None else [one_line(n) for n in names], pre
