"""report.md: the run's ledger as Markdown, fit for a CI job summary. No torch, no tensorflow."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePath

from toolchain.errors import one_line, printable
from toolchain.gate import DEFAULT_MAX_ACCURACY_DROP
from toolchain.report.html import code_span, md_text, no_raw_html, shown_as_written
from toolchain.report.deploy import deploy_lines, run_failed
from toolchain.report.fit import fit_lines
from toolchain.report.promise_words import class_words, int8_promise_words, lowered_lines, promise_lines, scope_lines


def fmt_value(v, digits=4):
    """A table cell: "-" for a missing value, floats with ``digits`` decimals."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):  # 56554 beside 28,017 in the next table
        return f"{v:,}"
    return str(v)


def protected_cell(evaluation: dict, names=None) -> str:
    """FN, FP and AUC of every protected class, in one table cell; a class by its name too where ``names`` gives one."""
    # the name escaped: a '|' would end the cell, '**' make it bold
    return "; ".join(f"{class_words(p['class'], names)}: FN {p['fn']}, FP {p.get('fp', '-')}, AUC {fmt_value(p.get('auc'))}"
                     for p in evaluation["protected"])


def shown_path(path: str) -> str:
    """A path or data spec from the user, in one line: a code span where it reads as typed there, else as text."""
    path = one_line(path)
    return code_span(path) if shown_as_written(path) else md_text(path)


def protected_classes(report: dict) -> str:
    """'3 (cat), 8': the protected classes, each by its name too where the data gives one."""
    return ", ".join(class_words(k, report.get("class_names") or []) for k in report["protected"])


def names_as_text(text: str, names) -> str:
    """A line cwtool wrote (a gate reason, a data note) with the class names in it shown as written: each name that holds
    Markdown markup escaped (md_text), the longest first. One line."""
    text = one_line(text)
    marked = sorted({one_line(n) for n in names or [] if isinstance(n, str) and md_text(one_line(n)) != one_line(n)}, key=len, reverse=True)
    if not marked:
        return text
    # one pass: replaced one name after another, a name's escape was escaped again where another name is in it ('*')
    return re.sub("|".join(map(re.escape, marked)), lambda m: md_text(m.group(0)), text)


def ledger_rows(report: dict) -> list[dict]:
    """One row per model the run produced, all on the test split."""
    rows = [{"name": "dense (torch)", "params": report["baseline"]["params"], "bytes": None, "eval": report["baseline"]["test"], "verdict": "baseline"}]
    for stage in report["stages"]:
        if stage["stage"] == "shrunk":
            rows.append({"name": "pruned (torch)", "params": stage["params"], "bytes": None, "eval": stage["test"], "verdict": None})
    for art in report.get("artifacts", []):
        rows.append({"name": f"{art['format']} {art['precision']} ({art.get('runtime', '?')})", "params": None, "bytes": art.get("bytes"),
                     "eval": art["evaluation"], "verdict": ("FAIL" if not art.get("gate", {}).get("passed") else
                                                            "pass, not to ship: the run failed" if run_failed(report) else "pass")})
    return rows


def files_lines(artifacts: list[dict]) -> list[str]:
    """Every file of every artifact with its bytes and sha256: which bytes these numbers are about."""
    rows = [f"| {a['path']} | {f['name']} ({f['role']}) | {f['bytes']:,} | `{f['sha256']}` |"
            for a in artifacts for f in a.get("files") or []]
    if not rows:
        return []
    return ["", "## Files", "", "| artifact | file | bytes | sha256 |", "|---|---|--:|---|", *rows]


TERMS = [
    "**FN** (false negative): a sample of a protected class that the model answers as another class. **FP** (false "
    "positive): a sample of another class answered as the protected class.",
    "**Validation** rows choose everything (the rounds kept, the offsets); **test** rows only re-check the choice.",
    "**Offset**: a number added to a protected class's output (logit) before the model's answer is taken: a higher one "
    "catches more of the class for more false positives. The **unguarded point** is the offset that spends the whole FN "
    "budget on validation, keeping nothing in reserve for new data.",
    "**Round**: one pass of removing {what} and retraining; the model it leaves is its **ticket**. **MACs**: "
    "multiply-accumulate operations per sample, the model's compute.",
    "**AUC**: how well the model ranks a protected class's samples above the others' (1 is perfect, 0.5 is chance), "
    "whatever the offset. **fp32** / **int8**: a file's numbers as 32-bit floats, or as 8-bit integers (about 4x smaller, "
    "quantized on calibration rows). **Logit**: the model's raw score for a class, before its answer is taken.",
]


def _why_outside(stage: dict, report: dict) -> str:
    """"no: class 3 confidence 0.458 < 0.95": a round outside the budget, with the budget it missed (a bare "no" beside
    "FN 0" read as a contradiction)."""
    short = [f"class {k} confidence {v['confidence']:.3f} < {v['confidence_target']:.12g}"
             for k, v in (stage["val"].get("promise") or {}).items()
             if isinstance(v, dict) and isinstance(v.get("confidence"), (int, float)) and v["confidence"] < v.get("confidence_target", 0)]
    dense = ((report.get("baseline") or {}).get("val") or {}).get("accuracy")
    drop = (report.get("config") or {}).get("max_accuracy_drop")
    if isinstance(dense, (int, float)) and isinstance(drop, (int, float)) and stage["val"]["accuracy"] < dense - drop - 1e-12:
        short.append(f"accuracy {stage['val']['accuracy']:.4f} < {dense - drop:.4f}")
    return f"no: {'; '.join(short)}" if short else "no"


def int8_layers_words(kept_float: list[str], input_dtype: str | None) -> str:
    """What of an int8 file stays float: its kept layers, else that every layer is int8, and a float input where the
    file takes one (an ONNX QDQ file always; a TFLite file where the converter quantizes inside): a target that wants
    int8 input and output reads it here, not only "fully int8"."""
    text = "; ".join(kept_float) if kept_float else "none: every layer int8"
    if input_dtype and not str(input_dtype).startswith(("int", "uint")):
        text += f" ({input_dtype} input, quantized inside the file)"
    return text


def calibration_words(calibration) -> str:
    """Which rows the int8 files were calibrated on, in words (both reports): a given set by its name or file, else rows
    drawn from the train split. Never a test row either way."""
    record = calibration if isinstance(calibration, dict) else {}
    size = record.get("size")
    rows = f"{size:,} calibration rows" if isinstance(size, int) and not isinstance(size, bool) else "calibration rows"
    if not record.get("given"):
        return f"{rows} drawn from the train split"
    name, file = record.get("name"), record.get("file")
    shown = f"the set {shown_path(name)}" if isinstance(name, str) and name else shown_path(str(file)) if file else "the given set"
    return f"{rows} from {shown}, none of them a test row"


def recheck_lines(report: dict, baseline: str) -> list[str]:
    """The `cwtool verify` command that re-checks the files the report recommends to deploy (else its int8 file, the one
    a device most likely runs) against ``baseline`` (the report's own JSON, beside it) on the rows the report was measured
    on, run from the report's folder; then the same on a device from rows saved with --save-rows. A command naming the
    int8 file beside "deploy: model_fp32.onnx" was copied to re-check a file the user was told not to ship."""
    data = report["data"]
    chosen = [c.get("file") or c.get("failed_recheck") for c in (report.get("deploy") or {}).get("choices") or []
              if c.get("file") or isinstance(c.get("failed_recheck"), str)]  # the file chosen, whatever its re-check said
    # else a file that passed the gate, int8 first: a failed run untimed named its failed int8 file to re-check
    shipped = sorted(report.get("artifacts") or [], key=lambda a: (not (a.get("gate") or {}).get("passed"), a.get("precision") != "int8"))
    files = [shlex.quote(f) for f in chosen] or [shlex.quote((shipped or [{"path": "artifacts/FILE"}])[0]["path"])]
    given = data.get("held_out_from") if isinstance(data.get("held_out_from"), dict) else {}
    seed = f" --seed {data['seed']}" if data.get("seed") and not given.get("test") else ""
    names = report.get("class_names") or []
    named = len(names) > max(report["protected"], default=0) and names != [str(i) for i in range(len(names))]
    # a name wins over an index, where the command shows it as typed (a name the Markdown escapes would be pasted escaped)
    protect = "".join(f" -p {shlex.quote(names[k]) if named and shown_as_written(shlex.quote(names[k])) else k}"
                      for k in report["protected"])
    rows = data.get("verify_data") or data.get("spec") or data["name"]
    budget = _budget_flags((report.get("gate") or {}).get("budget") or report.get("budget") or {})
    # an argument a code span cannot show as typed (a '<' or '](': the Markdown's escape would be pasted) is named, not shown
    placeholders = []

    def arg(value: str, name: str, where: str) -> str:
        quoted = shlex.quote(value)
        if shown_as_written(quoted):
            return quoted
        placeholders.append(f"{name}: {where}, quoted for the shell")
        return name

    options = data.get("verify_options") or []
    shown_options = "".join(" " + (arg(o, "VALUE", "the value of --class-names in this run's data.verify_options") if i and options[i - 1] == "--class-names"
                                   else shlex.quote(o)) for i, o in enumerate(options))
    command = (f"cwtool verify {' '.join(files)} --data {arg(rows, 'DATA', 'the --data path the run was given')}{seed}"
               f"{shown_options}{protect} --baseline {baseline}{budget}")
    if run_failed(report):  # the command would fail every file: the run vetted none
        return ["", f"No file to re-check: the run recommended none, and `cwtool verify` against {code_span(baseline)} "
                    "fails every file of it."]
    failed = [code_span(one_line(PurePath(c["failed_recheck"]).name)) for c in (report.get("deploy") or {}).get("choices") or []
              if not c.get("file") and isinstance(c.get("failed_recheck"), str)]
    what = ("the files to deploy" if len(chosen) > 1 else "the file to deploy" if chosen else "a file") if not failed else (
        f"the file{'s' if len(chosen) > 1 else ''} chosen on validation ({', '.join(failed)} failed its re-check on test: "
        "not recommended)")
    data_said = f" ({'; '.join(placeholders)})" if placeholders else ""
    return ["", f"Re-check {what} here, from this folder: {code_span(command)}{data_said}. Add `--save-rows eval.npz` to keep "
                f"the rows it judges: a device with numpy and one runtime judges the same rows with "
                + " or ".join(code_span(f"cwtool verify {f} --data eval.npz{_signal_shape(options)}{protect} --baseline {baseline}{budget}")
                              for f in files)
                + " (a named set such as digits needs scikit-learn, a folder of images Pillow)."]


def _signal_shape(options: list) -> str:
    """' --input-shape 2,128' where the run's rows were reshaped so: the saved rows' 3-D x read alone is (N, H, W) images."""
    at = [i for i, o in enumerate(options) if o == "--input-shape" and i + 1 < len(options)]
    return f" --input-shape {shlex.quote(str(options[at[0] + 1]))}" if at else ""


def _budget_flags(budget: dict) -> str:
    """The run's own gate as verify's flags, where it differs from verify's defaults (FN +0, 2 accuracy points, plain)."""
    flags = ""
    for key, flag in (("max_fn_increase", "--max-fn-increase"), ("max_fnr_increase", "--max-fnr-increase"), ("max_fnr", "--max-fnr")):
        value = budget.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
            flags += f" {flag} {value:g}"
    drop = budget.get("max_accuracy_drop")
    if isinstance(drop, (int, float)) and not isinstance(drop, bool) and abs(drop - DEFAULT_MAX_ACCURACY_DROP) > 1e-12:
        flags += f" --max-accuracy-drop {drop:g}"
    if budget.get("mode") == "significant":
        flags += " --gate significant"
    return flags


def held_out_rows(data: dict, split: str) -> str:
    """Where a held-out split's rows came from, in words: the user's --val/--test (named), cwtool's split of the source's
    rows or of its train split with the seed, or the source's own split. An older report without ``held_out_origin`` is
    read from ``given_splits``."""
    given = data.get("held_out_from") if isinstance(data.get("held_out_from"), dict) else {}
    origins = data.get("held_out_origin") if isinstance(data.get("held_out_origin"), dict) else {}
    path = given.get(split)
    if isinstance(path, str):
        return f"from {shown_path(path)}"
    seed = data.get("seed")
    origin = origins.get(split) or ("source" if data.get("given_splits") else "pool")
    if origin == "source":
        return f"from its own {'validation' if split == 'val' else 'test'} split" if origins else "from it"
    if type(seed) is not int:
        return "from it"
    return f"split from it with seed {seed}" if origin == "pool" else f"carved from its train split with seed {seed}"


def _data_line(data: dict) -> str:
    """Where the validation and test rows came from (``held_out_rows``), after --data as given: a folder's name alone
    ("train") did not say which."""
    parts = []
    for split, what in (("val", "validation"), ("test", "test")):
        rows = f"{data['sizes'][split]} rows" if split in data.get("sizes", {}) else "rows"
        parts.append(f"{what} rows {held_out_rows(data, split)} ({rows})")
    name = data["spec"] if isinstance(data.get("spec"), str) else data["name"]
    return f"{shown_path(name)}; " + ", ".join(parts)


def _processes_said(training: dict) -> str:
    """" on 2 torchrun processes" (and each session's number where a resumed run changed it; nothing for one process),
    and each session's threads where a resumed run changed them."""
    sessions, n, threads = training.get("processes_by_session"), training.get("processes", 1), training.get("threads_by_session")
    if isinstance(sessions, list) and len(sessions) > 1:
        said = " on " + ", then ".join(str(n) for n in sessions) + " process(es) (torchrun; the run was resumed with another number)"
    else:
        said = f" on {n} torchrun processes (each BatchNorm normalizes its own share of a batch)" if isinstance(n, int) and n > 1 else ""
    if isinstance(threads, list) and len(threads) > 1:
        said += (" with " + ", then ".join(map(str, threads)) + " thread(s) a process (resumed on another number: the last digits "
                 "can differ from an uninterrupted run's)")
    return said


def _size_met_words(goal: dict, report: dict) -> str:
    """"the shipped model keeps 9.5% of the parameters and 12.3% of the MACs (--keep-params 0.1)"."""
    weights = (report.get("config") or {}).get("granularity") == "weight"
    share = "of its conv and linear weights non-zero" if weights else "of the parameters"
    asked = f"--keep-params {goal['keep_params']:g}"
    if isinstance(goal.get("keep_macs"), (int, float)) and goal["keep_macs"] < 1:
        asked += f" and --keep-macs {goal['keep_macs']:g}"
    model = "the run's model (not to ship: the run failed)" if run_failed(report) else "the shipped model"
    return f"{model} keeps {goal['param_fraction']:.1%} {share} and {goal['mac_fraction']:.1%} of the MACs ({asked})"


def render_report(report: dict, terms: bool = True) -> str:
    """report.md (``terms``: with the glossary at its end)."""
    names = report.get("class_names", [])
    prot = protected_classes(report)
    gate = report["gate"]
    lines = [
        "# cwtool compress report",
        "",
        f"Protected classes: {prot}. Data: {_data_line(report['data'])}.",
        *[f"\n**Warning**: {names_as_text(n.removeprefix('warning: '), names)}" if n.startswith("warning: ") else f"\n**Note**: {names_as_text(n, names)}"
          for n in report["data"].get("notes") or [] if isinstance(n, str)],
        "",
        f"**Gate: {'PASSED' if gate['passed'] else 'FAILED'}** (FN budget +{gate['budget']['max_fn_increase']} per protected class"
        + (f", accuracy drop <= {gate['budget']['max_accuracy_drop']}" if gate["budget"].get("max_accuracy_drop") is not None else "")
        # a choice that moves the promise's offsets, in report.json alone before (a user of several protected classes)
        + ("; `--keep-sensitivity`: no protected class's own offset below 0"
           if isinstance(report.get("config"), dict) and report["config"].get("keep_sensitivity") is True else "") + ")",
    ]
    lines += [f"- {names_as_text(r, names)}" for r in gate.get("reasons", [])]
    size_goal = report.get("size_goal")  # reports written before it was recorded lack it
    if size_goal and not size_goal.get("met", True):
        lines += ["", f"**Size goal not met**: {size_goal.get('statement', '')}."]
    elif size_goal and all(isinstance(size_goal.get(k), (int, float)) for k in ("param_fraction", "mac_fraction", "keep_params")):
        lines += ["", f"**Size goal met**: {_size_met_words(size_goal, report)}."]  # said where it was met too, not in JSON alone
    lines += lowered_lines(report.get("promise"))
    lines += promise_lines(report.get("promise"))
    lines += scope_lines(report)
    lines += ["", "| model | params | bytes | accuracy | protected (test) | verdict |", "|---|---:|---:|---:|---|---|"]
    for row in ledger_rows(report):
        lines.append(f"| {row['name']} | {fmt_value(row['params'])} | {fmt_value(row['bytes'])} | {fmt_value(row['eval']['accuracy'])} | {protected_cell(row['eval'], names)} | {row['verdict'] or '-'} |")
    lines += fit_lines(report)
    lines += deploy_lines(report)
    lines += files_lines(report.get("artifacts", []))
    rounds = [s for s in report["stages"] if s["stage"] == "prune_round"]
    if rounds:
        sparse = any("weight_sparsity" in s for s in rounds)  # weight granularity: params are the non-zero ones
        lines += ["", "## Pruning rounds (validation, at the operating point)", "",
                  f"| round | {'non-zero params | weight sparsity' if sparse else 'params'} | MACs | accuracy | protected | offsets | within budget |",
                  f"|---:|---:|{'---:|' if sparse else ''}---:|---:|---|---|---|"]
        for s in rounds:
            offs = ", ".join(f"{k}: {v:+.3f}" for k, v in s["offsets"].items())
            size = f"{s['params']:,} | {s['weight_sparsity']:.1%}" if sparse else f"{s['params']:,}"
            lines.append(f"| {s['round']} | {size} | {s['macs']:,} | {fmt_value(s['val']['accuracy'])} | {protected_cell(s['val'], names)} | {offs} | {'yes' if s['within_budget'] else _why_outside(s, report)} |")
        kept = next((s.get("kept_whole") for s in report["stages"] if s["stage"] == "shrunk"), None)
        if kept:
            lines += ["", "Channels kept whole: "
                      + "; ".join(f"{key}: {why}" for key, why in kept.items()) + "."]
        if "training" in report and not report["config"].get("epochs", 1) and not report["config"].get("final_epochs"):
            lines += ["", "Not retrained (`--epochs 0`): each round's channels were removed and the model evaluated as it was."]
        elif "training" in report:  # reports written before it was recorded lack it
            lines += ["", f"Retrained on {report['training']['device']}{_processes_said(report['training'])} in {report['training']['arithmetic']} "
                          f"(`--train-precision {report['config'].get('train_precision', 'fp32')}`"
                          + (f"; {report['training']['chosen_by']}" if report["training"].get("chosen_by") else "") + ")."]
    for s in (s for s in report["stages"] if s["stage"] == "final_finetune"):
        offs = ", ".join(f"{k}: {v:+.3f}" for k, v in s["offsets"].items())
        verdict = "kept" if s["kept"] else "not kept (outside the budget)"
        lines += ["", f"Final fine-tuning of round {s['round']} ({s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}), validation at its own operating point: "
                      f"accuracy {fmt_value(s['val']['accuracy'])}, {protected_cell(s['val'], names)}, offsets {offs}: {verdict}."]
    quantized = [s for s in report["stages"] if s["stage"] == "quantized"]
    if quantized:
        lines += ["", "## int8 files", "", f"Calibrated on {calibration_words(report.get('calibration'))}.", ""]
        for s in quantized:
            stem = s.get("float_input_layers") or []
            kept = s.get("float_layers") or []
            why = [f"input layer {', '.join(stem)} (few input channels: faster in float)"] if stem else []
            why += [f"{', '.join(kept)} ({s.get('note') or 'protected FN'})"] if kept else []
            text = int8_layers_words(why, s.get("input_dtype"))
            if s.get("offsets") and not kept:  # with kept layers the note says it
                text += f"; {s.get('note')}"
            lines.append(f"- {s['path']}: {text}{int8_promise_words(s, report)}")
    if report.get("artifacts"):
        lines += recheck_lines(report, "report.json")
    if terms:  # a report is read by people who do not prune models
        what = "weights" if (report.get("config") or {}).get("granularity") == "weight" else "channels"
        lines += ["", "## Terms", "", *[f"- {term.replace('{what}', what)}" for term in TERMS]]
    # class names come from files: no terminal escapes, no HTML of their own in a report
    return no_raw_html(printable("\n".join(lines))) + "\n"
