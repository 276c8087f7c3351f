"""Class-aware vs class-agnostic pruning at ~25%, 10% and 5% of the dense parameters.

For each seed: train the dense model (Adam), then run the lottery rounds with schedule
0.5 -> 0.25 -> 0.1 -> 0.05 once class-aware and once with --no-class-aware (plain CE, plain
magnitude); ablations switch single class-aware parts off. Every ticket gets its operating point
(logit offset) on validation so that its protected FN matches the dense model's; the numbers are
on the test split. Results: JSON lines to --out, summarised by benchmarks/summarise.py.

    python benchmarks/prune_benchmark.py --data /usr/share/datasets/fashion-mnist --arch fmnist-cnn \
        --protect 6 --seeds 0 1 --out results.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from toolchain.config import PruneConfig  # noqa: E402
from toolchain.data import load_data  # noqa: E402
from toolchain.metrics import evaluate_logits  # noqa: E402
from toolchain.models import registry  # noqa: E402
from toolchain.models.train import TrainConfig, pick_device, predict_logits, seed_everything, train  # noqa: E402
from toolchain.prune.lottery import LotteryPruner  # noqa: E402
from toolchain.models.loading import load_model  # noqa: E402
from toolchain.prune.operating_point import apply_offsets, choose_offsets  # noqa: E402

VARIANTS = {
    "class-aware": {},
    "plain (--no-class-aware)": {"class_aware": False},
    "class-aware, no distillation": {"distill_weight": 0.0},
    "class-aware, magnitude importance": {"taylor_weight": 0.0},
    # the paper's |W_T| - |W_0| over each round's retraining, added to the magnitude (from round 2)
    "class-aware, magnitude increase": {"increase_weight": 1.0},
    "plain + distillation": {"gamma": 1.0, "rank_weight": 0.0, "taylor_weight": 0.0},
    "class-aware, rewind early": {"rewind": "early"},
    "class-aware, rank weight 5": {"rank_weight": 5.0},
    "class-aware, rank weight 5, distill 3": {"rank_weight": 5.0, "distill_weight": 3.0},
    # gamma 1: no extra CE weight on the protected class (rank loss and distillation still class-aware)
    "class-aware, gamma 1": {"gamma": 1.0},
    "class-aware, gamma 1, rank weight 5": {"gamma": 1.0, "rank_weight": 5.0},
    "class-aware, unrounded channels": {"round_to": 1},
    "plain, unrounded channels": {"class_aware": False, "round_to": 1},
    # the fine-tuning budget: 15 instead of 6 epochs per round
    "class-aware, 15 epochs": {"epochs": 15},
    "class-aware, rank weight 5, distill 3, 15 epochs": {"rank_weight": 5.0, "distill_weight": 3.0, "epochs": 15},
    "plain (--no-class-aware), 15 epochs": {"class_aware": False, "epochs": 15},
    # the paper's unstructured tickets: layer-wise weight masks; params = non-zero weights (the file is not smaller)
    "class-aware, unstructured weights": {"granularity": "weight"},
    "plain, unstructured weights": {"class_aware": False, "granularity": "weight"},
}


def protected_row(evaluation: dict, k: int) -> dict:
    p = next(p for p in evaluation["protected"] if p["class"] == k)
    return {"fn": p["fn"], "fp": p["fp"], "auc": p["auc"], "accuracy": evaluation["accuracy"]}


def fp_at_fn(logits, y, k: int, fn: int) -> int:
    """Diagnostic only (threshold chosen on the split it is measured on, never used by cwtool): FP of
    class k with the offset that puts its FN at ``fn`` -- the ranking near the operating point, free of FN noise."""
    return evaluate_logits(y, apply_offsets(logits, choose_offsets(logits, y, {k: fn})), [k])["protected"][0]["fp"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--protect", type=int, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--dense-epochs", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--schedule", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--ablation-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--round-to", type=int, default=8, help="channel rounding to multiples (the targets' channel_multiple is 8; 1 = off)")
    ap.add_argument("--dense", help="a trained dense checkpoint to start from instead of training one (one seed only)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    device = pick_device()
    out = open(args.out, "a")
    k = args.protect
    for seed in args.seeds:
        dataset = load_data(args.data, seed=seed)
        seed_everything(seed)
        t0 = time.perf_counter()
        if args.dense:  # e.g. `cwtool train --seed S` output: trained on this seed's train split
            dense = load_model(args.dense).module.float().to(device)
        else:
            dense = registry.create(args.arch)
            train(dense, dataset.x_train, dataset.y_train, TrainConfig(epochs=args.dense_epochs, lr=1e-3, batch_size=args.batch_size, seed=seed), device=device)
        dense_seconds = time.perf_counter() - t0
        x_test, y_test = dataset.split("test")
        dense_eval = evaluate_logits(y_test, predict_logits(dense, x_test, device=device), [k])
        params = sum(p.numel() for p in dense.parameters())
        record = {"kind": "dense", "data": dataset.name, "arch": args.arch, "seed": seed, "params": params, "seconds": dense_seconds,
                  "device": str(device), **protected_row(dense_eval, k)}
        print(json.dumps(record), flush=True)
        out.write(json.dumps(record) + "\n")
        for variant in args.variants:
            if variant not in ("class-aware", "plain (--no-class-aware)") and seed not in args.ablation_seeds:
                continue
            cfg = PruneConfig(**{**dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=seed, schedule=tuple(args.schedule),
                                        stop_outside_budget=False, max_accuracy_drop=1.0, round_to=args.round_to), **VARIANTS[variant]})
            t0 = time.perf_counter()
            stamps = {}
            pruner = LotteryPruner(copy.deepcopy(dense), dataset, [k], cfg, log=lambda line: stamps.setdefault(len(stamps) + 1, time.perf_counter() - t0))
            result = pruner.run()
            for ticket in result.tickets:
                logits = predict_logits(ticket.model, x_test, device=device)
                ev = evaluate_logits(y_test, apply_offsets(logits, ticket.offsets), [k])
                raw = evaluate_logits(y_test, logits, [k])
                record = {"kind": "ticket", "variant": variant, "data": dataset.name, "arch": args.arch, "seed": seed, "round": ticket.round,
                          "target": args.schedule[ticket.round - 1], "params": ticket.params, "macs": ticket.macs,
                          "param_fraction": ticket.params / params, "offset": ticket.offsets[k], "seconds": stamps.get(ticket.round),
                          "val_fn": ticket.val["protected"][0]["fn"], "dense_val_fn": result.targets[k],
                          "raw_fn": raw["protected"][0]["fn"], "raw_fp": raw["protected"][0]["fp"], **protected_row(ev, k),
                          "fp_at_dense_test_fn": fp_at_fn(logits, y_test, k, dense_eval["protected"][0]["fn"]),
                          "config": {key: v for key, v in asdict(cfg).items() if key in VARIANTS.get(variant, {}) or key in ("epochs", "rewind", "round_to")}}
                print(json.dumps(record), flush=True)
                out.write(json.dumps(record) + "\n")
                out.flush()


if __name__ == "__main__":
    main()
