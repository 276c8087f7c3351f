"""Every row of an x/y-only .npz, in file order -- numpy only, for `cwtool verify`.

`load_data` splits such a file into train/val/test (shuffled, and it refuses classes too small
to split). verify wants the opposite: each row once, in the order stored, so that per-sample
predictions line up with a baseline computed on the same file. The samples get exactly the
preprocessing `load_data` gives them (the same helper converts them).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from toolchain.data.loaders import SPLIT_KEYS, _check_pair, _labels, _npz_features
from toolchain.errors import UserError

__all__ = ["is_pool_npz", "load_rows"]


def is_pool_npz(spec: str) -> bool:
    """True when `spec` is an existing .npz holding one pool (x, y) and no given splits."""
    path = Path(str(spec)).expanduser()
    if not path.name.lower().endswith(".npz") or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
    except Exception:  # unreadable: let load_data report it in its own words
        return False
    return "x" in keys and "y" in keys and not keys & set(SPLIT_KEYS)


def load_rows(spec: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(x float32 in dataset layout, y int64, class names or None) of an x/y .npz, in file order."""
    path = Path(str(spec)).expanduser()
    where = f"'{path}'"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x", "y", "class_names") if k in z.files}
    except ValueError as exc:
        raise UserError(f"cannot read {where} as .npz ({exc}): save numeric arrays with numpy.savez(file, x=..., y=...)") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise UserError(f"cannot read {where} as .npz ({exc or type(exc).__name__}): check the file") from None
    for k in ("x", "y"):
        if k not in arrays:
            raise UserError(f"{where} has no '{k}' array: store both x and y (np.savez(f, x=..., y=...))")
    (x,), _ = _npz_features(arrays, ["x"], where)
    y = _labels(arrays["y"], "y", where)
    _check_pair(x, y, "x", "y", where)
    names = None
    cn = arrays.get("class_names")
    if cn is not None:
        if cn.ndim != 1 or cn.dtype.kind not in "USiu" or len(cn) == 0:
            raise UserError(f"class_names in {where} must be a 1-D string array: save np.array(names, dtype=str)")
        names = [str(n) for n in cn.tolist()]
    return x, y, names
