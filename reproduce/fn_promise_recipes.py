"""Which training pays for the guard? Recipes compared on VALIDATION only, on the cheap noisy task.

The guard's margin is cheap when the compressed model agrees with the dense one on the protected
samples and ranks them well. Each recipe compresses the same dense models (seeds of
fn_promise_seeds.py, which must have run first) to the default size; the comparison is the false
positives of the protected class at the guarded operating point on validation, at the same promise
(confidence 0.95, the dense FN), then accuracy and AUC on validation. The test split is not read.

    python reproduce/fn_promise_recipes.py --seeds 0-2 --work cwtool-bench/fn_seeds [--jobs 2]

Appends one JSON line per (recipe, seed) to WORK/recipes.jsonl and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RECIPES = {
    "defaults": [],
    "rank-weight 5 (the paper's lambda)": ["--rank-weight", "5"],
    "lagrange multiplier": ["--gamma-rule", "lagrange"],
    "distillation uniform": ["--distill-uniform"],
    "plain, same distillation": ["--no-class-aware"],
    "gradual + final epochs": ["--rate", "0.3", "--epochs", "3", "--final-epochs", "20"],
}
SHIRT = 6


def run(work: Path, seed: int, name: str, flags: list[str]) -> dict:
    slug = name.split(" (")[0].replace(" ", "-").replace(",", "")
    out = work / "recipes" / f"{slug}_s{seed}"
    if not (out / "report.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{slug}_s{seed}.log", "w") as log:
            subprocess.run([sys.executable, "-m", "toolchain", "compress", str(work / f"dense_s{seed}.pt"), "--arch", "digits-cnn",
                            "--data", str(work / f"split_{seed}.npz"), "-p", "Shirt", "--seed", str(seed), "--skip-export",
                            "--out", str(out), *flags], env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT)
    report = json.loads((out / "report.json").read_text())
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    kept_final = [s for s in report["stages"] if s["stage"] == "final_finetune" and s["kept"]]
    ticket = kept_final[0] if kept_final else next(s for s in report["stages"] if s["stage"] == "prune_round" and s["round"] == shrunk["round"])
    promise = ticket["val"]["promise"][str(SHIRT)]
    val_prot = next(p for p in ticket["val"]["protected"] if p["class"] == SHIRT)
    dense_val = next(p for p in report["baseline"]["val"]["protected"] if p["class"] == SHIRT)
    return {"recipe": name, "seed": seed, "params": shrunk["params"], "param_fraction": shrunk["param_fraction"],
            "promise_met": report["promise"]["met_on_val"], "val": {"fp": promise["fp"], "fp_unguarded": promise["fp_plain"],
            "fn": promise["fn"], "confidence": promise["confidence"], "accuracy": ticket["val"]["accuracy"], "auc": val_prot["auc"],
            "b": promise["b"], "c": promise["c"]},
            "dense_val": {"fp": dense_val["fp"], "fn": dense_val["fn"], "accuracy": report["baseline"]["val"]["accuracy"],
                          "auc": dense_val["auc"]}, "seconds": shrunk["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--work", type=Path, default=Path("cwtool-bench/fn_seeds"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    jobs = [(s, name, flags) for name, flags in RECIPES.items() for s in range(int(lo), int(hi or lo) + 1)]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: run(args.work, *j), jobs))
    with open(args.work / "recipes.jsonl", "a") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    print("recipe | seeds met | val FP at the guard (dense) | val accuracy (dense) | val AUC (dense) | params | minutes")
    for name in RECIPES:
        mine = [r for r in rows if r["recipe"] == name]
        mean = lambda f: sum(f(r) for r in mine) / len(mine)  # noqa: E731
        print(f"{name} | {sum(r['promise_met'] for r in mine)}/{len(mine)} | {mean(lambda r: r['val']['fp']):.0f} "
              f"({mean(lambda r: r['dense_val']['fp']):.0f}) | {mean(lambda r: r['val']['accuracy']):.4f} "
              f"({mean(lambda r: r['dense_val']['accuracy']):.4f}) | {mean(lambda r: r['val']['auc']):.4f} ({mean(lambda r: r['dense_val']['auc']):.4f}) "
              f"| {mean(lambda r: r['param_fraction']):.1%} | {mean(lambda r: r['seconds']) / 60:.1f}")


if __name__ == "__main__":
    main()
