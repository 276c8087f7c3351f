"""Does the guard's confidence hold where validation is small? Fresh synthetic data, the edge sample counted or not.

Each draw makes a validation split and a new split of the same size from one generator (10 classes, a dense model's
scores and a candidate's: the dense scores plus noise, the protected class shifted), lets PromiseGuard choose the
protected class's offset on validation, and -- where the rule reaches the confidence, as compress ships only then --
counts whether the new split keeps the promise (candidate FN <= dense FN + budget). Both rules: the hardest positive
the offset catches counted as missed (``edge_counts_against``, as compress ships) and counted as caught (before).

    python reproduce/fn_promise_edge.py [--draws 1000] [--json reproduce/results/fn_promise_edge.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from toolchain.prune.operating_point import PromiseGuard, apply_offsets, fn_count

SETTINGS = [  # rows per split, candidate noise, protected shift, budget, confidence, dense separation
    (300, 0.7, -0.3, 0, 0.9, 2.0), (300, 0.7, -0.3, 1, 0.9, 2.0), (300, 0.3, 0.0, 1, 0.9, 3.0), (300, 0.3, 0.0, 2, 0.9, 4.0),
    (3000, 0.7, -0.3, 0, 0.95, 2.0), (3000, 0.7, -0.3, 0, 0.9, 2.0),
]
PROTECTED = 6


def rows(rng, n: int, noise: float, shift: float, sep: float, k: int = 10):
    y = rng.integers(0, k, n)
    dense = rng.normal(size=(n, k))
    dense[np.arange(n), y] += sep
    candidate = dense + rng.normal(scale=noise, size=(n, k))
    candidate[:, PROTECTED] += shift
    return y, dense, candidate


def coverage(n, noise, shift, budget, confidence, sep, edge: bool, draws: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    kept = shipped = 0
    for _ in range(draws):
        yv, dv, cv = rows(rng, n, noise, shift, sep)
        yt, dt, ct = rows(rng, n, noise, shift, sep)
        guard = PromiseGuard(yv, dv.argmax(1), [PROTECTED], budget=budget, confidence=confidence, edge_counts_against=edge)
        offsets = guard.choose(cv)
        if not guard.met(cv, offsets):
            continue
        shipped += 1
        kept += fn_count(apply_offsets(ct, offsets), yt, PROTECTED) <= fn_count(dt, yt, PROTECTED) + budget
    return {"shipped": shipped, "kept": kept / max(shipped, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=1000, help="draws per setting (a quarter for the 3,000-row ones)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for n, noise, shift, budget, confidence, sep in SETTINGS:
        draws = args.draws if n < 1000 else args.draws // 4
        row = {"rows": n, "noise": noise, "shift": shift, "budget": budget, "confidence": confidence, "separation": sep, "draws": draws,
               "edge_counted_as_missed": coverage(n, noise, shift, budget, confidence, sep, True, draws),
               "edge_counted_as_caught": coverage(n, noise, shift, budget, confidence, sep, False, draws)}
        results.append(row)
        print(f"{n} rows (~{n // 10} positives), budget {budget}, confidence {confidence}: kept "
              f"{row['edge_counted_as_missed']['kept']:.3f} of {row['edge_counted_as_missed']['shipped']} shipped (edge as missed), "
              f"{row['edge_counted_as_caught']['kept']:.3f} of {row['edge_counted_as_caught']['shipped']} (as caught)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
