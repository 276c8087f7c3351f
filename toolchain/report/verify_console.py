"""Terminal table of a verify result (rich only, no torch). Fits 80 columns for the usual names."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from toolchain.errors import printable
from toolchain.promise import together_bound, together_words
from toolchain.report.consoles import out_console

__all__ = ["print_verify", "print_verdict", "artifact_wide_reasons", "provenance_lines"]

DASH = "\u2013"


# why verify's probability reads higher than report.md's on the same counts (a new user compared 0.963 with 0.830)
PLAIN_COUNTS = ("note: the probabilities count these rows as they are: they set no threshold, so none sits at its edge; "
                "compress's report.md, read from validation where its threshold sits at a sample, counts that sample as "
                "missed and reads lower on the same counts (docs/FN_PROMISE.md)")

def artifact_wide_reasons(gate: dict) -> list[str]:
    """Reasons of an artifact's gate that belong to no class check (collapse, accuracy)."""
    per_class = {r for c in gate["checks"] for r in c["reasons"]}
    return [r for r in gate["reasons"] if r not in per_class]


def shown_name(art: dict) -> str:
    """An artifact's name in the outputs: its file name, with the folders that tell it from another of the same name."""
    return art.get("name") or Path(art["path"]).name


def _bytes(n) -> str:
    return "? bytes" if n is None else f"{n:,} bytes"


def provenance_lines(result: dict) -> list[str]:
    """What was judged, in full: each artifact's runtime, size and sha256 (every file of a multi-file
    ONNX model on its own line), then the rows' sha256. A CI log that holds these proves which bytes passed."""
    lines = []
    for art in result["artifacts"]:
        files = art.get("files") or []
        weights = [f for f in files if f.get("role") != "sidecar"]
        count = f" in {len(weights)} files" if len(weights) > 1 else ""
        lines.append(f"{shown_name(art)}: {art.get('runtime')}, {art.get('precision')}, {_bytes(art.get('bytes'))}{count}, "
                     f"sha256 {art.get('sha256', '?')}")
        lines += [f"  {f['name']} ({f['role']}): {_bytes(f['bytes'])}, sha256 {f['sha256']}" for f in files[1:]]
    rows = result["data"].get("rows_sha256")
    if rows:
        lines.append(f"rows: {result['data']['n']:,} ({result['data']['split']}), sha256 {rows}")
    return [printable(line) for line in lines]


def _fnr(chk: dict) -> str:
    v = chk.get("fnr")
    return DASH if v is None else f"{100 * v:.1f}%"


def budget_words(result: dict) -> str:
    """The budgets the gate held the files to: "FN +0, accuracy -0.02, gate plain" (console and Markdown alike)."""
    gate = result["gate"]
    budget = gate.get("budget", {})
    parts = []
    if budget.get("max_fnr_increase") is not None:
        parts.append(f"FNR +{budget['max_fnr_increase']:g}")
    elif result.get("baseline"):
        parts.append(f"FN +{budget.get('max_fn_increase', 0)}")
    if budget.get("max_fnr") is not None:
        parts.append(f"FNR <= {budget['max_fnr']:g}")
    if budget.get("max_accuracy_drop") is not None:
        drop = budget["max_accuracy_drop"]  # in points, as the accuracies beside it are in %: "-0.02" read as 0.02 points
        parts.append(f"accuracy -{100 * drop:.4g} points ({drop:g})")
    parts.append(f"gate {gate.get('mode', 'plain')}")
    return ", ".join(parts)


def print_verify(result: dict, console: Console | None = None) -> None:
    console = console or out_console()
    names = result.get("class_names") or []
    data = result["data"]
    table = Table(title=Text(printable(f"cwtool verify: {data['name']} [{data['split']}, {data['n']} rows]")), title_justify="left")
    table.add_column("artifact", overflow="fold", max_width=24)
    table.caption = "95% intervals: --json / --markdown"
    for col in ("class", "FN", "base", "change", "FNR", "McNemar p", "acc"):
        table.add_column(col, justify="right")
    table.add_column("verdict")
    for art in result["artifacts"]:
        wide = artifact_wide_reasons(art["gate"])
        for chk in art["gate"]["checks"]:
            k = chk["class"]
            label = f"{k} {names[k]}" if k < len(names) and names[k] != str(k) else str(k)
            change = DASH if chk.get("fn_change") is None else f"{chk['fn_change']:+d}"
            ok = chk["passed"] and not wide
            table.add_row(
                shown_name(art), label, f"{chk['fn']}/{chk['support']}",
                DASH if chk.get("baseline_fn") is None else str(chk["baseline_fn"]), change, _fnr(chk),
                DASH if chk.get("mcnemar_p") is None else f"{chk['mcnemar_p']:.2g}",
                f"{100 * art['evaluation']['accuracy']:.1f}%",
                Text("pass", style="green") if ok else Text("FAIL", style="bold red"),
            )
    console.print(table)
    for line in provenance_lines(result):
        console.print(line, markup=False)
    for art in result["artifacts"]:
        for k, v in (art.get("promise") or {}).items():
            extra = f" + {v['budget']}" if v["budget"] else ""
            fp = "" if v.get("fp") is None or v.get("baseline_fp") is None else f"; FP {v['baseline_fp']} -> {v['fp']}"
            console.print(f"{shown_name(art)}: class {k}: FN <= baseline{extra} on new data of {v['n']} such samples with "
                          f"probability {v['confidence']:.3f} (missed here and caught by the baseline {v['b']}, the reverse {v['c']}{fp})")
    for art in result["artifacts"]:
        together = together_of(art.get("promise"))
        if together is not None:  # each class's own was said; a user of five at 0.8 read no word of 0.28 for all
            console.print(f"{shown_name(art)}: all {len(art['promise'])} classes together: {together_words(together)}", markup=False)
    if any(art.get("promise") for art in result["artifacts"]):
        console.print(PLAIN_COUNTS, markup=False)
    for note in result.get("notes", []):
        console.print(f"note: {note}", markup=False)
    console.print(f"budget: {budget_words(result)}", markup=False)  # what the verdict below held the files to
    print_verdict(result, console)


RUN_BUDGET_NOTE = "the baseline's compress run allowed --"  # verify's note where the run's budget would pass a file


def print_verdict(result: dict, console: Console | None = None, quiet: bool = False) -> None:
    """The gate's reasons and verdict: the last lines of the table, and all that --quiet prints."""
    console = console or out_console()
    gate = result["gate"]
    for reason in gate["reasons"]:
        console.print(f"FAIL {reason}", markup=False, style="red")
    if not gate["passed"] and quiet:  # the run's own budget, where it would turn the verdict: --quiet dropped the way out
        for note in result.get("notes") or []:
            if note.startswith(RUN_BUDGET_NOTE):
                console.print(f"note: {note}", markup=False)
    line = Text("gate: ").append("passed" if gate["passed"] else "failed", style="green" if gate["passed"] else "bold red")
    if gate["passed"] and gate.get("fn_budget") is False:
        line.append(", with no FN budget: nothing held the false negatives to one (give --baseline report.json or --max-fnr)")
    if (result.get("data") or {}).get("only_protected"):  # one class: a model answering it always passes; several: not
        several = len(result.get("protected") or []) > 1
        line.append(", on rows of protected classes alone (no false positive can show)" if several else
                    ", on rows of the protected class alone (a model answering it for every row passes)")
    caveat = failed_run_caveat(result)
    if caveat:  # --quiet too: a CI reads this line alone
        line.append(f", {caveat}")
    if result.get("baseline"):  # none: nothing compared, paired or not
        if (result.get("data") or {}).get("same_rows_as_baseline") is False:
            line.append(", by FN rate against a baseline of other rows (unpaired)")
        elif result["baseline"].get("paired") is False:
            line.append(", against a baseline without per-sample predictions (unpaired)")
    missed = missed_words(result) if gate["passed"] else None  # a failure's FAIL lines above give its counts
    if missed:  # --quiet prints this line alone: the absolute misses beside the verdict, not only the change
        line.append(f"; {missed}")
    console.print(line)


def together_of(promise) -> float | None:
    """The bound on every class's promise holding at once (Bonferroni, as compress's report.md states it), where a file's
    promise covers two classes or more; None otherwise."""
    if not isinstance(promise, dict) or len(promise) < 2:
        return None
    confidences = [v.get("confidence") for v in promise.values() if isinstance(v, dict)]
    if len(confidences) != len(promise) or not all(isinstance(c, (int, float)) for c in confidences):
        return None
    return together_bound(confidences)


def missed_words(result: dict) -> str | None:
    """"missed: class 3 2 of 40", the most any file missed of each protected class (None where nothing was judged)."""
    worst: dict[int, tuple[int, int]] = {}
    for art in result.get("artifacts") or []:
        for chk in (art.get("gate") or {}).get("checks") or []:
            k, fn, n = chk.get("class"), chk.get("fn"), chk.get("support")
            if isinstance(k, int) and isinstance(fn, int) and isinstance(n, int) and fn >= worst.get(k, (-1, 0))[0]:
                worst[k] = (fn, n)
    if not worst:
        return None
    from toolchain.gate import class_label

    several = len(result.get("artifacts") or []) > 1
    names = [printable(str(n))[:40] for n in result.get("class_names") or []]  # a Text line: no control character in it
    return ("missed" + (" (the most of any file)" if several else "") + ": "  # "class 1 1 of 42" read as a count: named
            + ", ".join(f"{class_label(k, names)} {fn:,} of {n:,}" for k, (fn, n) in sorted(worst.items())))


def failed_run_caveat(result: dict) -> str | None:
    """"against a compress run that did NOT keep its FN promise (it recommended no file)", where the baseline says so: on
    the console's verdict line and in the Markdown's headline (a PASSED headline had left it to the notes below)."""
    if not (result.get("baseline") or {}).get("run_failed"):
        return None
    failed = ("did NOT stay within its accuracy budget" if result["baseline"].get("run_binds") == "accuracy" else
              "did NOT keep its FN promise")
    return f"against a compress run that {failed} (it recommended no file)"
