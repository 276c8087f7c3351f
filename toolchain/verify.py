"""`cwtool verify`: run each exported artifact in its own runtime, count the protected classes'
false negatives, and gate them against a baseline. numpy only (plus one runtime): this is what
runs on the device and in CI, where torch, tensorflow and scikit-learn are not installed.

Rows: `toolchain.judged_rows` (which rows evaluate and verify judge, and how they say so).

Baseline (--baseline FILE): see `toolchain.baseline`, which reads, checks and matches it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolchain import __version__
from toolchain.baseline import check_baseline, load_baseline
from toolchain.batch_answers import answers_alone_otherwise, scaled_per_call
from toolchain.data.labels import declared_names, numbered_apart
from toolchain.errors import UserError, one_line
from toolchain.gate import DEFAULT_MAX_ACCURACY_DROP, GATE_MODES, class_label, fn_gate
from toolchain.metrics import SCHEMA_VERSION as EVAL_SCHEMA, evaluate_logits, nonfinite_rows
from toolchain.judged_rows import SPLITS, describe_rows, load_rows_for, share_note
from toolchain.provenance import artifact_sha256, rows_sha256
from toolchain.recorded import (check_baseline_order, check_class_order, column_mismatch, numbers_as_indices,
                                preparation_notes, preprocessing_mismatch, recorded_class_names)
from toolchain.verify_inputs import distinct_names, image_size_hint, importable, load_verify_rows, no_sidecar_hint, open_artifact

__all__ = ["VerifyRequest", "VERIFY_SCHEMA", "SPLITS", "describe_rows", "load_rows_for", "load_baseline", "run_verify"]

VERIFY_SCHEMA = 1
MAX_THREADS = 256


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
    class_names: list[str] | None = None
    image_size: tuple[int, int] | None = None
    input_shape: tuple[int, ...] | None = None
    resize: int | None = None  # ImageFolder: the shorter side, center-cropped to image_size
    normalize: str | tuple | None = None  # ImageFolder: auto, none, imagenet or (means, stds)
    color: str | None = None  # ImageFolder: None (the artifact's recorded color, else as the images are), "RGB" or "L"
    allow_other_data: bool = False
    notes: list[str] = field(default_factory=list)
    keep_rows: bool = False  # --save-rows: the rows judged are left in ``rows_kept`` (x, y, class_names) for the CLI to write
    rows_kept: dict = field(default_factory=dict)

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
                example = "0.02 = 2 points" if flag == "--max-accuracy-drop" else "0.05 = 5% of the class's samples"
                raise UserError(f"{flag} {v} is out of range: give a fraction between 0 and 1 ({example})")
        if self.gate not in GATE_MODES:
            raise UserError(f"--gate '{self.gate}' is not one of {', '.join(GATE_MODES)}")
        if self.split not in SPLITS:
            raise UserError(f"--split '{self.split}' is not one of {', '.join(SPLITS)}")
        if not 1 <= self.threads <= MAX_THREADS:
            raise UserError(f"--threads {self.threads} is out of range: give 1 to {MAX_THREADS}")
        if self.allow_other_data and self.baseline is None:
            raise UserError("--allow-other-data compares with a baseline measured on other rows: add --baseline, or drop it")
        if self.baseline is None:
            given = [f for f, v in (("--max-fn-increase", self.max_fn_increase), ("--max-fnr-increase", self.max_fnr_increase),
                                    ("--max-accuracy-drop", self.max_accuracy_drop)) if v is not None]
            if given:
                raise UserError(f"{', '.join(given)} compare{'s' if len(given) == 1 else ''} with a baseline: add --baseline REPORT.json, or use --max-fnr alone")


# --------------------------------------------------------------------------- data


def _promise(gate: dict, evaluation: dict, base_eval: dict | None, max_fn_increase: int | None) -> dict:
    """compress's FN promise, measured on these rows: from the paired disagreements with the baseline, the
    probability that on new data of this size the artifact misses at most the baseline's FN + the budget,
    and what it pays in false positives here. Empty without per-sample pairing."""
    from toolchain.promise import promise_confidence

    out = {}
    fp_base = {p["class"]: p.get("fp") for p in (base_eval or {}).get("protected", [])}
    fp_here = {p["class"]: p.get("fp") for p in evaluation["protected"]}
    for check in gate["checks"]:
        if "b" not in check:
            continue
        k = check["class"]
        # the budget the gate judged by: --max-fnr-increase gives it as a share of these rows, not --max-fn-increase's 0
        budget = max(0, int(check["limit"]) - int(check["baseline_fn"])) if "limit" in check else int(max_fn_increase or 0)
        out[str(k)] = {"b": check["b"], "c": check["c"], "n": check["support"], "budget": budget, "baseline_fn": int(check["baseline_fn"]),
                       "confidence": promise_confidence(check["b"], check["c"], check["support"], budget=budget),
                       "fp": fp_here.get(k), "baseline_fp": fp_base.get(k)}
    return out


def _promise_notes(entries: list[dict], names: list[str]) -> list[str]:
    """Where a file's stated probability tells little: a promise that says nothing (the budget allows missing every
    sample of the class, or the baseline misses them all), or one resting on few samples of the class (a probability
    from 1 positive was stated as plainly as one from 1,000)."""
    from toolchain.promise import SMALL_SPLIT, empty_promise

    notes, few = [], {}
    for e in entries:
        for k, v in (e.get("promise") or {}).items():
            label = class_label(int(k), names)
            why = empty_promise(v["n"], v["baseline_fn"], v["budget"], reference="the baseline")
            if why:
                notes.append(f"{e['name']}, {label}: {why}: its probability holds whatever the file does, the promise says "
                             "nothing about the class")
            elif v["n"] < SMALL_SPLIT:
                few[label] = v["n"]
    if few:
        counts = ", ".join(f"{label}: {n}" for label, n in few.items())
        notes.append(f"the promise's probabilities rest on fewer than {SMALL_SPLIT} samples of a class here ({counts}): "
                     "they can be optimistic, and judge new data of that size only (docs/FN_PROMISE.md); more rows of the "
                     "class make them more reliable")
    return notes


def _passes_with(gate: dict, fn_budget: int) -> bool:
    """Whether a failed file's verdict would turn with this FN budget: every check fails on FN alone, by no more. On other
    rows than the baseline's (unpaired: no FN change, the budget scales with the rows) that is not known: not said."""
    checks = gate.get("checks") or []
    if (gate.get("accuracy") or {}).get("passed") is False or gate.get("collapse"):
        return False

    def turns(check) -> bool:
        change = check.get("fn_change")
        return bool(check.get("over_budget")) and isinstance(change, int) and change <= fn_budget

    return all(c.get("passed") or turns(c) for c in checks)


def _opening_notes(req: VerifyRequest, got, base: dict | None, opened: list) -> list[str]:
    """What verify says before judging any file: the rows' share of a pool, an ONNX graph left unchecked, a TFLite file
    without its sidecar, how the rows were prepared."""
    from toolchain.runtimes.base import sidecar_path

    rows, x = got.rows, got.rows["x"]
    notes = []
    # with a baseline: its rows, checked below; an .npz narrowed to the pool's test split: said in got.said
    share = share_note(rows) if base is None and req.split == "auto" and not got.narrowed else None
    if share:
        notes.append(share)
    if any(Path(path).suffix.lower() == ".onnx" for path, _, _ in opened) and not importable("onnx"):
        notes.append("the onnx package is not installed: an ONNX file's activation sizes were not checked before it ran (a "
                     "small crafted file can ask for gigabytes); pip install onnx to check them")
    for path, runner, _ in opened:
        if Path(path).suffix.lower() == ".tflite" and not runner.metadata:
            name = runner.shown_name
            what = (f"{name}: its sidecar records nothing cwtool reads (unreadable, or not a JSON object of cwtool's)"
                    if sidecar_path(path).exists() else f"{name} has no sidecar {sidecar_path(path).name} beside it (compress and export write one)")
            notes.append(f"{what}: the class names and preprocessing it was made for, and the rows its model was trained or "
                         "tuned on (no refusal of them), are unknown here, and its layout "
                         f"({runner.layout}) {'guessed from its input shape' if getattr(runner, 'layout_source', '') == 'guess' else 'as given'}; "
                         "copy the sidecar with the file")
    notes += preparation_notes(got.prepared, tuple(x.shape[1:]), "the artifacts record")
    return notes


def _failed_run_reason(base: dict) -> str:
    """Why every file fails against the baseline of a compress run that recommended no file (a green CI step had shipped
    a file of a run that did not keep its FN promise: "gate: passed, against a compress run that did NOT ...")."""
    failed = ("did not stay within its accuracy budget on validation" if base.get("run_binds") == "accuracy" else
              "did not keep its FN promise on validation")
    return (f"the baseline's compress run {failed} and recommended no file to deploy: no file passes against it (read its "
            "report.md; to judge a file against a model alone, give that model's `cwtool evaluate --json` as --baseline)")


def _baseline_run_notes(base: dict | None, entries: list[dict], req: VerifyRequest, max_accuracy_drop: float | None) -> list[str]:
    """What the baseline's compress run says of the verdicts: a rule older than this cwtool's, and the budgets it allowed
    where the files fail only by verify's own defaults (a run that recommended no file fails them: no budget turns that)."""
    notes = []
    run_budget = (base or {}).get("run_budget")
    if (base or {}).get("run_failed"):
        return notes
    if (base or {}).get("run_promise_older_rule"):
        notes.append("the baseline's compress run said it kept its FN promise by an older cwtool's rule (its report.json "
                     "records no judged counts: written before the hardest positive caught was counted as missed); that "
                     "is not judged again here: run compress with this cwtool to have the promise judged by its rule")
    run_drop = (base or {}).get("run_accuracy_drop")
    if run_drop is not None and req.max_accuracy_drop is None and run_drop > max_accuracy_drop + 1e-12 and any(  # a looser one
            (e["gate"].get("accuracy") or {}).get("passed") is False for e in entries):
        notes.append(f"the baseline's compress run allowed --max-accuracy-drop {run_drop:g}; verify holds files to "
                     f"{max_accuracy_drop:g} unless told: pass --max-accuracy-drop {run_drop:g} to check them against the run's own budget")
    if run_budget and req.max_fn_increase is None and req.max_fnr_increase is None and any(
            _passes_with(e["gate"], run_budget) for e in entries if not e["gate"]["passed"]):
        notes.append(f"the baseline's compress run allowed --max-fn-increase {run_budget}; verify holds files to 0 unless told: "
                     f"pass --max-fn-increase {run_budget} to check them against the run's own budget")
    return notes


def run_verify(req: VerifyRequest) -> dict:
    """Evaluate every artifact, gate it, and return the verify result (JSON-ready)."""
    from toolchain.evaluate import check_labels, check_output_width, resolve_protected
    from toolchain.runtimes.base import cpu_lacks_vnni

    req.validate()
    base = load_baseline(req.baseline) if req.baseline else None
    base_n = int(base["evaluation"]["n"]) if base is not None else None
    got = load_verify_rows(req, base_n)  # rows first: bad data is named before the artifacts run
    rows, opened = got.rows, got.opened
    x, y = rows["x"], rows["y"]
    max_accuracy_drop = req.max_accuracy_drop
    if max_accuracy_drop is None and base is not None:
        max_accuracy_drop = DEFAULT_MAX_ACCURACY_DROP

    # Open every artifact before running any: a bad one stops the run before work is done.
    if opened is None:
        opened = [(path, *open_artifact(path, req.threads)) for path in req.artifacts]
    for (path, runner, _), name in zip(opened, distinct_names([path for path, _, _ in opened])):
        runner.shown_name = name  # its progress lines tell it from another file of its name
        try:
            runner.check_input(x)  # before every row is read: 20,000 images resized to a wrong size take minutes
        except UserError as exc:
            hint = no_sidecar_hint([(path, runner, None)], req.data) or image_size_hint(runner, x, req.data, got.prepared)
            raise UserError(f"{exc}{hint}") from exc
    digest = rows_sha256(x, y)  # reads every row (an ImageFolder decodes them): after the artifacts opened
    notes = list(req.notes) + got.said + _opening_notes(req, got, base, opened)
    refused = next((n for n in (column_mismatch(runner, rows) for _, runner, _ in opened) if n), None)
    if refused:
        raise UserError(refused)
    prepared_otherwise = []  # an artifact made for inputs prepared otherwise than these rows: said, and named first below
    if not (base is not None and base["evaluation"].get("rows_sha256") == digest):  # the very rows the baseline measured
        prepared_otherwise = [n for n in (preprocessing_mismatch(runner, rows) for _, runner, _ in opened) if n]
        notes += prepared_otherwise
    protected: list[int] | None = None
    names: list[str] | None = None
    base_eval, same_rows = None, True
    declared = declared_names(rows["class_names"])
    entries = []
    for path, runner, info in opened:
        k = runner.num_classes
        if not k:
            probe = runner.predict(x[:1])
            k = int(probe.shape[1])
        recorded = recorded_class_names(runner, k)
        if declared is not None and recorded is not None and len(declared) < k and set(declared) < set(recorded):
            import shlex

            from toolchain.data.labels import class_names_value

            missing = [n for n in recorded if n not in declared]  # a device's folder without some classes: number it as the file
            raise UserError(f"--data names {len(declared)} of the {k} classes {Path(path).name} records (none of "
                            f"{', '.join(missing[:5])}): give --class-names {shlex.quote(class_names_value(recorded))} so its labels are the file's",
                            whole=True)
        check_output_width(k, y, declared, Path(path).name)
        numbered = recorded_class_names(runner, k, placeholders=True)  # a file made on data without names records 0..k-1
        check_class_order(path, recorded or (numbered if declared and numbered and (sorted(declared) == sorted(numbered)
                                                                     or numbered_apart(declared, numbered)) else None), declared)
        if recorded is None and declared and numbered == [str(i) for i in range(k)] and declared != numbered \
                and not any("records its classes as numbers" in n for n in notes):  # their order alone says which is which
            notes.append(f"{Path(path).name} records its classes as numbers (0 to {k - 1}), --data by name: --data's "
                         f"{', '.join(one_line(n)[:30] for n in declared[:3])}{', ...' if k > 3 else ''} are judged as its "
                         f"classes {', '.join(map(str, range(min(k, 3))))}{', ...' if k > 3 else ''}, in that order")
        base_numbered = (base or {}).get("class_names")  # a baseline of data without names records 0..k-1 as well
        base_names = declared_names(base_numbered) or (list(base_numbered) if declared and isinstance(base_numbered, list)
                                                         and sorted(map(str, base_numbered)) == sorted(declared) else None)
        check_baseline_order(base, base_names, declared or recorded_class_names(runner, k, placeholders=True),
                                "--data" if declared else Path(path).name)
        names = declared or recorded or base_names or [str(i) for i in range(k)]
        if len(names) != k:
            names = [str(i) for i in range(k)]
        check_labels(y, k, what=f"--data ({rows['name']})")
        # a number names the data's label unless the data itself names its classes: the names a file records (an artifact,
        # a baseline: files cwtool does not trust) show, but never renumber, the class a gate judges
        prot = resolve_protected(req.protect, names if declared else numbers_as_indices(names), k)
        for c in prot if not declared else []:  # a number the file names otherwise: which one was judged, in words
            if names[c] != str(c) and names[c].strip().isdigit() and not any(f"-p {c} is" in n for n in notes):
                notes.append(f"-p {c} is the data's label {c}, which {Path(path).name} names '{names[c]}': rows without class "
                             f"names are judged by label; give rows that name their classes to choose by name")
        if protected is not None and prot != protected:
            raise UserError("the artifacts have different classes: verify artifacts of the same model together")
        protected = prot
        only = [c for c in prot if np.all(y == c)]
        if only and not any("holds only rows of protected class" in n for n in notes):
            notes.append(f"--data holds only rows of protected class {', '.join(map(str, only))}: a model that answers it for "
                         "every row misses none, and nothing here can tell (no row of another class to get wrong); give rows of "
                         "the other classes too")
        absent = [c for c in prot if not np.any(y == c)]
        if absent:
            raise UserError(f"--data ({rows['name']}, {rows['split']}, {len(y)} rows) holds no row of protected class "
                            f"{', '.join(map(str, absent))}: its false negatives cannot be counted; give rows that include it")
        if base is not None and base_eval is None:
            base_eval, same_rows = check_baseline(base, y, digest, k, protected, req.allow_other_data, notes,
                                                  here=describe_rows(rows, digest),
                                                  cause=prepared_otherwise[0] if prepared_otherwise else None)
        elif base_eval is not None and len(base_eval["fn_per_class"]) != k:
            raise UserError(f"{Path(path).name} outputs {k} classes, the baseline {len(base_eval['fn_per_class'])}")
        t0 = time.perf_counter()
        logits = runner.predict(x)
        seconds = time.perf_counter() - t0
        if logits.ndim != 2 or logits.shape[1] != k:
            raise UserError(f"{Path(path).name} returned outputs of shape {logits.shape}: cwtool verifies classifiers with (N, classes) logits")
        bad = nonfinite_rows(logits)
        if bad:  # one line for the run, naming the file (three files given: which one?)
            raise UserError(f"{Path(path).name} gives NaN or infinite logits on {bad:,} of the {len(logits):,} rows: check the "
                            "file (an fp16 file overflows beyond 65,504) and that its inputs are prepared as in its training")
        evaluation = evaluate_logits(y, logits, protected, k)
        pred = logits.argmax(1)
        evaluation["predictions"] = pred.tolist()
        evaluation["rows_sha256"] = digest
        gate = fn_gate(
            base_eval, evaluation, req.max_fn_increase, max_accuracy_drop,
            max_fnr_increase=req.max_fnr_increase, max_fnr=req.max_fnr, mode=req.gate, labels=y, class_names=names,
            same_rows=same_rows,
        )
        alone = answers_alone_otherwise(runner, x, logits)
        if alone is not None and scaled_per_call(path):  # its int8 activations follow the call's rows: by design, said
            notes.append(f"{Path(path).name} is dynamically quantized (its activations are scaled per call, on the rows of "
                         f"the call): it {alone[0]}")
        elif alone is not None:
            gate["passed"] = False
            gate["reasons"] = [*gate.get("reasons", []), f"{alone[0]} ({alone[1]})"]
        if (base or {}).get("run_failed"):  # a run that recommended no file vets none: a CI's exit status is the verdict
            gate["passed"] = False
            gate["reasons"] = [*gate.get("reasons", []), _failed_run_reason(base)]
        if (info.get("int8_weight_max") or 0) > 64 and cpu_lacks_vnni():
            notes.append(f"{Path(path).name}: its int8 weights use the full 8-bit range and this x86 CPU has no VNNI, where "
                         "onnxruntime's int8 kernels saturate on such weights: the FN measured here can be worse than on a VNNI "
                         "or ARM device. Quantize with 7-bit weights (cwtool's default) or verify on the target")
        agreement = None
        if base_eval is not None and base_eval.get("predictions") is not None:
            agreement = float(np.mean(np.asarray(base_eval["predictions"]) == pred))
        promise = _promise(gate, evaluation, base_eval, req.max_fn_increase)
        entries.append({
            "path": str(path),
            "name": runner.shown_name,  # the file name, with the folders that tell it from another of its name
            "format": info.get("format"),
            "precision": info.get("precision"),
            "bytes": info.get("bytes"),  # the model file and its external data
            **artifact_sha256(path, runner.parts_identity),  # sha256 of the model file, and of every file it is made of
            "runtime": runner.runtime,
            "layout": runner.layout,
            "input_shape": list(runner.input_shape),
            "seconds": seconds,
            "evaluation": evaluation,
            "agreement": agreement,  # with the baseline's per-sample predictions (a compress report's: with its pruned model)
            **({"agreement_with": "the baseline"} if agreement is not None else {}),
            "promise": promise,
            "gate": gate,
        })

    reasons = [f"{e['name']}: {r}" for e in entries for r in e["gate"]["reasons"]]
    budget = dict(entries[0]["gate"]["budget"]) if entries else {}
    notes += _baseline_run_notes(base, entries, req, max_accuracy_drop)
    notes += _promise_notes(entries, names)
    if req.keep_rows:
        req.rows_kept.update(x=x, y=y, class_names=names)
    return {
        "schema_version": VERIFY_SCHEMA,
        "kind": "cwtool-verify",
        "tool": {"name": "cwtool", "version": __version__, "evaluation_schema": EVAL_SCHEMA},
        "data": {"spec": str(req.data), "name": rows["name"], "split": rows["split"], "n": int(len(y)), "seed": req.seed,
                 "rows_sha256": digest, "rows": describe_rows(rows, digest), "preprocessing": rows["note"], "same_rows_as_baseline": None if base is None else same_rows,
                 "only_protected": bool(protected) and bool(np.all(np.isin(y, protected)))},
        "protected": protected,
        "class_names": names,
        # the baseline as read, its predictions kept where this comparison was unpaired: they belong to its own rows, and
        # this JSON chained as the next baseline on those rows had lost them (and was refused)
        "baseline": None if base is None else {"path": base["path"], "from": base["from"],
                                               "evaluation": None if base_eval is None else base["evaluation"],
                                               "run_failed": bool(base.get("run_failed")),
                                               **({"run_binds": "accuracy"} if base.get("run_binds") == "accuracy" else {}),
                                               **({"run_promise_older_rule": True} if base.get("run_promise_older_rule") else {}),
                                               **{k: base[k] for k in ("run_budget", "run_accuracy_drop") if k in base},
                                               "paired": bool(base_eval and base_eval.get("predictions") is not None)},
        "notes": notes,
        "artifacts": entries,
        "gate": {
            "passed": all(e["gate"]["passed"] for e in entries),
            "fn_budget": base is not None or req.max_fnr is not None,  # without one, only class collapse is gated
            "mode": req.gate,
            "budget": budget,
            "reasons": reasons,
            "failed": [e["path"] for e in entries if not e["gate"]["passed"]],
        },
    }
