"""Seeded, stratified splitting in numpy alone (no scikit-learn: `cwtool verify` runs without it).

`stratified_split` is the algorithm; `split_pool` and `carve_val` apply it to a source's rows,
refusing (one-line `UserError`) classes too small to reach every part. An array's splits are copies; the
splits of inputs read on demand are views (`toolchain.data.samples.subset`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from toolchain.data.samples import held_bytes, subset
from toolchain.errors import UserError, one_line
from toolchain.limits import check_fits, format_bytes

__all__ = ["SmallClassError", "carve_val", "split_pool", "stratified_split"]


class SmallClassError(UserError):
    """A class with too few rows to reach every split."""


def stratified_split(y: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split row indices of ``y`` into ``len(fractions)`` parts, class by class.

    ``fractions`` are the wanted share of each part and must sum to 1. Every class is spread
    over the parts in proportion (largest-remainder rounding, with the rounding carried across
    classes so the part sizes stay within about one row of ``fraction * len(y)``). A class with at
    least as many rows as there are parts with a positive fraction puts at least one row in each
    of them, so every part holds every such class; where many classes are that small, this moves the
    part sizes beyond that row (20 classes of 3 rows split 0.8/0.1/0.1 give 20/20/20). The same ``y`` and ``seed`` always give the
    same parts; each part's indices are returned sorted (the source order is kept).
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) == 0 or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")

    rng = np.random.default_rng(seed)
    k = len(f)
    positive = np.flatnonzero(f > 0)
    owed = np.zeros(k)  # rounding carried from one class to the next
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]

    classes, inverse = np.unique(y, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(classes)))[:-1]
    for members in np.split(order, bounds):
        n = len(members)
        members = members[rng.permutation(n)]
        exact = n * f + owed
        counts = np.clip(np.floor(exact), 0, n).astype(np.int64)
        left = n - counts.sum()
        while left < 0:  # carried rounding overshot this (small) class: take back from the largest
            j = int(np.argmax(counts))
            counts[j] -= 1
            left += 1
        if left > 0:
            # Break ties at random so no part is always favoured.
            rem = exact - counts + rng.random(k) * 1e-9
            rem[f == 0] = -np.inf
            for j in np.argsort(-rem, kind="stable")[:left]:
                counts[j] += 1
            left = n - counts.sum()
            if left > 0:  # more rows left than parts with a positive fraction
                counts[positive[0]] += left
        if n >= len(positive):  # each positive part gets at least one row of this class
            for j in positive:
                if counts[j] == 0:
                    donor = int(np.argmax(counts))
                    counts[donor] -= 1
                    counts[j] += 1
        owed = n * f + owed - counts
        start = 0
        for j in range(k):
            parts[j].append(members[start : start + counts[j]])
            start += counts[j]

    return [
        np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts
    ]


def split_pool(
    x,
    y: np.ndarray,
    seed: int,
    fractions: tuple[float, float],
    names: list[str] | None,
    where: str,
    small_classes_ok: bool = False,
) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test) from one pool. ``small_classes_ok``: rows judged whole, whose
    splits nothing uses, may hold a class too small to reach every split."""
    val, test = fractions
    if not small_classes_ok:
        _check_class_sizes(y, 3, "train/validation/test", names, where)
    _check_copy(x, where)
    tr, va, te = stratified_split(y, [1.0 - val - test, val, test], seed)
    return subset(x, tr), y[tr], subset(x, va), y[va], subset(x, te), y[te]


def carve_val(
    x,
    y: np.ndarray,
    seed: int,
    val_fraction: float,
    names: list[str] | None,
    where: str,
) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val): val_fraction of a given train split, stratified."""
    _check_class_sizes(y, 2, "train/validation", names, where)
    _check_copy(x, where)
    tr, va = stratified_split(y, [1.0 - val_fraction, val_fraction], seed)
    return subset(x, tr), y[tr], subset(x, va), y[va]


def _check_copy(x, where: str) -> None:
    """An array's splits are copies (as much again); a lazy pool's splits are views (row numbers)."""
    held = held_bytes(x)
    what = "as float32" if isinstance(x, np.ndarray) else "held to read them on demand"
    check_fits(held, f"splitting {where} ({len(x)} samples, {format_bytes(held)} {what})")


def _check_class_sizes(
    y: np.ndarray, need: int, parts: str, names: list[str] | None, where: str
) -> None:
    classes, counts = np.unique(y, return_counts=True)
    small = counts < need
    if small.any():
        c, n = int(classes[small][0]), int(counts[small][0])
        label = f"'{names[c]}' (label {c})" if names and c < len(names) else f"{c}"
        others = int(small.sum()) - 1  # named one at a time, 100 small classes took 100 edits and reruns to find
        shown = [f"'{one_line(names[int(o)])[:60]}'" if names and int(o) < len(names) else str(int(o)) for o in classes[small][1:6]]
        more = (f" (and {others:,} other classes with fewer than {need}, such as {', '.join(shown)})" if others > len(shown)
                else f" (and {', '.join(shown)}, with fewer than {need} too)" if others else "")
        raise SmallClassError(
            f"class {label} in {where} has only {n} sample{'s' if n != 1 else ''}{more}; splitting into {parts} "
            f"needs at least {need} per class: add samples of {'those classes' if others else 'that class'} or give the splits yourself"
        )
