"""How often verify's fitted-rows check (toolchain.verify_inputs.rows_not_fitted) refuses: wrongly, on held-out CSVs
that share twins with the training rows or draw from a few discrete values, and rightly, on the training CSV itself
split with another seed than the files record. Each case is a generated CSV pair and the record `cwtool export` writes;
the check runs as verify runs it (its default rows: the seeded test split).

    python reproduce/fitted_rows.py --reps 20 --json reproduce/results/fitted_rows.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolchain.data import load_data  # noqa: E402
from toolchain.data.seen_sample import seen_sample  # noqa: E402
from toolchain.errors import UserError  # noqa: E402
from toolchain.judged_rows import load_rows_for  # noqa: E402
from toolchain.verify_inputs import rows_not_fitted  # noqa: E402


def write_csv(path: Path, x: np.ndarray) -> Path:
    y = np.where(x[:, 0] > np.median(x[:, 0]), "pos", "neg")
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([f"f{i}" for i in range(x.shape[1])] + ["label"])
        out.writerows([[f"{v:.3f}" for v in row] + [label] for row, label in zip(x, y)])
    return path


def refused(train: Path, data: Path, seed: int) -> bool:
    """Whether verify's default rows of ``data`` (its seeded test split) are refused for files exported from ``train``
    with split seed 0."""
    fitted = load_data(str(train), seed=0)
    record = seen_sample([fitted.split("train"), fitted.split("val")], fitted.class_names, 0)
    runner = SimpleNamespace(metadata={"seen_rows": record, "class_names": [str(n) for n in fitted.class_names]})
    request = SimpleNamespace(split="auto", seed=seed, data=str(data))
    rows = load_rows_for(str(data), "auto", seed)
    try:
        rows_not_fitted(request, None, rows, [(str(train), runner, None)], lambda split, s: load_rows_for(str(data), split, s))
    except UserError:
        return True
    return False


def continuous(rng, n: int) -> np.ndarray:
    return np.round(rng.normal(size=(n, 3)), 3)


def discrete(rng, n: int, features: int, levels: int) -> np.ndarray:
    return rng.integers(0, levels, size=(n, features)).astype(np.float64)


def cases():
    """(name, whether a refusal is right, a function of (rng, folder) -> (train CSV, data CSV, verify's seed))."""
    def held_out_twins(n_train, n_held, share):
        def make(rng, d):
            x = continuous(rng, n_train + n_held)
            held = x[n_train:].copy()
            k = int(round(share * n_held))
            held[:k] = x[rng.choice(n_train, k, replace=False)]  # rows equal to training rows, by nature or by copy
            return write_csv(d / "train.csv", x[:n_train]), write_csv(d / "held.csv", held), 0
        return make

    def held_out_discrete(n_train, n_held, features, levels):
        def make(rng, d):
            return (write_csv(d / "train.csv", discrete(rng, n_train, features, levels)),
                    write_csv(d / "held.csv", discrete(rng, n_held, features, levels)), 0)
        return make

    def wrong_seed(make_rows):
        def make(rng, d):
            train = write_csv(d / "train.csv", make_rows(rng))
            return train, train, int(rng.integers(1, 100))
        return make

    def right_seed(make_rows):
        def make(rng, d):
            train = write_csv(d / "train.csv", make_rows(rng))
            return train, train, 0
        return make

    twins = lambda rng: (lambda x: np.concatenate([x, x[rng.choice(len(x), len(x) // 12, replace=False)]]))(continuous(rng, 1000))  # noqa: E731
    yield "held-out CSV, train 100 / held-out 60, 5% twins of training rows", False, held_out_twins(100, 60, 0.05)
    yield "held-out CSV, train 2000 / held-out 300, 5% twins", False, held_out_twins(2000, 300, 0.05)
    yield "held-out CSV, train 120 / held-out 40, 10% twins", False, held_out_twins(120, 40, 0.10)
    yield "held-out CSV, 5 features of 3 values, train 1000 / held-out 100", False, held_out_discrete(1000, 100, 5, 3)
    yield "held-out CSV, 6 features of 4 values, train 2000 / held-out 300", False, held_out_discrete(2000, 300, 6, 4)
    yield "the training CSV, compress's seed, 1000 rows with 8% twins", False, right_seed(twins)
    yield "the training CSV, another seed, 60 rows", True, wrong_seed(lambda rng: continuous(rng, 60))
    yield "the training CSV, another seed, 2000 rows", True, wrong_seed(lambda rng: continuous(rng, 2000))
    yield "the training CSV, another seed, 1000 rows with 8% twins", True, wrong_seed(twins)
    yield "the training CSV, another seed, 6 features of 4 values, 2000 rows", True, wrong_seed(lambda rng: discrete(rng, 2000, 6, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for name, should_refuse, make in cases():
        count = 0
        for rep in range(args.reps):
            with tempfile.TemporaryDirectory() as folder:
                train, data, seed = make(np.random.default_rng(rep), Path(folder))
                count += refused(train, data, seed)
        results.append({"case": name, "refusal_is_right": should_refuse, "refused": count, "reps": args.reps})
        print(f"{'RIGHT' if should_refuse else 'WRONG'} refusals {count:3d}/{args.reps}  {name}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"reps": args.reps, "cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
