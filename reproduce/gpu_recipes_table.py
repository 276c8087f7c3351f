"""The table of reproduce/gpu_recipes.sh: validation numbers at each arm's last round (from its console, also for arms
stopped by the time limit) and at the shipped point (report.json), and the test numbers once, for finished arms.

    python reproduce/gpu_recipes_table.py LOGS_DIR --json reproduce/results/gpu_recipes_fmnist.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fn_promise_levers import report_of, shipped_on_validation
from fn_promise_table import compress_row

ROUND = re.compile(r"^round (\d+): ([\d,]+) params \(([\d.]+)%\), val accuracy ([\d.]+) at the operating point \(class (\d+): FN (\d+) FP (\d+)")


def fp_of(confusion: list[list[int]], cls: int) -> int:
    return sum(row[cls] for i, row in enumerate(confusion) if i != cls)


def arm(console: Path) -> dict:
    name = console.name.removesuffix(".console")
    rounds = [m.groups() for m in map(ROUND.match, console.read_text().splitlines()) if m]
    row = {"arm": name, "seed": int(name[1]), "finished": False, "rounds": [
        {"round": int(r), "param_percent": float(pct), "val_accuracy": float(acc), "val_fn": int(fn), "val_fp": int(fp)}
        for r, _, pct, acc, _, fn, fp in rounds]}
    report = console.with_name(f"{name}.report.json")
    if report.exists():  # the shipped point on validation and the test split once, read as the CPU tables read them
        val, test, r = shipped_on_validation(report), compress_row(report, name, row["seed"]), report_of(report)
        base_val = r["baseline"]["val"]
        row.update(finished=True, flags=val["config"],
                   shipped_val={"fn": val["fn"], "fp": val["fp"], "confidence": test["val_confidence"]},
                   dense_val={"fn": val["dense_fn"], "fp": fp_of(base_val["confusion"], r["protected"][0]), "accuracy": base_val["accuracy"]},
                   dense_test=test["dense"], pruned_test={k: test["shipped"][k] for k in ("fn", "fp", "accuracy")},
                   seconds=r["seconds"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [arm(c) for c in sorted(args.logs.glob("s*.console"))]
    if not rows:
        parser.error(f"no s*.console in {args.logs}: unpack the GPU call's $OUT/recipes.tgz and give its folder")
    print(f"{'arm':<16} {'last round':>10} {'val FN':>6} {'val FP':>6} {'val acc':>7} {'dense val FP':>12} {'ratio':>6}")
    for row in rows:
        if not row["rounds"]:  # stopped by the time limit before its first round
            print(f"{row['arm']:<16} {'none':>10}")
            continue
        last = row["rounds"][-1]
        dense = row.get("dense_val", {}).get("fp")
        ratio = f"{last['val_fp'] / dense:.2f}" if dense else "-"
        print(f"{row['arm']:<16} {last['round']:>10} {last['val_fn']:>6} {last['val_fp']:>6} {last['val_accuracy']:>7.4f} {dense or '-':>12} {ratio:>6}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
