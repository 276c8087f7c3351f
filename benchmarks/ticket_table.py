"""The pruning benchmark's row for finished `cwtool compress` runs: test FN, FP, accuracy and AUC of the
pruned model at its (validation-chosen) operating point, and FP at the dense model's test FN, against
the dense model's own numbers.

    python benchmarks/ticket_table.py cwtool-bench/fmnist_g3f_s0 cwtool-bench/fmnist_g3f_s1 --protect 6 \
        --out benchmarks/results/fmnist_cpu_gradual.jsonl

The dense model, data and seed come from each run's manifest.json. "FP at dense FN" is a diagnostic
(its threshold is set on the test split, which cwtool never does): it compares rankings near the
operating point free of the +-15 FN the validation-chosen offset lands off on test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolchain.data import load_data  # noqa: E402
from toolchain.metrics import evaluate_logits  # noqa: E402
from toolchain.models.loading import load_model  # noqa: E402
from toolchain.models.profile import count_params  # noqa: E402
from toolchain.models.train import predict_logits  # noqa: E402
from prune_benchmark import fp_at_fn, protected_row  # noqa: E402  (benchmarks/ is the script's folder)


def row(run_dir: Path, k: int) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    inputs = manifest["inputs"]
    dataset = load_data(inputs["data"]["spec"], seed=inputs["data_seed"])
    x_test, y_test = dataset.split("test")
    dense = load_model(inputs["model"]["path"]).module.float().eval()
    pruned = load_model(run_dir / "pruned.pt").module.float().eval()  # the operating point is baked in
    dense_row = protected_row(evaluate_logits(y_test, predict_logits(dense, x_test), [k]), k)
    logits = predict_logits(pruned, x_test)
    pruned_row = protected_row(evaluate_logits(y_test, logits, [k]), k)
    params = count_params(pruned)
    return {"run": str(run_dir), "seed": inputs["data_seed"], "config": manifest["config"], "params": params,
            "param_fraction": params / count_params(dense), "dense": dense_row, "pruned": pruned_row,
            "fp_at_dense_test_fn": fp_at_fn(logits, y_test, k, dense_row["fn"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--protect", type=int, required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    for run_dir in args.runs:
        r = row(run_dir, args.protect)
        d, p = r["dense"], r["pruned"]
        print(f"{run_dir}: {r['params']:,} params ({r['param_fraction']:.1%}); FN {p['fn']} ({d['fn']}), FP {p['fp']} ({d['fp']}), "
              f"FP at dense FN {r['fp_at_dense_test_fn']} ({(r['fp_at_dense_test_fn'] / d['fp'] - 1):+.1%}), "
              f"accuracy {p['accuracy']:.4f} ({d['accuracy']:.4f}), AUC {p['auc']:.4f} ({d['auc']:.4f})")
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
