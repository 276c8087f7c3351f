"""Stored x arrays -> float32 model inputs -- numpy only.

One set of rules wherever samples are read: the .npz source and `rows.load_rows` (what
`cwtool verify` reads) both use `npz_features`, so a row gets the same preprocessing whether
`load_data` split it or verify read it in file order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from toolchain.data.dataset import Preprocessing
from toolchain.data.mapped import Mapped, MappedMember
from toolchain.data.samples import Samples
from toolchain.errors import UserError
from toolchain.limits import check_fits

__all__ = ["Conversion", "check_finite", "npz_features"]


def check_finite(x: np.ndarray, what: str, where: str, first_row: int = 0, place=None) -> None:
    """``first_row``: the index of x's first row in the whole array (a chunk of a mapped one); ``place(row, column)``:
    where a feature row's value is, in the file's own words (a CSV's line and column name)."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        n = int(bad.sum())
        first = np.argwhere(bad)[0]  # row, then the place in it: where to look first
        row = first_row + int(first[0])
        at = (place(row, int(first[1])) if place is not None and x.ndim == 2 else
              f"row {row}" + (f", column {int(first[1])}" if x.ndim == 2 else "") + " (counted from 0)")
        raise UserError(
            f"{what} in {where} {'contain' if what.endswith('s') else 'contains'} {n} NaN or infinite value{'s' if n != 1 else ''}, "
            f"the first at {at} (as float32: a value beyond +-3.4e38 is infinite there): clean, impute or rescale them before loading"
        )


@dataclass(frozen=True)
class Conversion:
    """Stored x rows -> float32 model inputs: NHWC moved to NCHW or a channel axis added, then scaled (uint8
    images: astype, then multiplied in place) or cast. One rule for whole arrays and for mapped batches, so a
    row gets the same bits either way."""

    nhwc: bool = False
    add_channel: bool = False
    scale: float | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.nhwc:
            x = np.moveaxis(x, -1, 1)  # (N, H, W, C) with a colour axis last: PyTorch models take (N, C, H, W)
        elif self.add_channel:
            x = x[:, None]
        if self.scale is not None:
            a = x.astype(np.float32)
            a *= np.float32(self.scale)
            return a
        return np.ascontiguousarray(x, dtype=np.float32)  # float32 stays bit-for-bit as stored


def _check_finite_rows(member: MappedMember, key: str, where: str, rule) -> None:
    """check_finite over a mapped array as ``rule`` converts it, a chunk at a time (a float64 1e300 is finite, its
    float32 is not: the check is on what the model will read, as for an array held in memory)."""
    n = member.shape[0]
    step = max(1, (64 << 20) // max(1, member.dtype.itemsize * int(np.prod(member.shape[1:], dtype=np.int64))))
    opened = member.opened()
    try:
        for start in range(0, n, step):
            check_finite(rule(opened.rows(np.arange(start, min(n, start + step)))), key, where, first_row=start)
    finally:
        opened.close()


def npz_features(
    arrays: dict[str, np.ndarray | MappedMember], keys: list[str], where: str
) -> tuple[list[np.ndarray | Samples], Preprocessing]:
    """Convert the x arrays of an npz to float32 model inputs (all with the same rules).

    uint8 images (ndim >= 3: (N,H,W), (N,C,H,W), (N,H,W,C)) are scaled by 1/255; every other
    integer array (tabular values, counts, 16-bit images...) is kept as stored, cast to float32.
    A `MappedMember` (a large member stored uncompressed, toolchain.data.mapped) becomes rows read
    on demand, converted a batch at a time by the same rule.
    """
    xs = [arrays[k] if isinstance(arrays[k], MappedMember) else np.asarray(arrays[k]) for k in keys]
    mapped = [isinstance(x, MappedMember) for x in xs]
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
    held = [x for x, m in zip(xs, mapped) if not m]
    if nhwc or dtype != np.dtype(np.float32) or not all(x.flags.c_contiguous for x in held):
        total = sum(x.size for x in held)  # a float32 copy will be made
        check_fits(4 * total, f"{where} as float32 ({total:,} values)")
    notes = []
    if nhwc:
        notes.append("transposed from NHWC to NCHW")
    elif len(sample) == 2:
        notes.append("channel axis added: (N,H,W) -> (N,1,H,W)")
    elif len(sample) == 3 and sample[-1] in (1, 3, 4):  # (N, 4, 4, 3): 4x4 colour images, or 4 channels of 4x3?
        notes.append(f"warning: read as (N, C, H, W), {sample[0]} channel{'s' if sample[0] > 1 else ''} of {sample[1]}x{sample[2]}, "
                     f"though its last axis ({sample[-1]}) could be colours: (N, H, W, C) images 4 pixels a side or smaller are "
                     "not told apart; store them as (N, C, H, W)")
    layout = "NC" if len(sample) == 1 else "NCHW"
    rule = Conversion(nhwc=nhwc, add_channel=len(sample) == 2)
    if kinds == {"b"}:
        lead, scale = "boolean x as 0/1", 1.0
    elif kinds & set("iu"):
        if dtype == np.uint8 and image:
            rule = replace(rule, scale=1 / 255)
            lead, scale = "uint8 images scaled by 1/255", 1 / 255
        else:
            lead, scale = f"{'integer images' if image else 'integer features'} ({dtype}) kept as stored, cast to float32", 1.0
    else:
        lead, scale = "as stored", 1.0
        if dtype != np.float32:
            notes.append(f"{dtype} converted to float32")
    sample_shape = tuple(rule(np.zeros((1, *sample), dtype=dtype)).shape[1:])
    out = []
    for k, x, m in zip(keys, xs, mapped):
        if m:
            if dtype.kind == "f":
                _check_finite_rows(x, k, where, rule)
            out.append(Mapped(x, rule, sample_shape))
        else:
            a = rule(x)
            if dtype.kind == "f":
                check_finite(a, k, where)
            out.append(a)
    if any(mapped):
        notes.append(f"{', '.join(k for k, m in zip(keys, mapped) if m)} read in place from the file, a batch at a time")
    return out, Preprocessing(scale=scale, layout=layout, note="; ".join([lead, *notes]))
