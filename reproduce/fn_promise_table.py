"""The pruning goal at the shipped point, from finished runs (reproduce/fn_promise_fmnist.sh).

Per arm and seed: the parameter share, whether the promise was met on validation, and the test split
once, at the operating point each arm ships -- FN and FP of the protected class against the dense
model's, accuracy and AUC differences. The goal: FP <= 1.15x dense, accuracy within 1 point, AUC
within 0.003, test FN <= dense FN. Optional arms, where their files exist: defaults_bf16_sN (the defaults
retrained in bf16 where the CPU has it) and anchor_e6_sN.json (the anchor fine-tuned 6 epochs).

    python reproduce/fn_promise_table.py cwtool-bench/fmnist_promise [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fn_promise_levers import report_of, report_path


def compress_row(run: Path, arm: str, seed: int) -> dict | None:
    """``run``: a run directory, or its report.json copied out (fn_promise_levers.report_of)."""
    if not report_path(run).is_file():
        return None
    report = report_of(run)
    (k,) = report["protected"]
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    base = next(p for p in report["baseline"]["test"]["protected"] if p["class"] == k)
    mine = next(p for p in shrunk["test"]["protected"] if p["class"] == k)
    files = [next(p for p in a["evaluation"]["protected"] if p["class"] == k)["fn"] for a in report["artifacts"]]
    return {"arm": arm, "seed": seed, "param_fraction": shrunk["param_fraction"], "promise_met_on_val": report["promise"]["met_on_val"],
            "val_confidence": report["promise"]["classes"][str(k)]["confidence"],
            "dense": {"fn": base["fn"], "fp": base["fp"], "accuracy": report["baseline"]["test"]["accuracy"], "auc": base["auc"]},
            "shipped": {"fn": mine["fn"], "fp": mine["fp"], "accuracy": shrunk["test"]["accuracy"], "auc": mine["auc"]},
            "files_fn": files, "minutes": shrunk["seconds"] / 60}


def anchor_row(path: Path, seed: int) -> dict | None:
    if not path.is_file():
        return None
    a = json.loads(path.read_text())
    return {"arm": f"anchor (Torch-Pruning + {a['epochs']} epochs CE + guard)", "seed": seed, "param_fraction": a["param_fraction"],
            "promise_met_on_val": a["promise_met_on_val"] and a["within_accuracy_budget_on_val"], "val_confidence": a["val"]["confidence"],
            "dense": a["test_dense"], "shipped": a["test_guarded"], "files_fn": [], "minutes": a["seconds"] / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for s in args.seeds:
        rows += [compress_row(args.work / f"defaults_s{s}", "cwtool compress, defaults", s),
                 compress_row(args.work / f"defaults_bf16_s{s}", "cwtool compress, defaults, bf16 retraining", s),
                 compress_row(args.work / f"plain_s{s}", "plain arm (--no-class-aware, same distillation)", s),
                 anchor_row(args.work / f"anchor_s{s}.json", s),
                 anchor_row(args.work / f"anchor_e6_s{s}.json", s)]
    rows = [r for r in rows if r is not None]
    if not rows:
        parser.error(f"no run of seeds {args.seeds} in {args.work} (defaults_sN/, plain_sN/, anchor_sN.json, ...): give the folder "
                     "reproduce/fn_promise_fmnist.sh wrote")
    print("| arm | seed | params | promise met (val confidence) | test FN (dense) | test FP (dense), ratio | accuracy change | AUC change | minutes |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        d, m = r["dense"], r["shipped"]
        print(f"| {r['arm']} | {r['seed']} | {r['param_fraction']:.1%} | {'yes' if r['promise_met_on_val'] else 'no'} ({r['val_confidence']:.3f}) "
              f"| {m['fn']} ({d['fn']}) | {m['fp']} ({d['fp']}), {m['fp'] / max(1, d['fp']):.2f}x | {100 * (m['accuracy'] - d['accuracy']):+.2f} "
              f"| {m['auc'] - d['auc']:+.4f} | {r['minutes']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
