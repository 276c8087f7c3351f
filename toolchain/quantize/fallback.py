"""FN-aware quantization: keep in float the layers whose quantization costs the protected classes.

Evaluated on the validation split only. Each candidate layer is quantized *alone* (every other layer
kept in float) and ranked by the harm it does to the protected classes: their validation FN, then
the drop of their mean log-odds on their own samples (a continuous tie-breaker that sees harm before
it flips a prediction). The most harmful layers are then kept in float, one at a time, until the
protected FN is within budget. If no mix meets the budget, the best artifact is kept and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

# build(excluded layer names, destination) -> path of the int8 artifact
Build = Callable[[Sequence[str], Path], Path]
# score(path) -> (validation FN per protected class, mean protected log-odds)
Score = Callable[[Path], tuple[dict[int, int], float]]


@dataclass
class FallbackResult:
    path: Path
    float_layers: list[str] = field(default_factory=list)
    fn: dict[int, int] = field(default_factory=dict)
    within_budget: bool = True
    ranking: list[dict] = field(default_factory=list)
    reason: str = ""


def protected_log_odds(logits: np.ndarray, y: np.ndarray, protected: Sequence[int]) -> float:
    """Mean over protected classes of the mean log-odds of class k on k's own samples."""
    values = []
    for k in protected:
        rows = logits[y == k].astype(np.float64)
        if len(rows) == 0:
            continue
        others = np.delete(rows, k, axis=1)
        m = others.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(others - m).sum(axis=1, keepdims=True)))[:, 0]
        values.append(float(np.mean(rows[:, k] - lse)))
    return float(np.mean(values)) if values else 0.0


def fn_aware_quantize(build: Build, score: Score, layers: Sequence[str], targets: dict[int, int], workdir: Path, final_path: Path) -> FallbackResult:
    workdir.mkdir(parents=True, exist_ok=True)
    path = build([], final_path)
    fn, _ = score(path)
    if all(fn[k] <= t for k, t in targets.items()):
        return FallbackResult(path, [], fn, True)
    ranking = []
    for i, layer in enumerate(layers):
        alone = build([other for other in layers if other != layer], workdir / f"only_{i}{final_path.suffix}")
        layer_fn, odds = score(alone)
        ranking.append({"layer": layer, "protected_fn": layer_fn, "protected_log_odds": odds})
    ranking.sort(key=lambda r: (-sum(r["protected_fn"].values()), r["protected_log_odds"]))
    best = FallbackResult(path, [], fn, False, ranking)
    excluded: list[str] = []
    for entry in ranking:
        excluded.append(entry["layer"])
        path = build(excluded, final_path)
        fn, _ = score(path)
        if sum(fn.values()) < sum(best.fn.values()):
            best = FallbackResult(path, list(excluded), fn, False, ranking)
        if all(fn[k] <= t for k, t in targets.items()):
            return FallbackResult(path, list(excluded), fn, True, ranking,
                                  f"kept {len(excluded)} layer(s) in float: quantizing them raised the protected FN on validation")
    # Nothing met the budget: rebuild the best mix found, keep it, and let the gate fail on it.
    path = build(best.float_layers, final_path)
    best.path, best.reason = path, "no mix of float layers met the FN budget on validation; kept the best artifact"
    return best
