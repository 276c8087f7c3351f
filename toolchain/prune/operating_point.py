"""The protected classes' operating point: a logit offset chosen on validation, baked into the model.

Lower FN alone proves nothing -- adding a constant to the protected logit trades false positives
for false negatives at will. So cwtool fixes the trade explicitly: for each protected class k it
picks the smallest offset delta_k such that the validation FN of k is at most the target (the
dense model's FN plus the budget). Two models are then compared at the same FN, by their false
positives and accuracy. A ticket that misses fewer than the target gets a negative offset: it
gives the surplus back as fewer false alarms, which is what a matched comparison requires.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-4


def apply_offsets(logits: np.ndarray, offsets: dict[int, float]) -> np.ndarray:
    out = np.array(logits, dtype=np.float64, copy=True)
    for k, delta in offsets.items():
        out[:, k] += delta
    return out


def fn_count(logits: np.ndarray, y: np.ndarray, k: int) -> int:
    return int(np.sum((y == k) & (np.argmax(logits, axis=1) != k)))


def _offset_for(logits: np.ndarray, y: np.ndarray, k: int, max_fn: int) -> float:
    """Smallest delta with FN_k(logits + delta * e_k) <= max_fn."""
    pos = logits[y == k]
    if len(pos) == 0:
        return 0.0
    others = np.delete(pos, k, axis=1).max(axis=1)
    need = np.sort(others - pos[:, k])[::-1]  # a positive is recovered when delta > need_i
    if max_fn < 0:
        raise ValueError("an FN target cannot be negative")
    if max_fn >= len(need):
        return 0.0  # every delta meets the target: leave the model as it is
    return float(need[max_fn] + _EPS * max(1.0, abs(need[max_fn])))


def choose_offsets(logits: np.ndarray, y: np.ndarray, targets: dict[int, int]) -> dict[int, float]:
    """Offsets per protected class so that each class's FN on (logits, y) is <= its target.

    Offsets interact (raising class a's logit can steal class b's samples), so a few coordinate
    passes settle them. Targets that compete can be infeasible together: then the last attempt is
    returned and the caller, which always re-counts FN, sees the budget missed.
    """
    offsets = {k: 0.0 for k in targets}
    for _ in range(4):
        for k, max_fn in targets.items():
            rest = {j: d for j, d in offsets.items() if j != k}
            delta = _offset_for(apply_offsets(logits, rest), y, k, max_fn)
            offsets[k] = delta
        shifted = apply_offsets(logits, offsets)
        if all(fn_count(shifted, y, k) <= t for k, t in targets.items()):
            break
    return offsets
