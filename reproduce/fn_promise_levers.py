"""Recipes compared on validation only: for each finished compress run, the numbers at the point it ships
(the guarded operating point of the selected ticket), read from its report.json. No test number is read:
these rows choose settings, and a setting chosen here is then reported on test once (fn_promise_table.py).

    python reproduce/fn_promise_levers.py LABEL=RUN_DIR ... [--json out.json]

Per run: the parameter share, the protected class's validation FN against the dense model's, FP at the
shipped point and at the unguarded point (FN = the dense model's), b + c (the validation positives the two
models decide differently: the guard's margin grows with it), the margin in FN, accuracy and AUC at the
shipped point, and the run's seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def report_path(run: Path) -> Path:
    """A run directory's report.json, or ``run`` itself where it is a report copied out (``NAME.report.json``)."""
    return run if run.suffix == ".json" else run / "report.json"


def report_of(run: Path) -> dict:
    return json.loads(report_path(run).read_text())


def shipped_on_validation(run: Path) -> dict:
    report = report_of(run)
    promise = report["promise"]
    (k, guard), = promise["classes"].items()
    # the shipped round's own stage, or its final fine-tuning where that was kept (one outside the budget is not shipped)
    stage = [s for s in report["stages"] if s.get("round") == promise["round"]
             and (s["stage"] == "prune_round" or (s["stage"] == "final_finetune" and s.get("kept")))][-1]
    protected = next(p for p in stage["val"]["protected"] if str(p["class"]) == k)
    shrunk = next((s for s in report["stages"] if s["stage"] == "shrunk"), {})
    params = report.get("size_goal", {}).get("param_fraction", shrunk.get("param_fraction"))  # older reports: the shrunk stage's
    return {"params": params, "fn": guard["fn"], "dense_fn": guard["dense_fn"], "fp": guard["fp"],
            "fp_unguarded": guard["fp_plain"], "b_plus_c": guard["b"] + guard["c"], "margin_fn": guard["margin_fn"],
            "accuracy": stage["val"]["accuracy"], "auc": protected["auc"], "seconds": report.get("seconds", {}).get("total"),
            "config": report["config"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for spec in args.runs:  # "RUN" alone read ./report.json (the empty path after no '=')
        label, eq, run = spec.partition("=")
        if not eq or not (Path(run) / "report.json").is_file():
            parser.error(f"{spec!r}: give LABEL=RUN_DIR, RUN_DIR a finished compress run (with its report.json)")
    rows = []
    print("| recipe | params | val FN (dense) | val FP at the shipped point (unguarded) | b + c | val accuracy | val AUC | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec in args.runs:
        label, _, run = spec.partition("=")
        row = {"label": label, **shipped_on_validation(Path(run))}
        rows.append(row)
        print(f"| {label} | {row['params']:.1%} | {row['fn']} ({row['dense_fn']}) | {row['fp']} ({row['fp_unguarded']}) | {row['b_plus_c']} "
              f"| {row['accuracy']:.4f} | {row['auc']:.4f} | {'-' if row['seconds'] is None else round(row['seconds'])} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
