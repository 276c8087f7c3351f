"""A finished compress run's documents: plots/, report.json, report.md and report.html (the Markdown and the plots in
one self-contained page), rendered before any is written; and the lines its summary ends with."""

from __future__ import annotations

from pathlib import Path

from toolchain.io import atomic_write_text, json_text
from toolchain.rundir import RunDir

__all__ = ["write_run_report", "summary_lines"]


def summary_lines(report: dict, run_dir: Path) -> list[str]:
    """What a finished run's summary ends with, on the console and in its log: the target's verdict, the file to deploy
    per format with each finding, and where the files are."""
    from toolchain.report.deploy import deploy_sentences
    from toolchain.report.fit import fit_sentence

    verdict = fit_sentence(report)
    return [gate_sentence(report), *([verdict] if verdict else []), *deploy_sentences(report),
            f"run directory: {run_dir} (report.json, report.md, report.html)"]


def gate_sentence(report: dict) -> str:
    """The gate's verdict in one line, with its first reason: on stderr too, where stdout (the Markdown summary, which
    holds it) went to a file or to nothing and the terminal ended with the file to deploy, passed or not."""
    gate = report["gate"]
    if gate["passed"]:
        return "gate: PASSED"
    reasons = gate.get("reasons") or []
    more = f" (and {len(reasons) - 1} more: report.md)" if len(reasons) > 1 else ""
    return f"gate: FAILED: {reasons[0]}{more}" if reasons else "gate: FAILED"


def write_run_report(report: dict, run_dir: Path) -> None:
    """Write plots/, report.md, report.html (the Markdown and the plots in one self-contained page) and
    report.json; the three documents are rendered before any is written."""
    from toolchain.report.html import render_html
    from toolchain.report.markdown import render_report
    from toolchain.report.plots import caption, plot_report

    run = RunDir(run_dir)
    plots = plot_report(report, run.plots)
    report["plots"] = [run.relative(p) for p in plots]
    html_path = run.report_html
    report["html"] = run.relative(html_path)
    markdown = render_report(report)
    verdict = "PASSED" if (report.get("gate") or {}).get("passed") else "FAILED"  # a browser tab or a printed page's header
    page = render_html(markdown, [(p, caption(p.name, report)) for p in plots], f"cwtool compress report: gate {verdict}, run {report.get('run_id')}")
    document = json_text(report)
    written = []
    # report.json marks the run finished: written first, so that a kill -9 between the writes never leaves a report.md
    # saying "PASSED" in a run that is not (report.md and report.html are views of it); an error removes all it wrote
    try:
        for path, text in ((run.report_json, document), (run.report_md, markdown), (html_path, page)):
            atomic_write_text(path, text)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
