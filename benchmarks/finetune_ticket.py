"""What more fine-tuning of a finished ticket buys: N extra epochs of the class-dependent loss
(+ distillation from the dense model) on a pruned model from `cwtool compress`, then a fresh
operating point on validation; test-split numbers before and after.

    python benchmarks/finetune_ticket.py cwtool-bench/fmnist_r8s/pruned.pt cwtool-bench/fmnist_dense.pt \
        --data fashion-mnist --protect 6 --seed 0 --epochs 20 --out benchmarks/results/fmnist_finetune.jsonl

--seed must be the compress run's (it fixes the train/validation split). --odds-weight W adds W times a
smooth-L1 match of the student's protected log-odds (logit_k - logsumexp of the others) to the dense
model's, on every training row: distillation aimed at the ranking the FP goal is about. --augment shift-flip moves and
mirrors each batch and runs the dense teacher on the augmented batch (slower: a dense forward per step).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from toolchain.data import load_data  # noqa: E402
from toolchain.metrics import evaluate_logits  # noqa: E402
from toolchain.models.augment import KINDS, augmenter  # noqa: E402
from toolchain.models.loading import load_model  # noqa: E402
from toolchain.models.train import TrainConfig, predict_logits, seed_everything, train  # noqa: E402
from toolchain.prune.loss import ClassDependentLoss  # noqa: E402
from toolchain.prune.operating_point import apply_offsets, choose_offsets  # noqa: E402
from prune_benchmark import fp_at_fn, protected_row  # noqa: E402  (benchmarks/ is the script's folder)


def measure(model, dataset, k: int, val_target: int, dense_test_fn: int) -> dict:
    """Test numbers at the validation-chosen offset, and FP at the dense test FN (diagnostic only)."""
    offset = choose_offsets(predict_logits(model, dataset.x_val), dataset.y_val, {k: val_target})
    x_test, y_test = dataset.split("test")
    logits = predict_logits(model, x_test)
    at_op = evaluate_logits(y_test, apply_offsets(logits, offset), [k])
    return {**protected_row(at_op, k), "fp_at_dense_test_fn": fp_at_fn(logits, y_test, k, dense_test_fn), "offset": offset[k]}


def protected_odds(logits: torch.Tensor, k: int) -> torch.Tensor:
    others = torch.cat([logits[:, :k], logits[:, k + 1:]], dim=1)
    return logits[:, k] - torch.logsumexp(others, dim=1)


def odds_matched(base_loss, teacher_logits: torch.Tensor, k: int, weight: float):
    """base_loss + weight * smooth-L1(student's protected log-odds, the dense model's), per batch."""
    def loss(logits, targets, idx, inputs=None):
        teacher = teacher_logits[idx.to(teacher_logits.device)].to(logits.device)
        match = torch.nn.functional.smooth_l1_loss(protected_odds(logits, k), protected_odds(teacher, k))
        return base_loss(logits, targets, idx, inputs) + weight * match

    return loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pruned")
    ap.add_argument("dense")
    ap.add_argument("--data", required=True)
    ap.add_argument("--protect", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gamma", type=float, default=5.0)
    ap.add_argument("--rank-weight", type=float, default=1.0)
    ap.add_argument("--distill-weight", type=float, default=1.0)
    ap.add_argument("--augment", choices=KINDS, default="none")
    ap.add_argument("--odds-weight", type=float, default=0.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    k = args.protect
    dataset = load_data(args.data, seed=args.seed)
    dense = load_model(args.dense).module.float().eval()
    model = load_model(args.pruned).module.float()
    x_test, y_test = dataset.split("test")
    dense_val_fn = evaluate_logits(dataset.y_val, predict_logits(dense, dataset.x_val), [k])["protected"][0]["fn"]
    dense_test = evaluate_logits(y_test, predict_logits(dense, x_test), [k])
    record = {"pruned": args.pruned, "seed": args.seed, "params": sum(p.numel() for p in model.parameters()), "epochs": args.epochs, "lr": args.lr, "augment": args.augment,
              "dense": protected_row(dense_test, k)}
    record["before"] = measure(model, dataset, k, dense_val_fn, record["dense"]["fn"])
    augment = augmenter(args.augment)
    # augmented batches need the teacher live on each batch; plain ones reuse its logits, computed once
    teacher = dict(teacher=dense) if augment else dict(teacher_logits=torch.as_tensor(predict_logits(dense, dataset.x_train)))
    n_classes = int(predict_logits(dense, dataset.x_val[:1]).shape[1])
    loss = ClassDependentLoss(n_classes, [k], gamma=args.gamma, rank_weight=args.rank_weight, distill_weight=args.distill_weight, **teacher)
    if args.odds_weight:
        if augment:
            raise SystemExit("--odds-weight uses the stored teacher logits: not with --augment")
        loss = odds_matched(loss, teacher["teacher_logits"], k, args.odds_weight)
    record["odds_weight"] = args.odds_weight
    seed_everything(args.seed)
    t0 = time.perf_counter()
    train(model, dataset.x_train, dataset.y_train, TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed * 1000 + 99), loss_fn=loss, augment=augment)
    record["seconds"] = time.perf_counter() - t0
    record["after"] = measure(model, dataset, k, dense_val_fn, record["dense"]["fn"])
    print(json.dumps(record), flush=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
