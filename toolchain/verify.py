"""`cwtool verify`: run each exported artifact in its own runtime, count the protected classes'
false negatives, and gate them against a baseline. numpy only (plus one runtime): this is what
runs on the device and in CI, where torch, tensorflow and scikit-learn are not installed.

Rows: the test split of --data; but every row, in file order, when --data is an .npz with only
x and y (such a file is taken to be the evaluation set itself) -- unless the baseline's row count
shows it was measured on that file's seeded test split (`cwtool compress --data pool.npz`), then
that split. --split overrides.

Baseline (--baseline FILE), by what the file is:
- a `cwtool compress` report.json: its "baseline"."test" evaluation (the dense model on the
  test split, with per-sample predictions);
- an earlier `cwtool verify` JSON: the baseline it was checked against, so a chain of verify runs
  keeps comparing with the original reference; when that run had no baseline, its first
  artifact's evaluation (measure an accepted artifact once, then gate later ones against it);
- a `cwtool evaluate --json` file: that evaluation.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain import __version__
from toolchain.errors import UserError
from toolchain.gate import GATE_MODES, fn_gate
from toolchain.metrics import SCHEMA_VERSION as EVAL_SCHEMA, confusion_matrix, evaluate_logits

__all__ = ["VerifyRequest", "VERIFY_SCHEMA", "SPLITS", "load_rows_for", "load_baseline", "run_verify"]

VERIFY_SCHEMA = 1
SPLITS = ("auto", "train", "val", "test", "all")


@dataclass
class VerifyRequest:
    artifacts: list[str]
    data: str
    protect: list[str]
    baseline: str | None = None
    max_fn_increase: int | None = None
    max_fnr_increase: float | None = None
    max_fnr: float | None = None
    max_accuracy_drop: float | None = None
    gate: str = "plain"
    threads: int = 1
    split: str = "auto"
    seed: int = 0
    label_column: str | None = None
    notes: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.artifacts:
            raise UserError("give at least one artifact (.onnx or .tflite) to verify")
        if not self.protect:
            raise UserError("give at least one --protect-class (a class index or name)")
        if self.max_fn_increase is not None and self.max_fnr_increase is not None:
            raise UserError("give either --max-fn-increase (a count) or --max-fnr-increase (a fraction), not both")
        if self.max_fn_increase is not None and self.max_fn_increase < 0:
            raise UserError(f"--max-fn-increase {self.max_fn_increase} is negative: give a count >= 0")
        for flag, v in (("--max-fnr-increase", self.max_fnr_increase), ("--max-fnr", self.max_fnr),
                        ("--max-accuracy-drop", self.max_accuracy_drop)):
            if v is not None and not (0.0 <= v <= 1.0):
                raise UserError(f"{flag} {v} is out of range: give a fraction between 0 and 1 (0.02 = 2 points)")
        if self.gate not in GATE_MODES:
            raise UserError(f"--gate '{self.gate}' is not one of {', '.join(GATE_MODES)}")
        if self.split not in SPLITS:
            raise UserError(f"--split '{self.split}' is not one of {', '.join(SPLITS)}")
        if self.threads < 1:
            raise UserError(f"--threads {self.threads} must be at least 1")
        if self.baseline is None:
            given = [f for f, v in (("--max-fn-increase", self.max_fn_increase), ("--max-fnr-increase", self.max_fnr_increase),
                                    ("--max-accuracy-drop", self.max_accuracy_drop)) if v is not None]
            if given:
                raise UserError(f"{', '.join(given)} compares with a baseline: add --baseline REPORT.json, or use --max-fnr alone")


# --------------------------------------------------------------------------- data


def load_rows_for(data: str, split: str = "auto", seed: int = 0, label_column: str | None = None,
                  baseline_n: int | None = None) -> dict:
    """The rows to verify on: {"x", "y", "class_names", "split", "name"}.

    split "auto": every row in file order for an x/y-only .npz -- unless a baseline was measured
    on that file's test split (baseline_n equals the test split's size and not the file's); the
    test split for everything else.
    """
    from toolchain.data.rows import is_pool_npz, load_rows

    if split in ("auto", "all") and is_pool_npz(data):
        x, y, names = load_rows(data)
        if not (split == "auto" and baseline_n is not None and baseline_n != len(y)):
            return {"x": x, "y": y, "class_names": names, "split": "all", "name": Path(data).name}
    from toolchain.data import load_data

    dataset = load_data(data, seed=seed, label_column=label_column)
    used = "test" if split == "auto" else split
    x, y = dataset.split(used)
    return {"x": x, "y": y, "class_names": list(dataset.class_names), "split": used, "name": dataset.name}


# --------------------------------------------------------------------------- baseline


def _is_evaluation(obj) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in ("n", "accuracy", "protected", "fn_per_class"))


def load_baseline(path: str | Path) -> dict:
    """{"path", "from", "evaluation", "class_names"} from a compress report, verify JSON or evaluation JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"baseline {path} does not exist: give a cwtool report.json or verify JSON")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"cannot read baseline {path} as JSON ({' '.join(str(exc).split())[:120]}): give a cwtool report.json") from None
    names = obj.get("class_names") if isinstance(obj, dict) else None
    if isinstance(obj, dict) and obj.get("kind") == "cwtool-verify":
        ref = obj.get("baseline")
        if isinstance(ref, dict) and _is_evaluation(ref.get("evaluation")):
            return {"path": str(path), "from": "verify.baseline", "evaluation": ref["evaluation"], "class_names": names}
        arts = obj.get("artifacts") or []
        if arts and _is_evaluation(arts[0].get("evaluation")):
            return {"path": str(path), "from": f"verify.artifacts[0] ({arts[0].get('path')})",
                    "evaluation": arts[0]["evaluation"], "class_names": names}
        raise UserError(f"verify JSON {path} has neither a baseline nor an artifact evaluation: give a complete verify JSON")
    if isinstance(obj, dict) and isinstance(obj.get("baseline"), dict) and _is_evaluation(obj["baseline"].get("test")):
        return {"path": str(path), "from": "report.baseline.test", "evaluation": obj["baseline"]["test"], "class_names": names}
    if _is_evaluation(obj):
        return {"path": str(path), "from": "evaluation", "evaluation": obj, "class_names": None}
    raise UserError(
        f"baseline {path} is not a cwtool report.json (no baseline.test evaluation), verify JSON or evaluation JSON"
    )


def _check_baseline(base: dict, y: np.ndarray, num_classes: int, protected: list[int], notes: list[str]) -> dict:
    """Same rows, same classes, same protected classes; drops predictions that do not line up."""
    ev = dict(base["evaluation"])
    if int(ev["n"]) != len(y):
        raise UserError(
            f"the baseline was measured on {ev['n']} rows but --data gives {len(y)}: "
            "verify on the same data and split as the baseline (see --split)"
        )
    k = len(ev["fn_per_class"])
    if k != num_classes:
        raise UserError(f"the baseline has {k} classes but the artifact outputs {num_classes}: compare models with the same classes")
    have = [p["class"] for p in ev["protected"]]
    missing = [c for c in protected if c not in have]
    if missing:
        raise UserError(
            f"the baseline protects class {', '.join(map(str, have)) or 'none'}, not {', '.join(map(str, missing))}: "
            "pass the baseline's --protect-class or a baseline made for these classes"
        )
    support = np.bincount(y, minlength=num_classes)[:num_classes]
    base_support = ev.get("support_per_class") or [int(sum(r)) for r in ev.get("confusion", [])]
    if base_support and list(map(int, base_support)) != support.tolist():
        raise UserError(
            "the baseline's rows have other class counts than --data's: verify on the same data and split as the baseline"
        )
    pred = ev.get("predictions")
    if pred is not None:
        pred = np.asarray(pred, dtype=np.int64)
        ok = pred.shape == y.shape and ev.get("confusion") is not None
        if ok:
            ok = pred.size == 0 or (pred.min() >= 0 and pred.max() < num_classes)
            ok = ok and confusion_matrix(y, pred, num_classes).tolist() == ev["confusion"]
        if not ok:
            notes.append("the baseline's per-sample predictions do not line up with these rows (another order?): "
                         "paired McNemar test skipped, FN counts compared")
            ev.pop("predictions", None)
    return ev


# --------------------------------------------------------------------------- run


def _open(path: str, threads: int):
    from toolchain.runtimes import artifact_info, load_runner

    runner = load_runner(path, threads=threads)
    info = artifact_info(path)
    return runner, info


def run_verify(req: VerifyRequest) -> dict:
    """Evaluate every artifact, gate it, and return the verify result (JSON-ready)."""
    from toolchain.evaluate import check_labels, resolve_protected
    from toolchain.runtimes.base import cpu_lacks_vnni

    req.validate()
    base = load_baseline(req.baseline) if req.baseline else None
    base_n = int(base["evaluation"]["n"]) if base is not None else None
    rows = load_rows_for(req.data, req.split, req.seed, req.label_column, baseline_n=base_n)
    x, y = rows["x"], rows["y"]

    # Open every artifact before running any: a bad one stops the run before work is done.
    opened = [(path, *_open(path, req.threads)) for path in req.artifacts]
    notes = list(req.notes)
    protected: list[int] | None = None
    names: list[str] | None = None
    base_eval = None
    entries = []
    for path, runner, info in opened:
        k = runner.num_classes
        if not k:
            probe = runner.predict(x[:1])
            k = int(probe.shape[1])
        names = rows["class_names"] or (base or {}).get("class_names") or [str(i) for i in range(k)]
        if len(names) != k:
            names = [str(i) for i in range(k)]
        check_labels(y, k, what=f"--data ({rows['name']})")
        prot = resolve_protected(req.protect, names, k)
        if protected is not None and prot != protected:
            raise UserError("the artifacts have different classes: verify artifacts of the same model together")
        protected = prot
        if base is not None and base_eval is None:
            base_eval = _check_baseline(base, y, k, protected, notes)
        elif base_eval is not None and len(base_eval["fn_per_class"]) != k:
            raise UserError(f"{Path(path).name} outputs {k} classes, the baseline {len(base_eval['fn_per_class'])}")
        t0 = time.perf_counter()
        logits = runner.predict(x)
        seconds = time.perf_counter() - t0
        if logits.ndim != 2 or logits.shape[1] != k:
            raise UserError(f"{Path(path).name} returned outputs of shape {logits.shape}: cwtool verifies classifiers with (N, classes) logits")
        evaluation = evaluate_logits(y, logits, protected, k)
        pred = logits.argmax(1)
        evaluation["predictions"] = pred.tolist()
        gate = fn_gate(
            base_eval, evaluation, req.max_fn_increase, req.max_accuracy_drop,
            max_fnr_increase=req.max_fnr_increase, max_fnr=req.max_fnr, mode=req.gate, labels=y, class_names=names,
        )
        if (info.get("int8_weight_max") or 0) > 64 and cpu_lacks_vnni():
            notes.append(f"{Path(path).name}: its int8 weights use the full 8-bit range and this x86 CPU has no VNNI, where "
                         "onnxruntime's int8 kernels saturate on such weights: the FN measured here can be worse than on a VNNI "
                         "or ARM device. Quantize with 7-bit weights (cwtool's default) or verify on the target")
        agreement = None
        if base_eval is not None and base_eval.get("predictions") is not None:
            agreement = float(np.mean(np.asarray(base_eval["predictions"]) == pred))
        entries.append({
            "path": str(path),
            "format": info.get("format"),
            "precision": info.get("precision"),
            "bytes": info.get("bytes"),
            "runtime": runner.runtime,
            "layout": runner.layout,
            "input_shape": list(runner.input_shape),
            "seconds": seconds,
            "evaluation": evaluation,
            "agreement": agreement,
            "gate": gate,
        })

    reasons = [f"{Path(e['path']).name}: {r}" for e in entries for r in e["gate"]["reasons"]]
    budget = dict(entries[0]["gate"]["budget"]) if entries else {}
    return {
        "schema_version": VERIFY_SCHEMA,
        "kind": "cwtool-verify",
        "tool": {"name": "cwtool", "version": __version__, "evaluation_schema": EVAL_SCHEMA},
        "data": {"spec": str(req.data), "name": rows["name"], "split": rows["split"], "n": int(len(y)), "seed": req.seed},
        "protected": protected,
        "class_names": names,
        "baseline": None if base is None else {"path": base["path"], "from": base["from"], "evaluation": base_eval},
        "notes": notes,
        "artifacts": entries,
        "gate": {
            "passed": all(e["gate"]["passed"] for e in entries),
            "mode": req.gate,
            "budget": budget,
            "reasons": reasons,
            "failed": [e["path"] for e in entries if not e["gate"]["passed"]],
        },
    }
