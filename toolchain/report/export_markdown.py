"""export.md: what `cwtool export` wrote and how each file measured against the torch model it came
from (test split), the device verdict with --target, and the files' sha256. No torch, no tensorflow."""

from __future__ import annotations

from toolchain.errors import printable
from toolchain.report.html import no_raw_html
from toolchain.report.deploy import deploy_lines
from toolchain.report.fit import fit_lines
from toolchain.report.markdown import calibration_words, files_lines, fmt_value, held_out_rows, int8_layers_words, names_as_text, \
    protected_cell, protected_classes, recheck_lines, shown_path

__all__ = ["files_verdict", "render_export_report"]


def _int8_lines(artifacts: list[dict], calibration: dict | None) -> list[str]:
    lines = []
    for art in artifacts:
        q = art.get("quantization")
        if not q:
            continue
        parts = [f"input layer {', '.join(q['float_input_layers'])} kept float (few input channels: faster so)"] if q.get("float_input_layers") else []
        if q.get("float_layers"):
            parts.append(f"{', '.join(q['float_layers'])} kept float ({q.get('note') or 'protected FN'})")
        if q.get("offsets"):
            parts.append("own protected-logit offset, beyond the float model's: " + ", ".join(f"class {k} {v:+.3f}" for k, v in q["offsets"].items()))
        if not q.get("within_budget_on_val", True):
            below = q.get("val_accuracy") is not None and q.get("min_val_accuracy") is not None and q["val_accuracy"] < q["min_val_accuracy"]
            parts.append("**short of the accuracy budget on validation**" if below else
                         "**short of the float model's protected FN on validation**")
        lines.append(f"- {art['path']}: {int8_layers_words(parts, art.get('input_dtype'))}")
    if not lines:
        return []
    return ["", "## int8 files", "", f"Held on validation to the float model's protected FN ({calibration_words(calibration)}).",
            "", *lines]


def files_verdict(report: dict) -> str:
    """"Every file matches the torch model", or how many do not ("Every file does NOT match" was said of 1 file in 4)."""
    arts = report["artifacts"]
    failed = sum(not a["gate"]["passed"] for a in arts)
    if not failed and report["gate"]["passed"]:
        return "Every file matches the torch model"
    if failed == len(arts) and failed:
        return f"{'The file does' if failed == 1 else f'All {failed} files do'} NOT match the torch model"
    return f"{failed} of {len(arts)} files do{'es' if failed == 1 else ''} NOT match the torch model"


def render_export_report(report: dict) -> str:
    model, data, gate = report["model"], report["data"], report["gate"]
    budget = report["budget"]
    lines = [
        "# cwtool export report",
        "",
        f"Model: `{model['path']}` ({model.get('arch') or model['kind']}{', pruned' if model.get('pruned') else ''}, "
        f"{model['params']:,} parameters, sha256 `{model['sha256']}`).",
        "",
        f"Data: {shown_path(data['source']) if isinstance(data.get('source'), str) else data['name']}, test rows {held_out_rows(data, 'test')} ({data['sizes']['test']} rows), sha256 `{data['test_rows_sha256']}`. "
        f"Protected classes: {protected_classes(report)}.",
        "",
        f"**{files_verdict(report)}** (test FN +{budget['max_fn_increase']} per protected class, accuracy drop <= "
        f"{budget['max_accuracy_drop']})",
    ]
    lines += [f"- {names_as_text(r, report.get('class_names'))}" for r in gate["reasons"]]
    lines += [x for w in report.get("warnings") or [] for x in ("", f"**Warning**: {w}")]
    lines += ["", "| model | bytes | accuracy | protected (test) | agreement with torch | verdict |", "|---|--:|--:|---|--:|---|",
              f"| torch model | - | {fmt_value(report['baseline']['test']['accuracy'])} | {protected_cell(report['baseline']['test'], report.get('class_names'))} | - | reference |"]
    for art in report["artifacts"]:
        verdict = "pass" if art["gate"]["passed"] else "FAIL"
        lines.append(f"| {art['path']} ({art.get('runtime', '?')}) | {art['bytes']:,} | {fmt_value(art['evaluation']['accuracy'])} | "
                     f"{protected_cell(art['evaluation'], report.get('class_names'))} | {art['agreement']:.1%} | {verdict} |")
    lines += fit_lines(report)
    lines += deploy_lines(report)
    lines += _int8_lines(report["artifacts"], report.get("calibration"))
    lines += files_lines(report["artifacts"])
    lines += recheck_lines(report, "export.json")
    return no_raw_html(printable("\n".join(lines))) + "\n"  # class names come from files: text, not HTML
