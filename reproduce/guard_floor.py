"""What the FN guard costs a model that is the dense model itself: its own validation predictions stand as the
reference (b = c = 0), and the guard's offset at each confidence is read off its validation logits. A pruned model
pays at least this much in false positives for the promise; what it pays on top grows with the protected samples it
decides differently from the dense model (b + c; docs/FN_PROMISE.md). Validation only.

    python reproduce/guard_floor.py DENSE.pt --data fashion-mnist -p Shirt --seed 0 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dense", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("-p", "--protect-class", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confidence", type=float, nargs="+", default=[0.5, 0.9, 0.95])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from toolchain.data import load_data
    from toolchain.evaluate import class_names_for, resolve_protected
    from toolchain.models.loading import load_model
    from toolchain.models.train import predict_logits
    from toolchain.prune.operating_point import PromiseGuard, apply_offsets

    dataset = load_data(args.data, seed=args.seed)
    model = load_model(args.dense).module.eval()
    x, y = dataset.split("val")
    logits = predict_logits(model, x)
    k, = resolve_protected([args.protect_class], class_names_for(dataset, logits.shape[1]), logits.shape[1])
    reference = logits.argmax(1)

    def counts(pred: np.ndarray) -> dict:
        return {"fn": int(np.sum((pred != k) & (y == k))), "fp": int(np.sum((pred == k) & (y != k)))}

    rows = [{"confidence": None, "offset": 0.0, "reached": None, **counts(reference)}]
    for confidence in args.confidence:
        guard = PromiseGuard(y=y, dense_pred=reference, protected=[k], budget=0, confidence=confidence)
        offsets = guard.choose(logits)
        rows.append({"confidence": confidence, "offset": offsets[k], "reached": guard.check(logits, offsets)[k]["confidence"],
                     **counts(apply_offsets(logits, offsets).argmax(1))})
    print("| confidence asked | offset | reached | val FN | val FP |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        asked = "dense model's own decisions" if r["confidence"] is None else f"{r['confidence']:g}"
        reached = "-" if r["reached"] is None else f"{r['reached']:.3f}"
        print(f"| {asked} | {r['offset']:+.3f} | {reached} | {r['fn']} | {r['fp']} |")
    if args.json:
        args.json.write_text(json.dumps({"dense": str(args.dense), "data": args.data, "seed": args.seed, "class": k, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
