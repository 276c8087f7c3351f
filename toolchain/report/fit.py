"""The target's verdict in words: does each file fit the device, and why (bytes, estimated peak memory,
operators, estimated latency and where its numbers come from). Standard library only: reads the
"target" summary and each artifact's "fit" (toolchain.device_fit.fit_verdicts)."""

from __future__ import annotations

from pathlib import Path

from toolchain.errors import printable

__all__ = ["fit_lines", "fit_sentence"]

MIB = 1024 * 1024


def _mib(n) -> str:
    return "-" if n is None else f"{n / MIB:.1f} MiB"


def _operators(check: dict) -> str:
    used = check.get("used")
    if used is None:
        return f"not read ({check.get('note', 'no reader here')})"
    bad = sorted(set(check.get("unsupported") or []) | set(check.get("rejected") or []))
    kinds = f"{len(used)} kind{'s' if len(used) != 1 else ''}"
    return f"{kinds}, all supported" if not bad else f"{kinds}; not supported: {', '.join(bad)}"


def _latency(fit: dict) -> str:
    lat = fit.get("estimated_latency")
    if not lat:
        return "-"
    return f"{lat['estimate_ms']:.3g} ms ({lat['precision']}, {lat['gmacs']:g} GMAC/s, {lat['threads']} threads)"


def _nothing_judged(target: dict) -> bool:
    """--skip-export: the target shaped the pruning (its kernel block), and no file was made to judge."""
    return target.get("files") == 0


def _none_recommended(report: dict) -> bool:
    """The files fit the device, but the run recommends none of them: "fits" alone read as a go (a new user's finding).
    A failed gate alone does not say it: another format's file may still be recommended."""
    choices = (report.get("deploy") or {}).get("choices") or []
    return bool(choices) and all(c.get("file") is None and not c.get("passed") for c in choices)  # untimed: none chosen, not none passed


_UNVETTED = " (the device's limits only: no file is recommended)"


def fit_style(report: dict) -> str:
    """The console style of ``fit_sentence``'s line: red where a file does not fit, yellow where they fit a failed run."""
    target = report["target"]
    if not (target["fits"] or _nothing_judged(target)):
        return "bold red"
    return "yellow" if _none_recommended(report) and not _nothing_judged(target) else "green"


def fit_sentence(report: dict) -> str | None:
    """One line for the console after a run: the target, its verdict, how many files fit."""
    target = report.get("target")
    if not target:
        return None
    if _nothing_judged(target):
        return printable(f"target {target['name']}: no file to check (none was written)")
    count = f"{target.get('files_fitting', '?')} of {target.get('files', '?')} files fit"
    word = "fits" if target["fits"] else "does NOT fit"
    why = (_UNVETTED if _none_recommended(report) else "") if target["fits"] else f" ({target.get('verdict', '')})"
    return printable(f"target {target['name']}: {word}; {count}{why}")


def fit_lines(report: dict) -> list[str]:
    """The Markdown section of report.md (compress) and export.md: a row per file, then warnings and
    the sources of the estimates."""
    target = report.get("target")
    if not target:
        return []
    arts = [a for a in report.get("artifacts", []) if "fit" in a]
    if _nothing_judged(target):
        return ["", f"## Target {target['name']}: no file to check", "",
                "No file was written (`--skip-export`): the profile set only the pruning's channel multiple."]
    verdict = ("fits" + (_UNVETTED if _none_recommended(report) else "")) if target["fits"] else "**does not fit**"
    lines = ["", f"## Target {target['name']}: {verdict}", ""]
    if target.get("description"):
        lines += [f"{target['description']}.", ""]
    lines += ["| file | verdict | bytes (limit) | peak memory, est. (RAM) | operators | latency per sample, est. |",
              "|---|---|--:|--:|---|--:|"]
    for art in arts:
        fit, checks = art["fit"], art["fit"]["checks"]
        memory = checks["memory"]
        verdict = "fits" if fit["fits"] else "**no**: " + "; ".join(fit["reasons"])
        lines.append(f"| {art['path']} | {verdict} | {checks['bytes']['value']:,} ({checks['bytes']['limit']:,}) | "
                     f"{_mib(memory['estimate_bytes'])} ({_mib(memory['limit'])}) | {_operators(checks['operators'])} | {_latency(fit)} |")
    warnings = [f"- {art['path']}: {w}" for art in arts for w in art["fit"].get("warnings", [])]
    if warnings:
        lines += ["", "Runs, but not as the profile asks:", "", *warnings]
    lat = next((a["fit"]["estimated_latency"] for a in arts if a["fit"].get("estimated_latency")), None)
    lines += [""]
    if lat:
        lines.append(f"Latency is an {lat['note']}; MACs per sample: {lat['macs']:,} from {lat['macs_source']}; "
                     f"throughput: {target.get('throughput_source') or lat.get('throughput_source')}.")
    if target.get("memory_note"):
        lines.append(f"Peak memory is an {target['memory_note']}.")
    lines.append(f"Measure on the device with `cwtool bench FILE --target {_target_argument(target)}`.")
    return lines


def _target_argument(target: dict) -> str:
    """What --target takes to find this profile again: its name where that finds this very file, else its path."""
    import shlex

    from toolchain.targets import target_files

    path = target.get("profile")  # the file the run read
    if not isinstance(path, str) or not path:
        return shlex.quote(str(target.get("name")))
    found = target_files().get(str(target.get("name")))
    same = found is not None and Path(found).resolve() == Path(path).resolve()
    return shlex.quote(str(target["name"]) if same else path)
