"""The FN promise end to end over data seeds, on a cheap noisy task: Fashion-MNIST reduced to 8x8.

Per seed: the 70,000 images are split (stratified, that seed) into train / validation / test
(70/15/15) and saved as an .npz with its own splits; a digits-cnn is trained on the train split by the
plain loop below (outside cwtool, as a user's model would be); then `cwtool compress` runs with its
defaults, protecting Shirt, and the shipped files are re-checked on the test split. A seed keeps the
promise when the shipped model's test FN is at most the dense model's (plus the budget). Beside it,
from the same selected ticket, the plain rule's point (validation FN equal to the dense model's).

    python reproduce/fn_promise_seeds.py --seeds 0-11 --work cwtool-bench/fn_seeds [--jobs 2] [-- extra compress flags]

Appends one JSON line per seed to WORK/results.jsonl; prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def fashion_8x8() -> tuple[np.ndarray, np.ndarray]:
    from toolchain.data.idx import read_idx

    x = np.concatenate([read_idx(FASHION / "train-images-idx3-ubyte.gz"), read_idx(FASHION / "t10k-images-idx3-ubyte.gz")])
    y = np.concatenate([read_idx(FASHION / "train-labels-idx1-ubyte.gz"), read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")])
    small = x[:, 2:26, 2:26].astype(np.float32).reshape(len(x), 8, 3, 8, 3).mean(axis=(2, 4)) / 255.0  # 24x24 centre, 3x3 means
    return small[:, None], y.astype(np.int64)


def make_split(x, y, seed: int, path: Path) -> None:
    from toolchain.data.splits import stratified_split

    tr, va, te = stratified_split(y, [0.7, 0.15, 0.15], seed)
    np.savez(path, x_train=x[tr], y_train=y[tr], x_val=x[va], y_val=y[va], x_test=x[te], y_test=y[te], class_names=np.array(NAMES))


def train_dense(path: Path, split: Path, seed: int, epochs: int = 8) -> None:
    """A user's own training: plain cross-entropy, Adam, no cwtool code involved."""
    import torch

    from toolchain.models.architectures import DigitsCNN

    torch.manual_seed(seed)
    data = np.load(split)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(256):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    torch.save(model.eval().state_dict(), path)


def plain_rule_test_fn(run: Path, split: Path, budget: int) -> dict:
    """The selected ticket at the plain point (validation FN = the dense model's + budget): its test FN and FP."""
    from toolchain.models.loading import load_model
    from toolchain.models.train import predict_logits
    from toolchain.prune.operating_point import apply_offsets, choose_offsets, fn_count

    report = json.loads((run / "report.json").read_text())
    rnd = next(s for s in report["stages"] if s["stage"] == "shrunk")["round"]
    ticket = load_model(run / "rounds" / f"round_{rnd}.pt").module.eval()
    dense = load_model(run.parent / f"dense_{run.name}.pt", arch="digits-cnn").module.eval()
    d = np.load(split)
    k = NAMES.index("Shirt")
    target = fn_count(predict_logits(dense, d["x_val"]), d["y_val"], k) + budget
    z = apply_offsets(predict_logits(ticket, d["x_test"]), choose_offsets(predict_logits(ticket, d["x_val"]), d["y_val"], {k: target}))
    return {"fn": fn_count(z, d["y_test"], k), "fp": int(np.sum((d["y_test"] != k) & (z.argmax(1) == k)))}


def one_seed(seed: int, work: Path, x, y, extra: list[str]) -> dict:
    split, dense, run = work / f"split_{seed}.npz", work / f"dense_s{seed}.pt", work / f"s{seed}"
    if not split.exists():
        make_split(x, y, seed, split)
    if not dense.exists():
        train_dense(dense, split, seed)
    if not (run / "report.json").exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(work / f"s{seed}.log", "w") as log:
            subprocess.run([sys.executable, "-m", "toolchain", "compress", str(dense), "--arch", "digits-cnn", "--data", str(split),
                            "-p", "Shirt", "--out", str(run), "--seed", str(seed), *extra], env=env, stdout=log, stderr=subprocess.STDOUT)
    report = json.loads((run / "report.json").read_text())
    k = NAMES.index("Shirt")
    base = next(p for p in report["baseline"]["test"]["protected"] if p["class"] == k)
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    pruned = next(p for p in shrunk["test"]["protected"] if p["class"] == k)
    files = {a["path"]: next(p for p in a["evaluation"]["protected"] if p["class"] == k) for a in report["artifacts"]}
    budget = report["config"]["max_fn_increase"]
    limit = base["fn"] + budget
    return {
        "seed": seed, "params": shrunk["params"], "param_fraction": shrunk["param_fraction"],
        "promise_met_on_val": report["promise"]["met_on_val"], "confidence": report["promise"]["classes"][str(k)]["confidence"],
        "dense_test": {"fn": base["fn"], "fp": base["fp"], "accuracy": report["baseline"]["test"]["accuracy"]},
        "shipped_test": {"fn": pruned["fn"], "fp": pruned["fp"], "accuracy": shrunk["test"]["accuracy"]},
        "files_test_fn": {p: v["fn"] for p, v in files.items()},
        "kept": pruned["fn"] <= limit and all(v["fn"] <= limit for v in files.values()),
        "plain_rule_test": plain_rule_test_fn(run, split, budget),
        "gate_passed": report["gate"]["passed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-11")
    parser.add_argument("--work", type=Path, default=Path("cwtool-bench/fn_seeds"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="flags passed on to cwtool compress (after --)")
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    args.work.mkdir(parents=True, exist_ok=True)
    x, y = fashion_8x8()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda s: one_seed(s, args.work, x, y, args.extra), seeds))
    with open(args.work / "results.jsonl", "a") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    kept = sum(r["kept"] for r in rows)
    plain = sum(r["plain_rule_test"]["fn"] <= r["dense_test"]["fn"] for r in rows)
    print(f"{len(rows)} seeds: the shipped files kept test FN <= dense in {kept} ({kept / len(rows):.0%}); "
          f"the plain rule's point would have in {plain} ({plain / len(rows):.0%})")
    for r in rows:
        print(f"  seed {r['seed']}: dense FN {r['dense_test']['fn']} FP {r['dense_test']['fp']}; shipped FN {r['shipped_test']['fn']} "
              f"FP {r['shipped_test']['fp']} (files {sorted(set(r['files_test_fn'].values()))}); plain FN {r['plain_rule_test']['fn']} "
              f"FP {r['plain_rule_test']['fp']}; {r['param_fraction']:.1%} params; val confidence {r['confidence']:.3f}")


if __name__ == "__main__":
    main()
