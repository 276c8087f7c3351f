"""The anchor, given cwtool's guard: Torch-Pruning (magnitude, uniform channel ratio) to a parameter
goal, a few epochs of plain cross-entropy, then the protected class's offset chosen on validation by
the same rule compress ships (PromiseGuard). Test numbers are reported once, at that point.

    python reproduce/fn_promise_anchor.py --dense D.pt --data fashion-mnist -p Shirt --seed 0 --json out.json

``--int8 DIR`` ends the anchor as the issue names it: the guarded model (offset baked into its classifier)
exported to ONNX and quantized by onnxruntime (static QDQ, 256 train rows), in DIR; its seconds are in the total.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch_pruning as tp

from toolchain.data import load_data
from toolchain.evaluate import resolve_protected
from toolchain.metrics import evaluate_logits
from toolchain.models.loading import load_model
from toolchain.models.profile import count_params
from toolchain.models.train import TrainConfig, predict_logits, seed_everything, train
from toolchain.prune.operating_point import PromiseGuard, apply_offsets, choose_offsets, fn_count


def pruned_to(dense: torch.nn.Module, example: torch.Tensor, keep: float, norm: int = 2) -> torch.nn.Module:
    """The largest uniform channel ratio whose pruned model stays within ``keep`` of the parameters; channels ranked by
    the sum of |w|^norm over their group's weights."""
    goal = keep * count_params(dense)

    def prune(ratio: float) -> torch.nn.Module:
        model = copy.deepcopy(dense)
        last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]  # the classes stay
        tp.pruner.BasePruner(model, example, importance=tp.importance.MagnitudeImportance(p=norm), pruning_ratio=ratio,
                             ignored_layers=[last]).step()
        return model

    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if count_params(prune(mid)) <= goal else (mid, hi)
    return prune(hi)


def export_int8(model: torch.nn.Module, dataset, offsets: dict[int, float], folder: Path, seed: int) -> None:
    """The anchor's deployable files: the offset baked in, ONNX fp32, then onnxruntime's static int8 QDQ."""
    import numpy as np

    from toolchain.export.onnx import export_onnx
    from toolchain.export.onnx_int8 import quantize_onnx
    from toolchain.prune.bake import bake_offsets

    model = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, *dataset.input_shape)
    bake_offsets(model, offsets, example)
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, example, folder / "model_fp32.onnx")
    rows = np.random.default_rng(seed).choice(len(dataset.y_train), size=256, replace=False)
    quantize_onnx(fp32, folder / "model_int8.onnx", np.asarray(dataset.x_train[np.sort(rows)], dtype=np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dense", required=True)
    parser.add_argument("--arch")
    parser.add_argument("--data", required=True)
    parser.add_argument("-p", "--protect", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seed", type=int, help="the fine-tuning's seed alone (default: --seed); the split stays --seed's")
    parser.add_argument("--keep-params", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--max-fn-increase", type=int, default=0)
    parser.add_argument("--norm", type=int, default=2, help="Torch-Pruning's magnitude: 2 sums w^2 (its default), 1 sums |w|")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--int8", type=Path, help="folder for model_fp32.onnx and model_int8.onnx (onnxruntime int8)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    dataset = load_data(args.data, seed=args.seed)
    dense = load_model(args.dense, arch=args.arch).module.float().eval()
    (k,) = resolve_protected([args.protect], dataset.class_names, dataset.num_classes)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    seed_everything(train_seed)
    model = pruned_to(dense, torch.zeros(1, *dataset.input_shape), args.keep_params, args.norm)
    train(model, dataset.x_train, dataset.y_train, TrainConfig(epochs=args.epochs, lr=args.lr, seed=train_seed))

    x_val, y_val = dataset.split("val")
    x_test, y_test = dataset.split("test")
    dense_val = predict_logits(dense, x_val)
    val = predict_logits(model, x_val)
    guard = PromiseGuard(y_val, dense_val.argmax(1), [k], budget=args.max_fn_increase, confidence=args.confidence)
    guarded = guard.choose(val)
    check = guard.check(val, guarded)[k]
    plain = choose_offsets(val, y_val, {k: fn_count(dense_val, y_val, k) + args.max_fn_increase})
    test, dense_test = predict_logits(model, x_test), predict_logits(dense, x_test)

    def row(logits, y=y_test):
        ev = evaluate_logits(y, logits, [k])
        p = ev["protected"][0]
        return {"fn": p["fn"], "fp": p["fp"], "accuracy": ev["accuracy"], "auc": p["auc"]}

    if args.int8:
        export_int8(model, dataset, {k: guarded[k]}, args.int8, args.seed)
    result = {"arm": "anchor: Torch-Pruning magnitude + CE fine-tuning + guarded offset", "seed": args.seed, "train_seed": train_seed, "protected": k,
              "params": count_params(model), "param_fraction": count_params(model) / count_params(dense), "epochs": args.epochs, "norm": args.norm,
              "val": {"confidence": check["confidence"], "fn": check["fn"], "dense_fn": check["dense_fn"], "b": check["b"], "c": check["c"],
                      "accuracy": float((apply_offsets(val, guarded).argmax(1) == y_val).mean()),
                      "dense_accuracy": float((dense_val.argmax(1) == y_val).mean()),
                      "fp": row(apply_offsets(val, guarded), y_val)["fp"], "auc": row(val, y_val)["auc"],
                      "dense_fp": row(dense_val, y_val)["fp"], "dense_auc": row(dense_val, y_val)["auc"]},
              "promise_met_on_val": guard.met(val, guarded),
              "within_accuracy_budget_on_val": bool((apply_offsets(val, guarded).argmax(1) == y_val).mean() >= (dense_val.argmax(1) == y_val).mean() - 0.02),
              "test_guarded": row(apply_offsets(test, guarded)), "test_unguarded": row(apply_offsets(test, plain)), "test_dense": row(dense_test),
              "int8": str(args.int8) if args.int8 else None, "seconds": time.perf_counter() - t0}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
