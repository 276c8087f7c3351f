"""report.md: the run's ledger as Markdown, fit for a CI job summary. No torch, no tensorflow."""

from __future__ import annotations

import shlex

from toolchain.errors import one_line, printable
from toolchain.gate import DEFAULT_MAX_ACCURACY_DROP
from toolchain.promise import SMALL_SPLIT, together_words
from toolchain.report.html import code_span, no_raw_html, shown_as_written
from toolchain.report.deploy import deploy_lines, run_failed
from toolchain.report.fit import fit_lines


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
    def label(k) -> str:
        named = isinstance(k, int) and names and 0 <= k < len(names) and str(names[k]) != str(k)
        return f"{k} ({one_line(names[k]).replace('|', chr(92) + '|')})" if named else str(k)  # a '|' would end the cell

    return "; ".join(f"{label(p['class'])}: FN {p['fn']}, FP {p.get('fp', '-')}, AUC {fmt_value(p.get('auc'))}"
                     for p in evaluation["protected"])


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


def _margin_words(margin: int, allowed: int) -> str:
    """What is kept in reserve for new data, as counts a reader can add up ("2 fewer than the 2 allowed (the dense model
    misses 0 + 2)" read as a puzzle to two new users)."""
    if margin == 0:
        return f"exactly the {allowed} allowed: none is kept in reserve for new data"
    if margin > 0:
        return (f"where {allowed} {'is' if allowed == 1 else 'are'} allowed: {margin} {'is' if margin == 1 else 'are'} kept in "
                "reserve for new data")
    return f"{-margin} more than the {allowed} allowed"


def _promise_lines(promise: dict | None) -> list[str]:
    """The FN promise in plain words: its confidence, the margin it keeps on validation, its price in FP."""
    if not promise:
        return []
    lines = ["", "## The FN promise", ""]
    model = "the shipped model" if promise["met_on_val"] else "the run's model (not to ship: the promise is not met)"
    for k, v in promise["classes"].items():
        budget = f" + {v['budget']}" if v["budget"] else ""
        price = v["fp"] - v["fp_plain"]
        more = "is 1 more false positive" if price == -1 else f"are {-price} more false positives"
        cost = (f"That margin costs {price:+d} false positives" if price >= 0 else
                f"At the unguarded point there {more} than here")  # a budget spent buys FP back
        lines.append(
            f"- class {k}: on new data with {v['n_new']} samples of the class, {model} misses at most the dense model's "
            f"number{budget} with probability **{v['confidence']:.3f}** (asked: {v['confidence_target']:.12g}; predicted from the validation counts below, "
            f"docs/FN_PROMISE.md){_few_words(v)}. On validation it misses "
            f"{v['fn']} of {v['n']}, {_margin_words(v['margin_fn'], v['dense_fn'] + v['budget'])} (allowed: the dense model's "
            f"{v['dense_fn']}{budget}); of the samples the dense model catches, {v['b']} {'is' if v['b'] == 1 else 'are'} "
            f"missed, and of those it misses, {v['c']} {'is' if v['c'] == 1 else 'are'} caught. {cost} on "
            f"validation ({v['fp']} here, {v['fp_plain']} at the unguarded point, {_unguarded(v['dense_fn'] + v['budget'])})."
            f"{_edge_words(v)}{_offset_words(v, len(promise['classes']) > 1, promise['met_on_val'])}")
    if promise.get("together_confidence") is not None:
        lines.append(f"- all {len(promise['classes'])} classes together: {together_words(promise['together_confidence'], bold=True)}.")
    if promise.get("empty"):
        lines.append(f"- **promises nothing**: {promise['empty']}.")
    if promise.get("few_samples"):
        lines.append(f"- **few samples**: {promise['few_samples']}.")
    if promise.get("competing"):
        lines.append(f"- **classes that compete**: {promise['competing']}.")
    if not promise["met_on_val"]:
        lines.append(f"- **not met**: {promise['statement']}")
    if any(abs(v.get("offset", 0.0)) >= 1e-6 for v in promise["classes"].values()):
        lines.append(f"- **on the device**: {OFFSETS_IN_FILES}")
    return lines


def _lowered_lines(promise: dict | None) -> list[str]:
    """A shipped offset that misses protected samples the model's own decisions catch, for fewer false alarms, said at the
    top: a sign-off reviewer found it mid-paragraph (class 8: 0 missed -> 2, FP 3 -> 0), the very trade a user of a
    protected class may refuse. It spends room the promise leaves (the dense model's misses plus the budget)."""
    if not promise or not promise.get("met_on_val"):
        return []
    lines = []
    for k, v in (promise.get("classes") or {}).items():
        fn, own = v.get("fn"), v.get("fn_no_offset")
        if not (isinstance(fn, int) and isinstance(own, int) and fn > own):
            continue
        fp, own_fp = v.get("fp"), v.get("fp_no_offset")
        fewer = f", for {own_fp - fp} fewer false positives ({fp} against {own_fp})" if isinstance(fp, int) and isinstance(own_fp, int) else ""
        lines += ["", f"**Sensitivity lowered**: with the shipped offset{'s' if len(promise['classes']) > 1 else ''}, class {k} "
                      f"misses {fn} of {v.get('n')} on validation where the "
                      f"model's own decisions miss {own}{fewer}, within the promise (the dense model misses {v.get('dense_fn')}"
                      f"{' + ' + str(v['budget']) if v.get('budget') else ''}); `--keep-sensitivity` keeps at least the model's own decisions."]
    return lines


def _scope_lines(report: dict) -> list[str]:
    """What the promise covers and what it does not, and each class's absolute misses on test with their interval: a
    sign-off reviewer found "same distribution", the torch model, and the FNR in none of the human reports."""
    promise = report.get("promise")
    if not promise or not promise.get("classes"):
        return []
    int8 = any(st.get("stage") == "quantized" for st in report.get("stages") or [])
    lines = ["- **what it covers**: new data drawn as the validation rows were (the same distribution), judged by the torch "
             f"model's decisions{' (each int8 file' + chr(39) + 's own counts: its section below)' if int8 else ''}; the probability is predicted from the "
             "validation counts (a Bayesian predictive probability, docs/FN_PROMISE.md), not a guarantee for every draw. It "
             "promises nothing of the absolute miss rate, of false alarms, of the other classes, or of data from another "
             "source or of another make-up."]
    checks = [c for c in (report.get("gate") or {}).get("checks") or [] if isinstance(c, dict)]
    for c in checks:
        interval = c.get("fnr_ci95")
        if not (isinstance(c.get("fn"), int) and isinstance(c.get("support"), int) and c["support"] and isinstance(interval, list)
                and len(interval) == 2 and all(isinstance(x, (int, float)) for x in interval)):
            continue
        dense = f"; the dense model {c['baseline_fn']} of {c['support']}" if isinstance(c.get("baseline_fn"), int) else ""
        lines.append(f"- **class {c['class']} on test**: the pruned torch model misses {c['fn']} of {c['support']} (miss rate "
                     f"{c['fn'] / c['support']:.3f}, 95% interval {interval[0]:.3f} to {interval[1]:.3f}){dense}.")
    return lines


OFFSETS_IN_FILES = ("the offsets above are in every file already, in its classifier's bias (an int8 file's own offset too, "
                    "where the report gives one): a device decides by the argmax of a file's outputs and adds nothing to them")


def _few_words(v: dict) -> str:
    """The few-samples caveat inside the sentence that states the probability: a bold 0.998 from 28 samples sat a line
    away from its caveat (a reader quoting the sentence quoted it without)."""
    n = v.get("n")
    if not isinstance(n, int) or n >= SMALL_SPLIT:
        return ""
    return f", from only {n} validation samples of the class: it can be optimistic (below)"


def _edge_words(v: dict) -> str:
    """Why the probability reads other counts than the b and c said: the hardest positive caught sits at the threshold."""
    b, c = v.get("b_judged", v["b"]), v.get("c_judged", v["c"])
    if (b, c) == (v["b"], v["c"]):
        return ""
    return (f" The probability counts the hardest sample of the class it catches, at the threshold where new samples fall "
            f"either side, as missed: it reads {b} missed and {c} caught (docs/FN_PROMISE.md).")


def _unguarded(allowed: int) -> str:
    """The unguarded point in words: the offset that spends the whole FN budget on validation ("which may miss all 0
    allowed" did not parse)."""
    if allowed == 0:
        return "the point that misses no more than the dense model on validation, with nothing kept in reserve for new data"
    return f"the point that may miss all {allowed} allowed on validation, with nothing kept in reserve for new data"


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


def _offset_words(v: dict, several: bool = False, shipped: bool = True) -> str:
    """What the shipped offset does to the class: a negative one lowers its sensitivity, for fewer false alarms. A run
    that failed ships nothing: its model's offset ("the shipped offset" read as a file to deploy)."""
    if "offset" not in v or abs(v["offset"]) < 1e-6:
        return ""
    own = "shipped" if shipped else "model's"
    if v.get("fn") == v["fn_no_offset"] and v.get("fp") == v["fp_no_offset"]:  # it moved the threshold within a gap
        return (f" The {own} offset {v['offset']:+.3f} on the class's logit changes no decision on validation: the model's "
                f"own decisions (no offset) also miss {v['fn_no_offset']} with {v['fp_no_offset']} false positives there.")
    # by what the decisions did, not by the offset's sign: other protected classes' offsets move this class's rows too (a
    # negative offset beside a larger one of another class's "lowered" a sensitivity that had risen from 1 miss to 0)
    fn = v.get("fn", v["fn_no_offset"])
    way = "raise" if fn < v["fn_no_offset"] else "lower" if fn > v["fn_no_offset"] else "keep"
    keep = (" (`--keep-sensitivity` keeps at least the model's own decisions, for more false positives)"
            if fn > v["fn_no_offset"] else "")
    which = (f"the {own} offsets (this class's {v['offset']:+.3f} on its logit, and the other protected classes' on theirs)"
             if several else f"the {own} offset {v['offset']:+.3f} on the class's logit")
    verb = way if several else f"{way}s"
    return (f" {which[0].upper()}{which[1:]} {verb} its sensitivity: the model's own decisions (no offset) miss "
            f"{v['fn_no_offset']} with {v['fp_no_offset']} false positives on validation, {'the shipped ones' if shipped else 'those with the offset'} {fn} with "
            f"{v.get('fp', v['fp_no_offset'])}{keep}.")


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
    shown = f"the set {code_span(name)}" if isinstance(name, str) and name else code_span(str(file)) if file else "the given set"
    return f"{rows} from {shown}, none of them a test row"


def recheck_lines(report: dict, baseline: str) -> list[str]:
    """The `cwtool verify` command that re-checks the files the report recommends to deploy (else its int8 file, the one
    a device most likely runs) against ``baseline`` (the report's own JSON, beside it) on the rows the report was measured
    on, run from the report's folder; then the same on a device from rows saved with --save-rows. A command naming the
    int8 file beside "deploy: model_fp32.onnx" was copied to re-check a file the user was told not to ship."""
    data = report["data"]
    chosen = [c["file"] for c in (report.get("deploy") or {}).get("choices") or [] if c.get("file")]
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
    command = (f"cwtool verify {' '.join(files)} --data {shlex.quote(rows)}{seed}"
               f"{''.join(' ' + shlex.quote(o) for o in data.get('verify_options') or [])}{protect} --baseline {baseline}{budget}")
    if run_failed(report):  # the command would fail every file: the run vetted none
        return ["", f"No file to re-check: the run recommended none, and `cwtool verify` against {code_span(baseline)} "
                    "fails every file of it."]
    what = "the files to deploy" if len(chosen) > 1 else "the file to deploy" if chosen else "a file"
    return ["", f"Re-check {what} here, from this folder: {code_span(command)}. Add `--save-rows eval.npz` to keep "
                f"the rows it judges: a device with numpy and one runtime judges the same rows with "
                + " or ".join(code_span(f"cwtool verify {f} --data eval.npz{protect} --baseline {baseline}{budget}") for f in files)
                + " (a named set such as digits needs scikit-learn, a folder of images Pillow)."]


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
        return f"from `{one_line(path).replace('`', chr(39))}`"
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
    return f"`{one_line(name).replace('`', chr(39))}`; " + ", ".join(parts)


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


def _int8_promise_words(stage: dict, report: dict) -> str:
    """An int8 file's own validation counts and promise, beside the torch model's: a file to deploy missed 3 where the
    torch model missed 2, its probability 0.986 where report.md said 0.998, and only report.json held it (a sign-off
    reviewer's finding). Empty where the stage records none."""
    own = stage.get("val_promise")
    if not isinstance(own, dict) or not own:
        return ""
    torch_side = (report.get("promise") or {}).get("classes") or {}
    parts, shortfall = [], 0.0
    for k, v in own.items():
        if not isinstance(v, dict) or not isinstance(v.get("confidence"), (int, float)) or not isinstance(v.get("fn"), int):
            return ""
        theirs = (torch_side.get(k) or {}).get("confidence")
        beside = (f", the torch model's {theirs:.3f}" if isinstance(theirs, (int, float)) and f"{theirs:.3f}" != f"{v['confidence']:.3f}"
                  else "")
        n = (torch_side.get(k) or {}).get("n")
        parts.append(f"class {k} misses {v['fn']}{f' of {n}' if isinstance(n, int) else ''} (probability {v['confidence']:.3f}{beside})")
        shortfall += 1 - v["confidence"]
    together = f"; {together_words(1 - shortfall)}" if len(own) > 1 else ""
    accuracy = f", accuracy {stage['val_accuracy']:.4f}" if isinstance(stage.get("val_accuracy"), (int, float)) else ""
    return f". Its own on validation: {', '.join(parts)}{accuracy}{together}"


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
    prot = ", ".join(f"{k} ({names[k]})" if k < len(names) and names[k] != str(k) else str(k) for k in report["protected"])
    gate = report["gate"]
    lines = [
        "# cwtool compress report",
        "",
        f"Protected classes: {prot}. Data: {_data_line(report['data'])}.",
        *[f"\n**Warning**: {one_line(n.removeprefix('warning: '))}" if n.startswith("warning: ") else f"\n**Note**: {one_line(n)}"
          for n in report["data"].get("notes") or [] if isinstance(n, str)],
        "",
        f"**Gate: {'PASSED' if gate['passed'] else 'FAILED'}** (FN budget +{gate['budget']['max_fn_increase']} per protected class"
        + (f", accuracy drop <= {gate['budget']['max_accuracy_drop']}" if gate["budget"].get("max_accuracy_drop") is not None else "") + ")",
    ]
    lines += [f"- {r}" for r in gate.get("reasons", [])]
    size_goal = report.get("size_goal")  # reports written before it was recorded lack it
    if size_goal and not size_goal.get("met", True):
        lines += ["", f"**Size goal not met**: {size_goal.get('statement', '')}."]
    elif size_goal and all(isinstance(size_goal.get(k), (int, float)) for k in ("param_fraction", "mac_fraction", "keep_params")):
        lines += ["", f"**Size goal met**: {_size_met_words(size_goal, report)}."]  # said where it was met too, not in JSON alone
    lines += _lowered_lines(report.get("promise"))
    lines += _promise_lines(report.get("promise"))
    lines += _scope_lines(report)
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
            lines.append(f"- {s['path']}: {text}{_int8_promise_words(s, report)}")
    if report.get("artifacts"):
        lines += recheck_lines(report, "report.json")
    if terms:  # a report is read by people who do not prune models
        what = "weights" if (report.get("config") or {}).get("granularity") == "weight" else "channels"
        lines += ["", "## Terms", "", *[f"- {term.replace('{what}', what)}" for term in TERMS]]
    # class names come from files: no terminal escapes, no HTML of their own in a report
    return no_raw_html(printable("\n".join(lines))) + "\n"
