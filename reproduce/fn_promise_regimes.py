"""What the guard's confidence C means, and where it falls short: synthetic scores with a known truth.

One protected class against the rest. The dense model's score of a row is its class mean plus noise; a candidate's is
correlated with it by rho (a ticket that ranks rows like the dense model: rho near 1; one that ranks them its own way:
rho near 0), with its own mean for the protected class (a worse ranking: lower). For each draw of a validation split
(n positives, 4n negatives) PromiseGuard chooses the offset; where it states at least C (compress ships only then), the
chance that a new split of the same size keeps the promise (candidate FN <= dense FN) is computed from the truth (rates
from 2,000,000 rows, then 4,000 multinomial new splits). Reported per regime and size: that chance averaged over shipped
draws (coverage), the share of shipped draws whose own chance is below C, its 10th percentile, and the false-positive
rate paid over the dense model's.

    python reproduce/fn_promise_regimes.py [--scale 1.0] [--json reproduce/results/fn_promise_regimes.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from toolchain.prune.operating_point import PromiseGuard

CONFIDENCE = 0.95
DENSE = dict(mu_d=2.5, thr_d=1.3, thr_c=1.3)  # dense model: FNR 0.115, FPR 0.097
REGIMES = {
    "close (rho 0.95)": dict(DENSE, mu_c=2.5, rho=0.95),
    "weakly related (rho 0.3)": dict(DENSE, mu_c=2.5, rho=0.3),
    "unrelated (rho 0)": dict(DENSE, mu_c=2.5, rho=0.0),
    "worse ranking (mean 1.8, rho 0.8)": dict(DENSE, mu_c=1.8, rho=0.8),
}
SIZES = [(15, 2000), (30, 2000), (60, 2000), (100, 2000), (300, 1000), (3000, 300)]  # protected positives, draws


def scores(rng, n_pos: int, n_neg: int, regime: dict):
    """(labels, dense logits, candidate logits): two columns, the protected class is 1."""
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    shared, own = rng.normal(size=len(y)), rng.normal(size=len(y))
    dense = np.where(y == 1, regime["mu_d"], 0.0) + shared - regime["thr_d"]
    candidate = (np.where(y == 1, regime["mu_c"], 0.0) + regime["rho"] * shared
                 + np.sqrt(1 - regime["rho"] ** 2) * own - regime["thr_c"])
    return y, np.c_[np.zeros(len(y)), dense], np.c_[np.zeros(len(y)), candidate]


class Truth:
    """The population's rates at any offset, from one large sample: among positives, the share the dense model catches
    and the candidate misses (p_b) and the reverse (p_c); among negatives, the candidate's false-positive rate."""

    def __init__(self, regime: dict, rows: int = 2_000_000, seed: int = 12345):
        y, dense, candidate = scores(np.random.default_rng(seed), rows, rows, regime)
        pos = y == 1
        dense_hit = dense[pos, 1] > 0
        self.hit, self.miss = np.sort(candidate[pos][dense_hit, 1]), np.sort(candidate[pos][~dense_hit, 1])
        self.neg = np.sort(candidate[~pos, 1])
        self.rows = rows
        self.dense_fpr = float(np.mean(dense[~pos, 1] > 0))

    def rates(self, offset: float):
        p_b = np.searchsorted(self.hit, -offset, side="right") / self.rows
        p_c = (len(self.miss) - np.searchsorted(self.miss, -offset, side="right")) / self.rows
        fpr = (len(self.neg) - np.searchsorted(self.neg, -offset, side="right")) / self.rows
        return p_b, p_c, fpr


def regime_row(name: str, regime: dict, n_pos: int, draws: int, seed: int) -> dict:
    truth, rng = Truth(regime), np.random.default_rng(seed)
    chances, extra_fpr, start = [], [], time.time()
    for _ in range(draws):
        y, dense, candidate = scores(rng, n_pos, 4 * n_pos, regime)
        guard = PromiseGuard(y, dense.argmax(1), [1], budget=0, confidence=CONFIDENCE)
        offsets = guard.choose(candidate)
        if guard.check(candidate, offsets)[1]["confidence"] < CONFIDENCE:
            continue  # refused: compress ships nothing
        p_b, p_c, fpr = truth.rates(offsets[1])
        new = rng.multinomial(n_pos, [p_b, p_c, max(0.0, 1 - p_b - p_c)], size=4000)
        chances.append(float(np.mean(new[:, 0] <= new[:, 1])))
        extra_fpr.append(fpr - truth.dense_fpr)
    chances = np.array(chances)
    shipped = len(chances)
    row = {"regime": name, "positives": n_pos, "confidence": CONFIDENCE, "draws": draws, "shipped": shipped,
           "seconds": round(time.time() - start, 1)}
    if shipped:
        row.update(coverage=float(chances.mean()), coverage_se=float(chances.std() / np.sqrt(shipped)),
                   share_below_confidence=float(np.mean(chances < CONFIDENCE)), chance_p10=float(np.quantile(chances, 0.1)),
                   extra_fpr=float(np.mean(extra_fpr)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every setting's number of draws")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print(f"| regime | positives | shipped / draws | coverage (se) | shipped draws below {CONFIDENCE} | p10 | FPR paid |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r, (name, regime) in enumerate(REGIMES.items()):
        for n_pos, draws in SIZES:
            row = regime_row(name, regime, n_pos, max(1, int(draws * args.scale)), seed=1000 * r + n_pos)
            rows.append(row)
            if row["shipped"]:
                print(f"| {name} | {n_pos} | {row['shipped']} / {row['draws']} | {row['coverage']:.3f} ({row['coverage_se']:.3f}) "
                      f"| {row['share_below_confidence']:.2f} | {row['chance_p10']:.3f} | +{row['extra_fpr']:.3f} |", flush=True)
            else:
                print(f"| {name} | {n_pos} | 0 / {row['draws']} | - | - | - | - |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
