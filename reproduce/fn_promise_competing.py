"""Several protected classes that take samples from each other: what their stated confidences mean.

Three classes; the dense model's logits are 2.5 on the true class plus unit noise; a candidate's are correlated with
them by rho, a little worse on classes 1 and 2 (2.4 and a bias of -0.1). For each draw of a validation split (400, 100
and 100 rows of classes 0, 1, 2) PromiseGuard chooses the offsets of the protected classes; where it states the asked
confidence for every class (compress ships only then), each class's chance that a new split of its size keeps the
promise (candidate FN <= dense FN + budget) is computed exactly from the truth (rates from 400,000 rows, the paired
counts' multinomial). Reported: shipped draws, the stated confidence and that chance averaged over them, the share of
shipped draws whose chance is below the asked confidence, and all classes together (the product of the chances, the
classes' new splits being independent, against the stated lower bound 1 - sum(1 - C_k)).

    python reproduce/fn_promise_competing.py --protect 1 2 [--draws 400] [--per-class 100] [--json FILE]
    python reproduce/fn_promise_competing.py --protect 1        # the control: one protected class
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import binom

from toolchain.prune.operating_point import PromiseGuard, apply_offsets

MU_DENSE, MU_CANDIDATE, BIAS = 2.5, 2.4, np.array([0.0, -0.1, -0.1])


def draw(counts, rho: float, rng):
    """(labels, dense logits, candidate logits) of counts[k] rows of class k."""
    y = np.repeat(np.arange(len(counts)), counts)
    onehot = np.eye(len(counts))[y]
    shared, own = rng.standard_normal((2, len(y), len(counts)))
    return y, MU_DENSE * onehot + shared, MU_CANDIDATE * onehot + rho * shared + np.sqrt(1 - rho**2) * own + BIAS


def keeps(n: int, p_missed: float, p_caught: float, budget: int) -> float:
    """P(B - C <= budget) for (B, C) the candidate's extra misses and catches on n new samples."""
    if p_missed + p_caught == 0:
        return 1.0
    s = np.arange(n + 1)
    return float(np.sum(binom.pmf(s, n, p_missed + p_caught) * binom.cdf((s + budget) // 2, s, p_missed / (p_missed + p_caught))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protect", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--budget", type=int, default=1)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--rho", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    y_pop, dense_pop, cand_pop = draw([200_000, 100_000, 100_000], args.rho, rng)
    dense_pred_pop = dense_pop.argmax(1)
    counts = [4 * args.per_class, args.per_class, args.per_class]
    stated, chance = [], []
    for _ in range(args.draws):
        y, dense, cand = draw(counts, args.rho, rng)
        guard = PromiseGuard(y, dense.argmax(1), args.protect, args.budget, args.confidence)
        offsets = guard.choose(cand)
        checked = guard.check(cand, offsets)
        if not all(v["confidence"] >= args.confidence for v in checked.values()):
            continue
        pred_pop = apply_offsets(cand_pop, offsets).argmax(1)
        row = []
        for k in args.protect:
            pos = y_pop == k
            row.append(keeps(checked[k]["n_new"], np.mean(pos & (dense_pred_pop == k) & (pred_pop != k)) / pos.mean(),
                             np.mean(pos & (dense_pred_pop != k) & (pred_pop == k)) / pos.mean(), args.budget))
        chance.append(row)
        stated.append([checked[k]["confidence"] for k in args.protect])
    chance, stated = np.array(chance), np.array(stated)
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "shipped": len(chance),
              "stated_mean": stated.mean(0).round(3).tolist() if len(chance) else None,
              "chance_mean": chance.mean(0).round(3).tolist() if len(chance) else None,
              "share_below_asked": (chance < args.confidence).mean(0).round(3).tolist() if len(chance) else None,
              "together_chance_mean": round(float(chance.prod(1).mean()), 3) if len(chance) else None,
              "together_stated_bound_mean": round(float(np.maximum(0, 1 - (1 - stated).sum(1)).mean()), 3) if len(chance) else None}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
