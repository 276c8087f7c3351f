"""What a channel shape costs in the protected class, before any pruning run is spent on it: the dense
Fashion-MNIST CNN shrunk in one shot to given channel counts (each layer keeps its largest-magnitude
channels), fine-tuned with cwtool's class-dependent loss + distillation, then measured on test at a
validation-chosen operating point (as finetune_ticket.py does). Pairs with shape_latency.py.

    python benchmarks/shape_accuracy.py 8-24-32-48 8-16-24-80 --dense cwtool-bench/fmnist_dense.pt --seed 0 \
        --epochs 12 --out benchmarks/results/fmnist_shape_accuracy.jsonl
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
from toolchain.models.loading import load_model  # noqa: E402
from toolchain.models.profile import count_macs, count_params  # noqa: E402
from toolchain.models.train import TrainConfig, predict_logits, seed_everything, train  # noqa: E402
from toolchain.prune.graph import channel_groups  # noqa: E402
from toolchain.prune.importance import magnitude_scores  # noqa: E402
from toolchain.prune.loss import ClassDependentLoss  # noqa: E402
from toolchain.prune.shrink import shrink  # noqa: E402
from finetune_ticket import measure  # noqa: E402  (benchmarks/ is the script's folder)
from prune_benchmark import protected_row  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes", nargs="+", help="channel counts per prunable layer, e.g. 8-24-32-48")
    ap.add_argument("--dense", required=True, help="trained on this seed's split (cwtool train --seed S)")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--protect", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    k = args.protect
    ds = load_data(args.data, seed=args.seed)
    dense = load_model(args.dense).module.float().eval()
    x_test, y_test = ds.split("test")
    dense_val_fn = evaluate_logits(ds.y_val, predict_logits(dense, ds.x_val), [k])["protected"][0]["fn"]
    dense_row = protected_row(evaluate_logits(y_test, predict_logits(dense, x_test), [k]), k)
    teacher = torch.as_tensor(predict_logits(dense, ds.x_train))
    example = torch.zeros(1, *ds.input_shape)
    scores = magnitude_scores(dense, example)
    groups = channel_groups(dense, example)
    for shape in args.shapes:
        widths = [int(w) for w in shape.split("-")]
        if len(widths) != len(groups):
            raise SystemExit(f"{shape}: give {len(groups)} channel counts ({', '.join(g.key for g in groups)})")
        plan = {g.key: torch.argsort(scores[g.key])[: g.size - w].tolist() for g, w in zip(groups, widths)}
        model = shrink(dense, plan, example)
        seed_everything(args.seed)
        t0 = time.perf_counter()
        loss = ClassDependentLoss(int(teacher.shape[1]), [k], gamma=5.0, rank_weight=1.0, teacher_logits=teacher, distill_weight=1.0)
        train(model, ds.x_train, ds.y_train, TrainConfig(epochs=args.epochs, lr=2e-3, seed=args.seed * 1000 + 7), loss_fn=loss)
        record = {"shape": shape, "seed": args.seed, "epochs": args.epochs, "params": count_params(model), "macs": count_macs(model, example),
                  "dense": dense_row, "seconds": time.perf_counter() - t0, "after": measure(model, ds, k, dense_val_fn, dense_row["fn"])}
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
