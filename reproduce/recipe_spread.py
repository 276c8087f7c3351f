"""How far one recipe's repeats spread, and whether two recipes differ by more than that. Validation only.

Each run is a compress run directory or an anchor JSON (fn_promise_anchor.py --json), given as
RECIPE:DATA_SEED=PATH; the repeats of a recipe on one data seed differ only in the retraining's seed
(compress --seed on an .npz holding that data seed's split; the anchor's --train-seed).

    python reproduce/recipe_spread.py defaults:0=RUN anchor6:0=A.json ... [--compare defaults,anchor6] [--json out.json]

Per recipe and data seed: the runs' FP at the shipped point, their mean and range, accuracy and AUC means.
With --compare A,B: the difference of mean FP (A - B) averaged over the data seeds, with a 95% interval
from resampling each recipe's runs within each data seed (10,000 draws), and the share of draws in which A
ships fewer FP. With three or four runs a cell the interval is rough, and is printed as such.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fn_promise_levers import shipped_on_validation


def read_run(path: Path) -> dict:
    if path.is_dir():
        row = shipped_on_validation(path)
        return {"fp": row["fp"], "fn": row["fn"], "accuracy": row["accuracy"], "auc": row["auc"], "seconds": row["seconds"]}
    val = json.loads(path.read_text())["val"]
    return {"fp": val["fp"], "fn": val["fn"], "accuracy": val["accuracy"], "auc": val["auc"], "seconds": None}


def compare(cells: dict, a: str, b: str, draws: int = 10_000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    seeds = sorted({s for r, s in cells if r == a} & {s for r, s in cells if r == b})
    if not seeds:
        raise SystemExit(f"no data seed has runs of both {a} and {b}")
    point, boot = [], np.zeros(draws)
    for s in seeds:
        fa, fb = np.array([r["fp"] for r in cells[a, s]]), np.array([r["fp"] for r in cells[b, s]])
        point.append(fa.mean() - fb.mean())
        boot += rng.choice(fa, (draws, len(fa))).mean(1) - rng.choice(fb, (draws, len(fb))).mean(1)
    boot /= len(seeds)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"a": a, "b": b, "data_seeds": seeds, "fp_difference": float(np.mean(point)), "interval_95": [float(lo), float(hi)],
            "share_a_fewer": float((boot < 0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RECIPE:DATA_SEED=PATH")
    parser.add_argument("--compare", action="append", default=[], help="A,B: two recipes' mean FP compared")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cells: dict[tuple[str, int], list[dict]] = {}
    for spec in args.runs:
        key, _, path = spec.partition("=")
        recipe, _, seed = key.rpartition(":")
        if not (recipe and seed.isdigit() and path):
            parser.error(f"{spec!r}: give RECIPE:DATA_SEED=PATH")
        if not ((Path(path) / "report.json").is_file() or Path(path).is_file()):
            parser.error(f"{spec!r}: {path} is neither a finished compress run (with its report.json) nor an anchor's JSON")
        cells.setdefault((recipe, int(seed)), []).append({"path": path, **read_run(Path(path))})
    print("| recipe | data seed | runs | val FP at the shipped point | mean (range) | accuracy | AUC |")
    print("|---|---:|---:|---|---|---:|---:|")
    for (recipe, seed), runs in cells.items():
        fp = [r["fp"] for r in runs]
        print(f"| {recipe} | {seed} | {len(runs)} | {', '.join(map(str, fp))} | {np.mean(fp):.0f} ({min(fp)}-{max(fp)}) "
              f"| {np.mean([r['accuracy'] for r in runs]):.4f} | {np.mean([r['auc'] for r in runs]):.4f} |")
    compared = []
    for pair in args.compare:
        a, _, b = pair.partition(",")
        c = compare(cells, a, b)
        compared.append(c)
        print(f"\n{a} - {b}: {c['fp_difference']:+.1f} FP (mean over data seeds {c['data_seeds']}); rough 95% interval "
              f"{c['interval_95'][0]:+.1f} to {c['interval_95'][1]:+.1f}; {a} fewer in {c['share_a_fewer']:.1%} of resamples")
    if args.json:
        args.json.write_text(json.dumps({"what": "validation only; repeats differ in the retraining's seed",
                                         "runs": [{"recipe": r, "data_seed": s, **run} for (r, s), runs in cells.items() for run in runs],
                                         "compared": compared}, indent=2) + "\n")


if __name__ == "__main__":
    main()
