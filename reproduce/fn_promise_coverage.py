"""Does the FN promise mean what it says? Coverage by resampling on a finished compress run.

The run's held-out rows (validation + test) are pooled and re-split, many times, into a validation and
a test part of the run's own sizes. On each validation part the operating point of the run's shipped
ticket is chosen with cwtool's rule (toolchain.prune.operating_point.PromiseGuard) at each confidence,
and with the plain rule (validation FN equal to the dense model's); the test part then either keeps the
promise (ticket FN <= dense FN + budget) or not. Nothing here is chosen on test: each draw's test part
only counts.

    python reproduce/fn_promise_coverage.py RUN_DIR [--draws 200] [--confidence C ...] [--budget B] [--n-new test|validation] [--json out.json]

Writes a small summary (JSON) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from toolchain.data import load_data
from toolchain.models.loading import load_model
from toolchain.models.train import predict_logits
from toolchain.prune.operating_point import PromiseGuard, apply_offsets, choose_offsets, fn_count
from toolchain.rundir import RunDir


def shipped_ticket(run_dir: Path, arch: str):
    """The ticket compress selected, before its offsets were baked in (a final-fine-tuned one: the
    round's shape with its final fine-tuning's weights, rounds/final_N.pt)."""
    import torch

    report = json.loads((run_dir / "report.json").read_text())
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    model = load_model(run_dir / "rounds" / f"round_{shrunk['round']}.pt", arch=arch).module
    if any(s["stage"] == "final_finetune" and s.get("kept") for s in report["stages"]):
        final = RunDir(run_dir).final_checkpoint(shrunk["round"])
        model.load_state_dict(torch.load(final, map_location="cpu", weights_only=True))
    return model.float().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--confidence", type=float, nargs="+", default=[0.95, 0.90])
    parser.add_argument("--budget", type=int, help="the FN budget of the promise (default: the run's --max-fn-increase)")
    parser.add_argument("--n-new", choices=("test", "validation"), default="test",
                        help="the new data the promise is stated for: each draw's test part (its own count of the class, "
                             "which differs from the validation part's), or the validation part's count, as compress states it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.run_dir / "manifest.json").is_file() or not (args.run_dir / "report.json").is_file():
        parser.error(f"{args.run_dir}: not a finished compress run (it needs its manifest.json and report.json)")

    try:
        manifest = json.loads((args.run_dir / "manifest.json").read_text())
        inputs, config = manifest["inputs"], manifest["config"]
    except (ValueError, KeyError, TypeError) as exc:
        parser.error(f"{args.run_dir}: its manifest.json is not compress's ({type(exc).__name__})")
    if len(inputs.get("protected") or []) != 1:
        parser.error(f"{args.run_dir}: re-splits runs of one protected class")
    arch, kwargs = inputs["arch"], inputs.get("arch_kwargs") or {}
    dataset = load_data(inputs["data"]["spec"], seed=inputs["data_seed"], label_column=inputs.get("label_column"))
    dense = load_model(inputs["model"]["path"], arch=arch, arch_kwargs=kwargs).module.float().eval()
    ticket = shipped_ticket(args.run_dir, arch)
    (k,) = inputs["protected"]
    budget = int(config["max_fn_increase"]) if args.budget is None else args.budget

    x = np.concatenate([dataset.x_val, dataset.x_test])
    y = np.concatenate([dataset.y_val, dataset.y_test])
    n_val = len(dataset.y_val)
    dense_logits, ticket_logits = predict_logits(dense, x), predict_logits(ticket, x)
    dense_pred = dense_logits.argmax(1)

    rules = {"guard": True, "guard, edge sample counted as caught (before)": False}  # PromiseGuard.edge_counts_against
    cells = {(rule, c): {"kept": 0, "shipped": 0, "margins": [], "fp": []} for rule in rules for c in args.confidence}
    plain_kept = 0
    for draw in range(args.draws):
        perm = np.random.default_rng(10_000 + draw).permutation(len(y))
        v, t = perm[:n_val], perm[n_val:]
        limit = fn_count(dense_logits[t], y[t], k) + budget
        plain = choose_offsets(ticket_logits[v], y[v], {k: fn_count(dense_logits[v], y[v], k) + budget})
        plain_test = apply_offsets(ticket_logits[t], plain)
        plain_kept += fn_count(plain_test, y[t], k) <= limit
        plain_fp = int(np.sum((y[t] != k) & (plain_test.argmax(1) == k)))
        n_new = {k: int(np.sum(y[t] == k))} if args.n_new == "test" else None  # the promise is about this draw's test part
        for (rule, c), cell in cells.items():
            guard = PromiseGuard(y[v], dense_pred[v], [k], budget=budget, confidence=c, edge_counts_against=rules[rule], n_new=n_new)
            offsets = guard.choose(ticket_logits[v])
            if not guard.met(ticket_logits[v], offsets):  # compress would exit 1 and ship nothing: not a draw of the promise
                continue
            cell["shipped"] += 1
            guarded = apply_offsets(ticket_logits[t], offsets)
            fn = fn_count(guarded, y[t], k)
            cell["kept"] += fn <= limit
            cell["margins"].append(limit - fn)
            cell["fp"].append(int(np.sum((y[t] != k) & (guarded.argmax(1) == k))) - plain_fp)

    summary = {
        "run_dir": str(args.run_dir), "protected": k, "budget": budget, "n_new": args.n_new,
        "draws": args.draws, "n_val": n_val, "n_test": len(y) - n_val,
        "val_positives": int(np.sum(dataset.y_val == k)), "test_positives": int(np.sum(dataset.y_test == k)),
        "plain_rule": {"kept": plain_kept / args.draws},
        **{rule: {str(c): {"kept": cells[rule, c]["kept"] / max(cells[rule, c]["shipped"], 1), "shipped": cells[rule, c]["shipped"],
                           "test_margin_fn_mean": float(np.mean(cells[rule, c]["margins"])) if cells[rule, c]["margins"] else None,
                           "test_fp_over_plain_mean": float(np.mean(cells[rule, c]["fp"])) if cells[rule, c]["fp"] else None}
                  for c in args.confidence} for rule in rules},
    }
    print(f"{args.draws} re-splits of {len(y)} held-out rows ({n_val} validation): promise kept on the test part")
    print(f"  plain rule (validation FN = dense + {budget}): {summary['plain_rule']['kept']:.1%}")
    for rule in rules:
        for c in args.confidence:
            g = summary[rule][str(c)]
            if not g["shipped"]:
                print(f"  {rule} at confidence {c:g}: the rule reached the confidence on no re-split")
                continue
            print(f"  {rule} at confidence {c:g}: {g['kept']:.1%} of the {g['shipped']} re-splits it ships on (mean test margin "
                  f"{g['test_margin_fn_mean']:+.1f} FN, {g['test_fp_over_plain_mean']:+.1f} FP over the plain rule)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
