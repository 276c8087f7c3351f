"""The baseline `cwtool verify` gates against: read from a file, checked field by field, and matched
to the rows verified.

A baseline (--baseline FILE) is, by what the file is:
- a `cwtool compress` report.json: its "baseline"."test" evaluation (the dense model on the
  test split, with per-sample predictions);
- an earlier `cwtool verify` JSON: the baseline it was checked against, so a chain of verify runs
  keeps comparing with the original reference; when that run had no baseline, its first
  artifact's evaluation (measure an accepted artifact once, then gate later ones against it);
- a `cwtool evaluate --json` file: that evaluation.

The baseline is untrusted input: every field the gate reads is checked for type and size. Its rows
must be the rows verified here: report.json and verify/evaluate JSON carry ``rows_sha256`` (the
model inputs and labels, in order); a different fingerprint, row count or class count is refused
(exit 2), unless --allow-other-data asks for a deliberate comparison on other rows, which is then
unpaired (rates, not counts) and says so in every output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from toolchain.errors import UserError, one_line
from toolchain.input_paths import absent
from toolchain.limits import MAX_CLASSES
from toolchain.metrics import confusion_matrix

__all__ = ["MAX_BASELINE_BYTES", "load_baseline", "check_baseline"]

MAX_BASELINE_BYTES = 1 << 30  # a report stores one prediction per row: ~10 bytes each


def _is_evaluation(obj) -> bool:
    return isinstance(obj, dict) and all(k in obj for k in ("n", "accuracy", "protected", "fn_per_class"))


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 40


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1  # float(10**400) would raise


def _checked_evaluation(ev: dict, path: Path) -> dict:
    """The fields the gate reads, each of the type and size cwtool writes; a UserError naming the first that is not."""
    def bad(what: str) -> UserError:
        return UserError(f"baseline {path} is malformed ({what}): give the JSON file cwtool wrote, unedited")

    if not _count(ev["n"]) or ev["n"] == 0:
        raise bad("n is not a positive row count")
    n = ev["n"]
    if not _fraction(ev["accuracy"]):
        raise bad("accuracy is not a number between 0 and 1")
    fnpc = ev["fn_per_class"]
    if not isinstance(fnpc, list) or not 2 <= len(fnpc) <= MAX_CLASSES or not all(_count(v) for v in fnpc):
        raise bad("fn_per_class is not a list of counts, one per class")
    k = len(fnpc)
    prot = ev["protected"]
    if not isinstance(prot, list) or not prot or len(prot) > k:
        raise bad("protected is not a list of protected-class entries")
    for entry in prot:
        if not isinstance(entry, dict) or not (isinstance(entry.get("class"), int) and _count(entry["class"]) and entry["class"] < k):
            raise bad("a protected entry has no class index within the classes")
        if not _count(entry.get("fn")) or not _count(entry.get("support", 0)) or entry["fn"] > entry.get("support", n):
            raise bad(f"protected class {entry['class']} has no valid fn / support counts")
        if entry.get("fp") is not None and not _count(entry["fp"]):
            raise bad(f"protected class {entry['class']} has an fp that is not a count")
        if entry.get("fnr") is not None and not _fraction(entry["fnr"]):
            raise bad(f"protected class {entry['class']} has an fnr outside [0, 1]")
    cm = ev.get("confusion")
    if cm is not None and (not isinstance(cm, list) or len(cm) != k
                           or not all(isinstance(r, list) and len(r) == k and all(_count(v) for v in r) for r in cm)):
        raise bad(f"confusion is not a {k}x{k} matrix of counts")
    sup = ev.get("support_per_class")
    if sup is not None and (not isinstance(sup, list) or len(sup) != k or not all(_count(v) for v in sup)):
        raise bad("support_per_class is not a list of counts, one per class")
    pred = ev.get("predictions")
    if pred is not None and (not isinstance(pred, list) or len(pred) != n
                             or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < k for v in pred)):
        raise bad(f"predictions is not a list of {n} class indices")
    digest = ev.get("rows_sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
        raise bad("rows_sha256 is not a sha256 hex digest")
    # every row missed is a false negative of its own class: accuracy and the FN counts say the same, matrix or not (a
    # file stripped of its matrix and predictions passed every other check with an FN edited to loosen the budget)
    if sum(fnpc) > n or abs(ev["accuracy"] - (1 - sum(fnpc) / n)) > 0.5 / n:
        raise bad(f"its accuracy {ev['accuracy']:g} is not 1 - its {sum(fnpc)} false negatives / {n} rows")
    # the counts the gate reads must be the counts the file's own matrix says: an edited FN loosens the budget
    for entry in prot:
        c, support = entry["class"], entry.get("support")
        if entry["fn"] != fnpc[c]:
            raise bad(f"protected class {c} has fn {entry['fn']} but fn_per_class says {fnpc[c]}")
        if support is not None and sup is not None and support != sup[c]:
            raise bad(f"protected class {c} has support {support} but support_per_class says {sup[c]}")
        if entry.get("fnr") is not None and support and abs(entry["fnr"] - entry["fn"] / support) > 1e-6:
            raise bad(f"protected class {c} has fnr {entry['fnr']:g}, not its fn / support")
    if sup is not None and (sum(sup) != n or any(fn > s for fn, s in zip(fnpc, sup))):  # what a matrix's rows would say
        raise bad("support_per_class does not count its n rows, or a class misses more rows than it has")
    fppc = ev.get("fp_per_class")  # the collapse rules read it where a file holds no matrix (above 100 classes)
    if fppc is not None:
        if not isinstance(fppc, list) or len(fppc) != k or not all(_count(v) for v in fppc):
            raise bad("fp_per_class is not a list of counts, one per class")
        if sum(fppc) != sum(fnpc):  # every row missed is one class's FN and another's FP
            raise bad(f"its false positives ({sum(fppc)}) are not its false negatives ({sum(fnpc)})")
        if sup is not None and any(fp > n - s for fp, s in zip(fppc, sup)):
            raise bad("a class has more false positives than rows of other classes")
    if cm is not None:
        off_diagonal = [sum(row) - row[i] for i, row in enumerate(cm)]
        if off_diagonal != fnpc:
            c = next(i for i in range(k) if off_diagonal[i] != fnpc[i])
            raise bad(f"fn_per_class says {fnpc[c]} for class {c} but its confusion matrix {off_diagonal[c]}")
        if sum(map(sum, cm)) != n:
            raise bad(f"its confusion matrix counts {sum(map(sum, cm))} rows, not n = {n}")
        if abs(ev["accuracy"] - sum(cm[i][i] for i in range(k)) / n) > 1e-6:
            raise bad("its accuracy is not its confusion matrix's")
        if sup is not None and [sum(row) for row in cm] != sup:
            raise bad("support_per_class is not its confusion matrix's rows")
        for entry in prot:
            c = entry["class"]
            if entry.get("support") is not None and entry["support"] != sum(cm[c]):
                raise bad(f"protected class {c} has support {entry['support']} but its confusion matrix {sum(cm[c])}")
            if entry.get("fp") is not None and entry["fp"] != sum(cm[i][c] for i in range(k)) - cm[c][c]:
                raise bad(f"protected class {c} has an fp that is not its confusion matrix's")
    if pred is not None and cm is not None:
        predicted = [0] * k
        for v in pred:
            predicted[v] += 1
        if predicted != [sum(cm[i][j] for i in range(k)) for j in range(k)]:
            raise bad("its predictions do not add up to its confusion matrix's columns")
    return ev


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {one_line(twice)[:40]!r} is given twice in one object (cwtool writes each once)")
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (cwtool writes none)")


def load_baseline(path: str | Path) -> dict:
    """{"path", "from", "evaluation", "class_names"} from a compress report, verify JSON or evaluation JSON."""
    from toolchain.small_files import read_small_file

    path = Path(path)
    if not path.exists():
        raise UserError(f"baseline {path} {absent(path)}: give a compress run's report.json, an export folder's export.json, a verify JSON or an evaluate JSON")
    try:
        text = read_small_file(path, MAX_BASELINE_BYTES, "baseline", "give a compress run's report.json, an export folder's export.json, a verify JSON or an evaluate JSON").decode("utf-8")
        # a byte-order mark (an editor's save) is no content; a key given twice is read one way here and another elsewhere
        obj = json.loads(text.removeprefix("\ufeff"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:  # a model or an .npz given by mistake: the codec's words said nothing of that
        raise UserError(f"baseline {path} is not a JSON file (not text): give a compress run's report.json, an export folder's export.json, a verify JSON or an evaluate JSON") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError(f"cannot read baseline {path} as JSON ({' '.join(str(exc).split())[:120]}): give a compress run's report.json, an export folder's export.json, a verify JSON or an evaluate JSON") from None
    version = obj.get("schema_version", 1) if isinstance(obj, dict) else 1
    if version != 1 or isinstance(version, bool):  # every document cwtool writes (report, verify, evaluation) is at 1
        raise UserError(f"baseline {path} has schema_version {one_line(json.dumps(version))[:20]}, and this cwtool reads 1: give a report.json of "
                        "this cwtool version, or verify with the version that wrote it")
    names = obj.get("class_names") if isinstance(obj, dict) else None
    if names is not None and not (isinstance(names, list) and len(names) <= MAX_CLASSES and all(isinstance(n, str) for n in names)):
        names = None  # a label, not a decision: ignored when it is not a list of strings
    elif names is not None:
        names = [one_line(n) for n in names]  # printed inside console lines
    found = _find_evaluation(obj, path, names)
    found["evaluation"] = _checked_evaluation(found["evaluation"], path)
    return found


def _measured_on(rows) -> str | None:
    """Which rows the baseline was measured on, in verify's words, from what the file says (only ever shown)."""
    if isinstance(rows, str):
        return one_line(rows)[:200]
    if not isinstance(rows, dict) or not isinstance(rows.get("name"), str) or not isinstance(rows.get("split"), str):
        return None
    given = (rows.get("held_out_from") or {}) if isinstance(rows.get("held_out_from"), dict) else {}
    if rows["split"] == "test" and isinstance(given.get("test"), str):  # a compress run's --test, read whole
        return one_line(f"every row of its --test {given['test']}")[:200]
    seed = rows.get("seed")
    seeded = type(seed) is int and rows["split"] != "all" and not rows.get("given_splits")
    return one_line(f"the {rows['split']} split of {rows['name']}" + (f", split seed {seed}" if seeded else ""))[:200]


def _find_evaluation(obj, path: Path, names) -> dict:
    found = _found_evaluation(obj, path, names)
    data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
    rows = data.get("rows") if found["from"].startswith("verify") else {**data, "split": "test"} if data else obj.get("rows")
    found["measured_on"] = _measured_on(rows)
    if found["from"] == "verify.baseline" and data.get("same_rows_as_baseline") is False:
        # a verify under --allow-other-data judged other rows than its baseline's: what it names are not these
        found["measured_on"] = "the rows of that verify's own baseline, not the rows it judged (it ran with --allow-other-data)"
    return found


def _run_facts(failed: bool, binds, budget, drop) -> dict:
    """What a baseline says of the compress run behind it, each value checked (the file is untrusted) and only ever said
    in notes, never gated on: whether it recommended no file and which budget stopped it ("accuracy", where the promise
    held), and its own --max-fn-increase and --max-accuracy-drop (verify's gate takes its budgets from its options)."""
    return {**({"run_failed": True} if failed else {}),
            **({"run_binds": "accuracy"} if failed and binds == "accuracy" else {}),
            **({"run_budget": budget} if type(budget) is int and 0 < budget <= 10_000 else {}),
            **({"run_accuracy_drop": float(drop)} if type(drop) in (int, float) and 0 <= drop <= 1 else {})}


def _found_evaluation(obj, path: Path, names) -> dict:
    if isinstance(obj, dict) and obj.get("kind") == "cwtool-verify":
        ref = obj.get("baseline")
        if isinstance(ref, dict) and _is_evaluation(ref.get("evaluation")):
            # a verify of a compress run, chained: what it said of the run follows its baseline
            return {"path": str(path), "from": "verify.baseline", "evaluation": ref["evaluation"], "class_names": names,
                    **_run_facts(ref.get("run_failed") is True, ref.get("run_binds"), ref.get("run_budget"), ref.get("run_accuracy_drop")),
                    **({"run_promise_older_rule": True} if ref.get("run_promise_older_rule") is True else {})}
        arts = obj.get("artifacts") or []
        if isinstance(arts, list) and arts and isinstance(arts[0], dict) and _is_evaluation(arts[0].get("evaluation")):
            return {"path": str(path), "from": f"verify.artifacts[0] ({one_line(arts[0].get('path'))[:200]})",
                    "evaluation": arts[0]["evaluation"], "class_names": names}
        raise UserError(f"verify JSON {path} has neither a baseline nor an artifact evaluation: give a complete verify JSON")
    if isinstance(obj, dict) and isinstance(obj.get("baseline"), dict) and _is_evaluation(obj["baseline"].get("test")):
        config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        promise = obj.get("promise") if isinstance(obj.get("promise"), dict) else {}
        # a compress run that did not keep its promise recommends no file (a failed int8 file alone does not withhold the
        # others)
        classes = promise.get("classes") if isinstance(promise.get("classes"), dict) else {}
        # a report from before the edge rule (its hardest positive caught counted as missed) says kept where this
        # cwtool may not: it records no judged counts, and its verdict is the old rule's
        older_rule = promise.get("met_on_val") is True and any(isinstance(v, dict) and "b_judged" not in v for v in classes.values())
        # an export.json of a failed run's pruned.pt records that run's verdict
        run = obj.get("compress_run") if isinstance(obj.get("compress_run"), dict) else {}
        failed = promise.get("met_on_val") is False or run.get("budget_met") is False
        # an export.json's reference is the torch model it exported (a pruned one, maybe), not a compress run's dense model
        where = "export.baseline.test: the torch model it exported" if obj.get("kind") == "cwtool-export" else "report.baseline.test"
        return {"path": str(path), "from": where, "evaluation": obj["baseline"]["test"], "class_names": names,
                **_run_facts(failed, promise.get("binds") if promise else run.get("binds"), config.get("max_fn_increase"),
                             config.get("max_accuracy_drop")), **({"run_promise_older_rule": True} if older_rule else {})}
    if _is_evaluation(obj):
        return {"path": str(path), "from": "evaluation", "evaluation": obj, "class_names": None}
    raise UserError(f"baseline {path} is none of the files a baseline is (no baseline.test evaluation, no verify or evaluate "
                    f"result): give a compress run's report.json, an export folder's export.json, a verify JSON or an evaluate JSON")


def check_baseline(base: dict, y: np.ndarray, rows_digest: str, num_classes: int, protected: list[int],
                    allow_other_data: bool, notes: list[str], here: str | None = None,
                    cause: str | None = None) -> tuple[dict, bool]:
    """(the baseline evaluation, whether its rows are these rows). Same classes and protected classes
    always; other rows only under --allow-other-data, and then without per-sample pairing. ``here`` names
    the rows verified, beside the baseline's, when they differ."""
    ev = dict(base["evaluation"])
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
    other = _other_rows(ev, y, rows_digest, num_classes)
    if other is None and ev.get("predictions") is not None:
        pred = np.asarray(ev["predictions"], dtype=np.int64)
        missed = np.bincount(y[pred != y], minlength=num_classes)[:num_classes].tolist()
        if missed != list(map(int, ev["fn_per_class"])):
            c = next(i for i in range(num_classes) if missed[i] != ev["fn_per_class"][i])
            raise UserError(f"baseline {base['path']} is malformed (fn_per_class says {ev['fn_per_class'][c]} for class {c} but its "
                            f"per-sample predictions miss {missed[c]} of these rows): give the JSON file cwtool wrote, unedited")
    if other is None and ev.get("predictions") is None and not allow_other_data:
        # without them nothing ties its FN to these rows: a file stripped of them and edited consistently passed a
        # model missing half the protected rows
        raise UserError(f"baseline {base['path']} holds no per-sample predictions, so its false negatives cannot be checked "
                        "against these rows (an evaluate --json of an older cwtool wrote none; an edited file "
                        "may have lost them): write it again with this cwtool (compress's report.json, a verify or evaluate "
                        "--json), or pass --allow-other-data to compare FN rates unpaired")
    if other is None:
        if ev.get("rows_sha256") is None:
            notes.append("the baseline carries no row fingerprint (made by an older cwtool): its rows were matched by count, "
                         "class counts and per-sample predictions only")
        if ev.get("predictions") is None:  # --allow-other-data
            notes.append("--allow-other-data: the baseline holds no per-sample predictions: its FN are compared as counts, "
                         "unpaired, with no McNemar test")
        return ev, True
    if base.get("measured_on") and here:
        other += f"; the baseline's: {base['measured_on']}; these: {here}"
    supports = ev.get("support_per_class")
    if other.startswith("their sha256") and int(ev["n"]) == len(y) and isinstance(supports, list) and \
            list(map(int, supports)) == np.bincount(y, minlength=num_classes)[:num_classes].tolist():
        other += ("; as many rows of each class as the baseline's: if they are its rows, they are in another order (give them "
                  "in the baseline's) or prepared otherwise (8-bit pixels scaled as x / 255 in float32 differ in the last bit "
                  "from cwtool's; give the uint8 pixels or the very file)")
    if not allow_other_data and cause is not None:  # a known reason the rows differ (prepared otherwise) says more than guesses
        raise UserError(f"{cause}; so --data's rows are not the rows the baseline was measured on (--allow-other-data "
                        "compares other rows on purpose, unpaired)")
    if not allow_other_data:
        raise UserError(
            f"--data's rows are not the rows the baseline was measured on ({other}): verify on the same data, split and "
            "--seed as the baseline (a compress run's --test file or folder is read whole: --split all), or pass "
            "--allow-other-data for a deliberate comparison on other rows (unpaired)"
        )
    ev.pop("predictions", None)
    notes.append(f"--allow-other-data: the baseline was measured on other rows ({other}); compared by FN rate, unpaired, "
                 "so FN counts and McNemar tests do not apply")
    return ev, False


def _other_rows(ev: dict, y: np.ndarray, rows_digest: str, num_classes: int) -> str | None:
    """Why the baseline's rows are not these rows, or None when nothing says so."""
    if ev.get("rows_sha256") is not None and ev["rows_sha256"] != rows_digest:
        return "their sha256 differs"
    if int(ev["n"]) != len(y):
        return f"{ev['n']} rows there, {len(y)} here"
    support = np.bincount(y, minlength=num_classes)[:num_classes]
    base_support = ev.get("support_per_class") or [int(sum(r)) for r in ev.get("confusion") or []]
    if base_support and list(map(int, base_support)) != support.tolist():
        return "other class counts"
    pred = ev.get("predictions")
    if pred is not None and ev.get("confusion") is not None:
        if confusion_matrix(y, np.asarray(pred, dtype=np.int64), num_classes).tolist() != ev["confusion"]:
            return "its per-sample predictions do not line up with these labels: other rows, or its rows in another order"
    return None
