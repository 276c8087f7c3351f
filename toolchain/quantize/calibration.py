"""Calibration sets for static int8 quantization: class-stratified, protected classes enriched, seeded.

The caller passes the TRAINING split (never the held-out test split: the gate reads test, so
calibrating on it would leak it into the artifact). The same (data, size, protected, seed) always
gives the same rows, so a saved .npz plus its recipe reproduces a quantized artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from toolchain.errors import UserError
from toolchain.io import staged_path

CALIBRATION_FORMAT = 1


def _as_list(protected) -> list[int]:
    if protected is None:
        return []
    if isinstance(protected, (int, np.integer)):
        return [int(protected)]
    return sorted({int(p) for p in protected})


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to weights that sum to total."""
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=int)
    exact = weights / weights.sum() * total
    base = np.floor(exact).astype(int)
    rest = total - base.sum()
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return base


def calibration_quotas(
    counts: dict[int, int], size: int, protected: Iterable[int] = (), protected_share: float = 0.3
) -> dict[int, int]:
    """Rows to draw per class: proportional to class frequency, except that the protected classes
    together get at least ``protected_share`` of the set (more only if their natural share is larger).
    Quotas never exceed what a class has; a shortfall is handed to classes with rows to spare."""
    classes = sorted(counts)
    avail = np.array([counts[c] for c in classes], dtype=float)
    size = int(min(size, avail.sum()))
    prot = np.array([c in set(protected) for c in classes])
    if prot.any() and not prot.all():
        natural = avail[prot].sum() / avail.sum()
        p_total = int(round(size * max(float(protected_share), natural)))
        quota = np.zeros(len(classes), dtype=int)
        quota[prot] = _largest_remainder(avail[prot], p_total)
        quota[~prot] = _largest_remainder(avail[~prot], size - p_total)
    else:
        quota = _largest_remainder(avail, size)
    # cap at availability and redistribute the shortfall (protected classes first)
    quota = np.minimum(quota, avail.astype(int))
    while quota.sum() < size:
        spare = avail.astype(int) - quota
        if spare.sum() == 0:
            break
        for group in (prot, ~prot):
            idx = np.where(group & (spare > 0))[0]
            if len(idx) == 0:
                continue
            need = size - quota.sum()
            add = np.minimum(_largest_remainder(spare[idx].astype(float), need), spare[idx])
            quota[idx] += add
            if quota.sum() >= size:
                break
    return {c: int(q) for c, q in zip(classes, quota)}


def sample_calibration_indices(
    y_train: np.ndarray, size: int, protected=(), seed: int = 0, protected_share: float = 0.3
) -> np.ndarray:
    """Row indices into the training split (see sample_calibration), in a seeded random order."""
    y = np.asarray(y_train).reshape(-1)
    if len(y) == 0:
        raise UserError("cannot sample a calibration set from an empty training split")
    if size <= 0:
        raise UserError(f"calibration size must be positive, got {size}")
    prot = _as_list(protected)
    if not 0.0 <= protected_share <= 1.0:
        raise UserError(f"protected_share must be between 0 and 1, got {protected_share}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quotas = calibration_quotas(dict(zip(classes.tolist(), counts.tolist())), size, prot, protected_share)
    chosen = []
    for c in sorted(quotas):
        rows = np.flatnonzero(y == c)
        chosen.append(rng.choice(rows, size=quotas[c], replace=False))
    idx = np.concatenate(chosen) if chosen else np.zeros(0, dtype=int)
    return idx[rng.permutation(len(idx))]


def sample_calibration(
    x_train: np.ndarray,
    y_train: np.ndarray,
    size: int,
    protected=(),
    seed: int = 0,
    protected_share: float = 0.3,
) -> np.ndarray:
    """A calibration set of ``size`` rows drawn from the TRAINING split (caller's duty: never test).

    Class-stratified (each class in proportion to its frequency); the protected classes together
    make up at least ``protected_share`` of it, since their activations are the ranges quantization
    must not clip. Seeded: same inputs, same rows. Returns float32 rows in x_train's layout.
    """
    x = np.asarray(x_train)
    if len(x) != len(np.asarray(y_train)):
        raise UserError(f"x_train has {len(x)} rows but y_train has {len(y_train)}: pass matching arrays")
    idx = sample_calibration_indices(y_train, size, protected, seed, protected_share)
    return x[idx].astype(np.float32)


def save_calibration(path: str | Path, x: np.ndarray, meta: dict[str, Any] | None = None) -> Path:
    """Write x and its recipe (meta: seed, size, protected, source hash...) to a .npz, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": CALIBRATION_FORMAT, **(meta or {})}
    with staged_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, x=np.asarray(x, dtype=np.float32), meta=np.array(json.dumps(meta, sort_keys=True, default=str)))
    return path


def load_calibration(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(x float32, meta dict) from a file written by save_calibration."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"calibration set {path} does not exist: check the path or re-create it")
    from toolchain.data.npz import read_npz  # sizes checked before reading: the file is untrusted

    _, arrays = read_npz(path, {"x", "meta"})
    bad = UserError(f"calibration set {path} is not a valid cwtool .npz (needs float rows x and meta): re-create it")
    x = arrays.get("x")
    if x is None or x.dtype.kind not in "fiu" or x.ndim < 2 or len(x) == 0:
        raise bad
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise bad
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]), parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
        except (ValueError, RecursionError) as e:
            raise bad from e
        if not isinstance(meta, dict):
            raise bad
    return x, meta
