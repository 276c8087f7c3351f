"""A .npz --data file: one pool (x, y) split by cwtool, or the splits (x_train, y_train, ...) as given.

Sizes are checked before anything is read (`toolchain.data.npz`); features follow
`features.npz_features`; the file's own class_names fix the labels' names. Large x arrays stored
uncompressed (numpy.savez) are read in place, a batch at a time (`toolchain.data.mapped`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from toolchain.data.assemble import assemble_dataset
from toolchain.data.dataset import Dataset
from toolchain.data.features import npz_features
from toolchain.data.labels import agree_names, check_labels, check_pair, mapping_note
from toolchain.data.npz import read_npz
from toolchain.data.splits import carve_val, split_pool
from toolchain.errors import UserError, one_line
from toolchain.limits import MAX_CLASSES

__all__ = ["SPLIT_KEYS", "X_KEYS", "load_npz", "npz_class_names"]

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
X_KEYS = frozenset({"x", "x_train", "x_val", "x_test"})  # large ones stored uncompressed are read in place


def npz_class_names(arrays: dict[str, np.ndarray], where: str) -> list[str] | None:
    """The class_names array of an npz as a list of str, validated; None when absent."""
    if "class_names" not in arrays:
        return None
    cn = arrays["class_names"]
    if cn.ndim != 1 or cn.dtype.kind not in "USiu" or len(cn) == 0:
        raise UserError(
            f"class_names in {where} must be a 1-D string array: save np.array(names, dtype=str)"
        )
    if len(cn) > MAX_CLASSES:
        raise UserError(
            f"class_names in {where} has {len(cn):,} entries, beyond cwtool's limit of {MAX_CLASSES:,} classes"
        )
    if cn.dtype.kind == "S":
        names = [b.decode("utf-8", "replace") for b in cn.tolist()]
    else:
        names = [str(n) for n in cn.tolist()]
    if len(set(names)) != len(names):
        twice = next(n for n, count in Counter(names).items() if count > 1)  # the first named twice
        raise UserError(f"class_names in {where} has duplicates ('{one_line(twice)[:60]}' at indices "
                        f"{', '.join(str(i) for i, n in enumerate(names) if n == twice)}): give each class a distinct name")
    empty = next((i for i, n in enumerate(names) if not n.strip()), None)
    if empty is not None:  # as --class-names: a report line "class 3 ()" names nothing
        raise UserError(f"class_names in {where} has an empty name at index {empty}: give every class a name")
    return names


def load_npz(path: Path, seed: int, fr: tuple[float, float], given: list[str] | None = None) -> Dataset:
    where = f"'{path}'"
    keys, arrays = read_npz(path, {"x", "y", "class_names", *SPLIT_KEYS}, mappable_keys=X_KEYS)
    names = agree_names(npz_class_names(arrays, where), given, where)

    has_pool = "x" in keys or "y" in keys
    has_splits = any(k in keys for k in SPLIT_KEYS)
    if has_pool and has_splits:
        raise UserError(
            f"{where} has both x/y and x_train/... keys: keep either one pool (x, y) or the splits"
        )
    if has_pool:
        for k in ("x", "y"):
            if k not in keys:
                raise UserError(f"{where} has no '{k}' array: store both x and y (np.savez(f, x=..., y=...))")
        y = check_labels(arrays["y"], "y", where)
        (x,), pre = npz_features(arrays, ["x"], where)
        check_pair(x, y, "x", "y", where)
        del arrays
        splits = split_pool(x, y, seed, fr, names, where)
        if given is not None and "class_names" not in keys:
            pre.note += "; " + mapping_note(given, "numeric labels, named by --class-names")
        return assemble_dataset(path.name, splits, pre, where=where, class_names=names, given_splits=False, seed=seed)
    if not has_splits:
        found = ", ".join(sorted(keys)[:20]) or "none"
        raise UserError(
            f"{where} has none of the expected arrays (found: {found}): store x and y, or "
            "x_train, y_train, x_test, y_test (and optionally x_val, y_val)"
        )
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in keys]
    if ("x_val" in keys) != ("y_val" in keys):
        missing.append("y_val" if "x_val" in keys else "x_val")
    if missing:
        raise UserError(
            f"{where} is missing {', '.join(missing)}: store x_train, y_train, x_test, y_test "
            "(and x_val with y_val, or neither)"
        )
    xkeys = [k for k in ("x_train", "x_val", "x_test") if k in keys]
    yd = {}
    for xk in xkeys:
        yk = "y" + xk[1:]
        yd[yk] = check_labels(arrays[yk], yk, where)
    xs, pre = npz_features(arrays, xkeys, where)
    del arrays
    xd = dict(zip(xkeys, xs))
    for xk in xkeys:
        check_pair(xd[xk], yd["y" + xk[1:]], xk, "y" + xk[1:], where)
    if "x_val" in xd:
        splits = (xd["x_train"], yd["y_train"], xd["x_val"], yd["y_val"], xd["x_test"], yd["y_test"])
    else:
        xtr, ytr, xva, yva = carve_val(xd["x_train"], yd["y_train"], seed, fr[0], names, where)
        splits = (xtr, ytr, xva, yva, xd["x_test"], yd["y_test"])
        pre.note += "; validation carved from x_train"
    if given is not None and "class_names" not in keys:
        pre.note += "; " + mapping_note(given, "numeric labels, named by --class-names")
    return assemble_dataset(path.name, splits, pre, where=where, class_names=names, given_splits=True, seed=seed,
                            val_from_train="x_val" not in xd)
