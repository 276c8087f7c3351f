"""Markdown for a verify result, fit for a CI job summary ($GITHUB_STEP_SUMMARY). Standard library only."""

from __future__ import annotations

import re


from toolchain.errors import one_line, printable
from toolchain.report.html import code_span
from toolchain.promise import together_words
from toolchain.report.verify_console import artifact_wide_reasons, budget_words, failed_run_caveat, shown_name, together_of

__all__ = ["render_verify_markdown"]

DASH = "\u2013"


_MARKDOWN = re.compile(r"([\\`*_\[\]<>#!~|&])")


def _esc(text) -> str:
    """Text from a file (a class name, a reason naming one) inside one Markdown line or table cell, as text: no line
    break, cell border, emphasis, link, image or HTML tag of its own (a data file's class name put a link into a CI summary)."""
    return _MARKDOWN.sub(r"\\\1", one_line(text))


def _code(text, in_table: bool = False) -> str:
    """A path or file name as a Markdown code span: fenced by more backticks than it holds (a backtick in the name ended
    a one-backtick span); in a table, its cell border escaped (GitHub's tables split cells on | even inside code)."""
    return code_span(one_line(text).replace("|", "\\|") if in_table else one_line(text))


def _pct(x) -> str:
    return DASH if x is None else f"{100.0 * x:.2f}%"


def _class_label(k: int, class_names) -> str:
    if class_names and 0 <= k < len(class_names) and str(class_names[k]) != str(k):
        return f"{k} ({class_names[k]})"
    return str(k)


def _interval(ci, scale: float = 1.0, fmt: str = "{:+.1f}") -> str:
    if not ci:
        return DASH
    return f"[{fmt.format(ci[0] * scale)}, {fmt.format(ci[1] * scale)}]"


def _files_lines(result: dict) -> list[str]:
    """Every file judged, with its size and sha256 (a multi-file ONNX model lists its external data)."""
    lines = []
    for art in result["artifacts"]:
        files = art.get("files") or []
        weights = [f for f in files if f["role"] != "sidecar"]  # what "bytes" counts
        lines += [f"- {_code(shown_name(art))}: {art.get('bytes') or 0:,} bytes" + (f" in {len(weights)} files" if len(weights) > 1 else "")]
        lines += [f"  - {_code(f['name'])} ({f['role']}, {f['bytes']:,} bytes): sha256 `{f['sha256']}`" for f in files]
    return ["", "### Files judged", "", *lines] if lines else []


def render_verify_markdown(result: dict) -> str:
    gate = result["gate"]
    names = result.get("class_names")
    verdict = "PASSED" if gate["passed"] else "FAILED"
    if gate["passed"] and gate.get("fn_budget") is False:
        verdict += " (no FN budget given: only class collapse was checked)"
    caveat = failed_run_caveat(result)
    if caveat:
        verdict += f", {caveat}"
    icon = "\u2705" if gate["passed"] else "\u274c"
    data = result["data"]
    lines = [f"## {icon} cwtool verify: {verdict}", ""]
    base = result.get("baseline")
    lines.append(f"- data: {_code(data['spec'])} ({data['split']}, {data['n']} rows"
                 + (f", sha256 `{data['rows_sha256']}`" if data.get("rows_sha256") else "") + ")")
    if base:
        paired = "" if data.get("same_rows_as_baseline") is not False else " -- **measured on other rows: compared by FN rate, unpaired**"
        lines.append(f"- baseline: {_code(base['path'])} ({_esc(base['from'])}){paired}")
    else:
        lines.append("- baseline: none (absolute ceiling and collapse only)")
    lines.append(f"- budget: {budget_words(result)}")
    lines += ["", "| artifact | runtime | precision | class | FN | baseline FN | change (95% CI) | FNR (95% CI) | McNemar p | accuracy | verdict |",
              "|---|---|---|---|--:|--:|---|---|--:|--:|---|"]
    for art in result["artifacts"]:
        ev = art["evaluation"]
        wide = artifact_wide_reasons(art["gate"])
        for chk in art["gate"]["checks"]:
            change = DASH
            if chk.get("fn_change") is not None:
                ci = chk.get("fn_change_ci95")
                change = f"{chk['fn_change']:+d}" + (f" {_interval(ci)}" if ci else "")
            fnr = f"{_pct(chk.get('fnr'))} [{_pct(chk['fnr_ci95'][0])}, {_pct(chk['fnr_ci95'][1])}]"
            p = chk.get("mcnemar_p")
            ok = chk["passed"] and not wide
            lines.append("| " + " | ".join([
                _code(shown_name(art), in_table=True), _esc(art.get("runtime") or DASH), _esc(art.get("precision") or DASH),
                _esc(_class_label(chk["class"], names)), f"{chk['fn']}/{chk['support']}",
                DASH if chk.get("baseline_fn") is None else str(chk["baseline_fn"]), change, fnr,
                DASH if p is None else f"{p:.3g}", f"{100 * ev['accuracy']:.2f}%", "pass" if ok else "**FAIL**",
            ]) + " |")
    lines += _files_lines(result)
    promises = [(art, k, v) for art in result["artifacts"] for k, v in (art.get("promise") or {}).items()]
    if promises:
        lines += ["", "### The FN promise on new data", ""]
        for art, k, v in promises:
            extra = f" + {v['budget']}" if v["budget"] else ""
            lines.append(f"- {_code(shown_name(art))}, {_esc(_class_label(int(k), names))}: FN <= baseline{extra} on new data of "
                         f"{v['n']} such samples with probability **{v['confidence']:.3f}** (missed here and caught by the baseline "
                         f"{v['b']}, the reverse {v['c']}"
                         + (f"; FP {v['baseline_fp']} -> {v['fp']}" if v.get("fp") is not None and v.get("baseline_fp") is not None else "") + ")")
        for art in result["artifacts"]:
            together = together_of(art.get("promise"))
            if together is not None:
                lines.append(f"- {_code(shown_name(art))}, all {len(art['promise'])} classes together: {together_words(together, bold=True)}")
        lines += ["", "The probabilities count these rows as they are: they set no threshold, so none sits at its edge. compress's "
                  "report.md, read from validation where its threshold sits at a sample, counts that sample as missed and reads "
                  "lower on the same counts (docs/FN_PROMISE.md)."]
    if gate["reasons"]:
        lines += ["", "### Why it failed", ""]
        lines += [f"- {_esc(r)}" for r in gate["reasons"]]
    if result.get("notes"):
        lines += ["", "### Notes", ""]
        lines += [f"- {_esc(n)}" for n in result["notes"]]
    lines += ["", "<sub>FN change: 95% interval of the change in FN on as many new samples of the class (Newcombe's hybrid "
              "score interval of the paired FNR change) when both sides have per-sample predictions; FNR: Clopper-Pearson 95%."
              "</sub>", ""]
    return printable("\n".join(lines))


def render_verify_error_markdown(message: str) -> str:
    """The Markdown of a verify that could not judge (bad input, exit 2)."""
    return f"## \u274c cwtool verify: ERROR (nothing judged)\n\n{_esc(message)}\n"
