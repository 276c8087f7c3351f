"""The file to deploy in words: report.md's and export.md's section, and the console line after a run.
Reads report.json's "deploy" (toolchain.deploy.recommend). Standard library only."""

from __future__ import annotations

from pathlib import PurePath

from toolchain.errors import printable

__all__ = ["deploy_lines", "deploy_sentences", "run_failed"]


def deploy_sentences(report: dict) -> list[str]:
    """The console lines: per format the file to deploy, then each finding."""
    deploy = report.get("deploy")
    if not deploy or not (deploy.get("timed") or deploy.get("choices")):
        return []
    lines = [f"deploy ({c['format']}): {c['file']}, {c['why']}" if c["file"] else
             f"deploy ({c['format']}): {c['why']}; passed the gate: {', '.join(PurePath(p).name for p in c['passed'])}" if c.get("passed")
             else f"deploy ({c['format']}): none, {c['why']}" for c in deploy["choices"]]
    lines += [f"finding: {f}" for f in deploy["findings"]]
    return [printable(line) for line in lines]


def run_failed(report: dict) -> bool:
    """Whether the compress run behind a report recommended no file: its promise (or accuracy) not met on validation; an
    export of such a run's pruned.pt records it. Its files' own checks may pass: "pass" read as a file to ship."""
    promise, run = report.get("promise"), report.get("compress_run")  # a report is a file: anything may stand there
    return ((isinstance(promise, dict) and promise.get("met_on_val") is False)
            or (isinstance(run, dict) and run.get("budget_met") is False))


def deploy_lines(report: dict) -> list[str]:
    """The Markdown section: a row per file (bytes, batch-1 latency here, gate), the choice per format
    and the findings."""
    deploy = report.get("deploy")
    if not deploy:
        return []
    lines = ["", "## Which file to deploy", ""]
    if not deploy.get("timed"):
        return lines + [deploy.get("note", "files not timed"), ""] + [
            f"- {c['format']}: {c['why']}; passed the gate: {', '.join(f'`{PurePath(p).name}`' for p in c['passed'])}."
            if c.get("passed") else f"- {c['format']}: none, {c['why']}." for c in deploy.get("choices") or []]
    chosen = {c["file"] for c in deploy["choices"] if c["file"]}
    lines += ["| file | bytes | ms per call, batch 1, here | gate | deploy |", "|---|--:|--:|---|---|"]
    for art in report.get("artifacts", []):
        ms = deploy["latency_ms"].get(art["path"])
        gate = ("**failed**" if not art["gate"]["passed"] else "passed, not to ship: the run failed" if run_failed(report)
                else "passed")
        if "fit" in art and not art["fit"]["fits"]:
            gate += ", does not fit"
        lines.append(f"| {PurePath(art['path']).name} | {art['bytes']:,} | {'-' if ms is None else f'{ms:.3g}'} | {gate} | "
                     f"{'**yes**' if art['path'] in chosen else ''} |")
    lines += [""]
    lines += [f"- {c['format']}: " + (f"`{PurePath(c['file']).name}`, {c['why']}." if c["file"] else f"none, {c['why']}.")
              for c in deploy["choices"]]
    twins = deploy.get("findings_fp32") or [None] * len(deploy["findings"])  # an older report: none
    lines += [f"- **Finding**: {f}" + ((("; deploy the fp32 file" + ("." if "neither speed nor bytes" in f else " unless bytes decide.")))
                                       if twin in chosen else ".")  # not where no file, or the int8 file alone, is recommended
              for f, twin in zip(deploy["findings"], twins)]
    here = f"{deploy['runs']} calls per file, {deploy['threads']} thread{'s' if deploy['threads'] != 1 else ''}"
    note = deploy["note"]  # "... on this machine, interleaved; on the device, ..." : the counts are this machine's
    said = note.replace("; ", f" ({here}); ", 1) if "; " in note else f"{note} ({here})"
    lines += ["", f"Timing: {said}."]
    return lines
