"""Where a compress run's time went, from its run directory alone: report.json's seconds per stage and each
round's seconds (score, plan and prune, retrain, operating point), compress.log's time stamps for what
happens before round 1 (the dense model's validation logits and the teacher's logits on the train split),
and the validation numbers the recipe is judged by. Test numbers are printed once, for the record.

    python reproduce/compress_profile.py RUN [RUN ...] [--anchor ANCHOR.json ...] [--json OUT]

ANCHOR.json: reproduce/fn_promise_anchor.py's summary (Torch-Pruning + fine-tuning + the guarded offset).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def _before_rounds(run: Path) -> float | None:
    """Seconds from the data line to the 'pruning:' line of compress.log (the teacher and dense logits)."""
    log = run / "compress.log"
    if not log.is_file():
        return None
    stamps = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\S+ \S+ \+\s*([\d.]+)s (data:|pruning:)", line)
        if m:
            stamps.setdefault(m.group(2), float(m.group(1)))
    return round(stamps["pruning:"] - stamps["data:"], 1) if len(stamps) == 2 else None


def profile(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    (k,) = report["protected"]
    rounds = [s for s in report["stages"] if s["stage"] == "prune_round"]
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    chosen = next(s for s in rounds if s["round"] == shrunk["round"])
    final = next((s for s in report["stages"] if s["stage"] == "final_finetune" and s["kept"]), None)
    chosen = {**chosen, "val": final["val"]} if final else chosen  # the shipped point: after the final fine-tuning
    val = next(p for p in chosen["val"]["protected"] if p["class"] == k)
    test = next(p for p in shrunk["test"]["protected"] if p["class"] == k)
    return {
        "run": str(run),
        "config": {key: report["config"][key] for key in ("rate", "epochs", "final_epochs", "keep_params", "seed", "train_precision") if key in report["config"]},
        "seconds": {key: round(v, 1) for key, v in report["seconds"].items()},
        "before_round_1": _before_rounds(run),
        "rounds": [{"round": s["round"], "params": s["params"], **{key: round(v, 1) for key, v in s.get("seconds", {}).items()}}
                   for s in rounds],
        "val": {"round": chosen["round"], "param_fraction": round(shrunk["param_fraction"], 4), "accuracy": round(chosen["val"]["accuracy"], 4),
                "fn": val["fn"], "fp": val["fp"], "auc": round(val["auc"], 4), "promise_met": report["promise"]["met_on_val"]},
        "test_once": {"accuracy": shrunk["test"]["accuracy"], "fn": test["fn"], "fp": test["fp"], "auc": test["auc"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--anchor", action="append", type=Path, default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    for run in args.runs:
        if not (run / "report.json").is_file():
            ap.error(f"{run}: not a finished compress run (no report.json in it)")
        try:
            protected = json.loads((run / "report.json").read_text(encoding="utf-8"))["protected"]
        except (ValueError, KeyError, TypeError) as exc:
            ap.error(f"{run}: its report.json is not compress's ({type(exc).__name__})")
        if len(protected) != 1:
            ap.error(f"{run}: profiles runs of one protected class")
    for anchor in args.anchor:
        if not anchor.is_file():
            ap.error(f"--anchor {anchor}: no such file (reproduce/fn_promise_anchor.py --json writes it)")
    rows = [profile(r) for r in args.runs]
    anchors = [json.loads(a.read_text(encoding="utf-8")) for a in args.anchor]
    for r in rows:
        s = r["seconds"]
        retrain = sum(x.get("retrain", 0) for x in r["rounds"])
        point = sum(x.get("operating point", 0) for x in r["rounds"])
        print(f"{r['run']}: total {s['total']:.0f} s = checks {s['checks and setup']:.0f} + before round 1 {r['before_round_1']} "
              f"+ retraining {retrain:.0f} ({', '.join(str(x.get('retrain')) for x in r['rounds'])}) + operating points {point:.0f} "
              f"+ export {s.get('export and re-check', 0):.0f} + timing {s.get('timing the files', 0):.1f}; "
              f"val: round {r['val']['round']} {r['val']['param_fraction']:.1%} FN {r['val']['fn']} FP {r['val']['fp']} "
              f"acc {r['val']['accuracy']} AUC {r['val']['auc']}")
    for a in anchors:
        print(f"anchor seed {a['seed']}: {a['seconds']:.0f} s; val FN {a['val']['fn']} accuracy {a['val']['accuracy']}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "anchors": anchors}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
