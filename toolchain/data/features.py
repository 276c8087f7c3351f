"""Stored x arrays -> float32 model inputs -- numpy only.

One set of rules wherever samples are read: the .npz source and `rows.load_rows` (what
`cwtool verify` reads) both use `npz_features`, so a row gets the same preprocessing whether
`load_data` split it or verify read it in file order.
"""

from __future__ import annotations

import numpy as np

from toolchain.data.dataset import Preprocessing
from toolchain.errors import UserError
from toolchain.limits import check_fits

__all__ = ["check_finite", "npz_features"]


def check_finite(x: np.ndarray, what: str, where: str) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        n = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise UserError(
            f"{what} in {where} contains {n} NaN or inf value{'s' if n != 1 else ''}: "
            "clean or impute them before loading"
        )


def npz_features(
    arrays: dict[str, np.ndarray], keys: list[str], where: str
) -> tuple[list[np.ndarray], Preprocessing]:
    """Convert the x arrays of an npz to float32 model inputs (all with the same rules).

    uint8 images (ndim >= 3: (N,H,W), (N,C,H,W), (N,H,W,C)) are scaled by 1/255; every other
    integer array (tabular values, counts, 16-bit images...) is kept as stored, cast to float32.
    """
    xs = [np.asarray(arrays[k]) for k in keys]
    kinds = {x.dtype.kind for x in xs}
    for k, x in zip(keys, xs):
        if x.dtype.kind not in "fiub":
            raise UserError(f"{k} in {where} has dtype {x.dtype}: store numbers (float or integer)")
        if x.ndim < 2 or x.ndim > 4:
            raise UserError(
                f"{k} in {where} has shape {x.shape}: store (N, features), (N, H, W) or (N, C, H, W)"
            )
        if x.size == 0:
            raise UserError(f"{k} in {where} is empty (shape {x.shape}): store at least one sample per class")
    if len({x.dtype.kind == "f" for x in xs}) > 1 or len({x.dtype for x in xs if x.dtype.kind in "iub"}) > 1:
        detail = ", ".join(f"{k} is {x.dtype}" for k, x in zip(keys, xs))
        raise UserError(f"{where} mixes dtypes ({detail}): store every split with the same dtype")
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        detail = ", ".join(f"{k} {x.shape[1:]}" for k, x in zip(keys, xs))
        raise UserError(
            f"{where} has different sample shapes between splits ({detail}): store every split "
            "with the same per-sample shape"
        )
    sample = xs[0].shape[1:]
    dtype = xs[0].dtype
    image = len(sample) >= 2
    nhwc = len(sample) == 3 and sample[-1] in (1, 3, 4) and min(sample[0], sample[1]) > 4
    if nhwc or dtype != np.dtype(np.float32) or not all(x.flags.c_contiguous for x in xs):
        total = sum(x.size for x in xs)  # a float32 copy will be made
        check_fits(4 * total, f"{where} as float32 ({total:,} values)")
    notes = []
    if nhwc:
        # (N, H, W, C) with a colour axis last: PyTorch models take (N, C, H, W)
        xs = [np.moveaxis(x, -1, 1) for x in xs]
        notes.append("transposed from NHWC to NCHW")
    elif len(sample) == 2:
        xs = [x[:, None] for x in xs]
        notes.append("channel axis added: (N,H,W) -> (N,1,H,W)")
    layout = "NC" if len(sample) == 1 else "NCHW"
    if kinds == {"b"}:
        out = [x.astype(np.float32) for x in xs]
        return out, Preprocessing(scale=1.0, layout=layout, note="; ".join(["boolean x as 0/1", *notes]))
    if kinds & set("iu"):
        if dtype == np.uint8 and image:
            out = []
            for x in xs:
                a = x.astype(np.float32)
                a *= np.float32(1 / 255)
                out.append(a)
            return out, Preprocessing(
                scale=1 / 255, layout=layout, note="; ".join(["uint8 images scaled by 1/255", *notes])
            )
        out = [np.ascontiguousarray(x, dtype=np.float32) for x in xs]
        what = "integer images" if image else "integer features"
        note = "; ".join([f"{what} ({dtype}) kept as stored, cast to float32", *notes])
        return out, Preprocessing(scale=1.0, layout=layout, note=note)
    out = []
    for k, x in zip(keys, xs):
        a = np.ascontiguousarray(x, dtype=np.float32)  # float32 stays bit-for-bit as stored
        check_finite(a, k, where)
        out.append(a)
    if dtype != np.float32:
        notes.append(f"{dtype} converted to float32")
    return out, Preprocessing(scale=1.0, layout=layout, note="; ".join(["as stored", *notes]))
