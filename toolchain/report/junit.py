"""JUnit XML for a verify result: one test case per artifact x protected class. Standard library only.

A test case fails when its class is over budget, or when its artifact fails an artifact-wide rule
(class collapse, accuracy budget): every failing artifact shows at least one failure in CI.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from toolchain.errors import printable
from toolchain.report.verify_console import artifact_wide_reasons, shown_name

__all__ = ["render_junit", "render_junit_error"]


def _failure_type(own_reasons: list[str], artifact_wide: list[str]) -> str:
    """A failure's JUnit type, from the reason it fails first: this class's FN, else what fails the whole file."""
    if own_reasons:
        return "FalseNegativeRegression"
    first = artifact_wide[0] if artifact_wide else ""
    if first.startswith("the baseline's compress run"):
        return "FailedCompressRun"
    return "ClassCollapse" if first.startswith("collapse") else "AccuracyDrop" if first.startswith("accuracy") else "GateFailure"


def _class_label(k: int, class_names) -> str:
    if class_names and 0 <= k < len(class_names) and str(class_names[k]) != str(k):
        return f"class {k} ({class_names[k]})"
    return f"class {k}"


def render_junit(result: dict) -> str:
    """The JUnit XML document (str) for `toolchain.verify.run_verify`'s result."""
    names = result.get("class_names")
    suites = ET.Element("testsuites", name="cwtool verify")
    total = failures = 0
    for art in result["artifacts"]:
        gate = art["gate"]
        stem = shown_name(art)
        suite = ET.SubElement(suites, "testsuite", name=f"cwtool verify {stem}")
        props = ET.SubElement(suite, "properties")  # what was judged, and how: a CI log that proves it
        data = result.get("data") or {}
        for key in ("rows_sha256", "same_rows_as_baseline"):
            if data.get(key) is not None:
                ET.SubElement(props, "property", name=key, value=str(data[key]))
        for key in ("bytes", "sha256"):  # the bytes judged: a CI log that proves which file passed
            if art.get(key) is not None:
                ET.SubElement(props, "property", name=f"artifact_{key}", value=str(art[key]))
        for f in art.get("files") or []:
            ET.SubElement(props, "property", name=f"sha256 {f['name']}", value=f["sha256"])
        for note in result.get("notes", []):
            ET.SubElement(props, "property", name="note", value=note)
        if (result.get("gate") or {}).get("fn_budget") is False:
            ET.SubElement(props, "property", name="fn_budget", value="none given: only class collapse was gated")
        artifact_wide = artifact_wide_reasons(gate)
        n_fail = 0
        per_class_time = art.get("seconds", 0.0) / max(1, len(gate["checks"]))
        for check in gate["checks"]:
            label = _class_label(check["class"], names)
            case = ET.SubElement(suite, "testcase", classname=f"cwtool.verify.{stem}",
                                 name=f"{label} false negatives", time=f"{per_class_time:.3f}")
            why = list(check["reasons"]) + artifact_wide
            base = check.get("baseline_fn")
            summary = f"FN {check['fn']}/{check['support']}" + (f" (baseline {base}, limit {check['limit']})" if base is not None else "")
            if why:
                n_fail += 1
                fail = ET.SubElement(case, "failure", message=why[0], type=_failure_type(check["reasons"], artifact_wide))
                fail.text = "\n".join([*why, summary, f"runtime: {art.get('runtime')}"])
            else:
                unbudgeted = (result.get("gate") or {}).get("fn_budget") is False
                ET.SubElement(case, "system-out").text = summary + (
                    "; no FN budget given (--baseline or --max-fnr): nothing held these FN to one" if unbudgeted else "")
        total += len(gate["checks"])
        failures += n_fail
        suite.set("tests", str(len(gate["checks"])))
        suite.set("failures", str(n_fail))
        suite.set("errors", "0")
        suite.set("time", f"{art.get('seconds', 0.0):.3f}")
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    suites.set("errors", "0")
    ET.indent(suites)
    # control characters (from a class name, say) are not allowed in XML 1.0: escaped, the file stays well-formed
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + printable(ET.tostring(suites, encoding="unicode")) + "\n"


def render_junit_error(message: str, kind: str = "BadInput") -> str:
    """The JUnit XML document of a verify that could not judge (``kind``: BadInput, exit 2; Interrupted; InternalError,
    exit 3, a bug in cwtool): one test case in error, so that a report left by an earlier run is not read as this one's."""
    suites = ET.Element("testsuites", name="cwtool verify", tests="1", failures="0", errors="1")
    suite = ET.SubElement(suites, "testsuite", name="cwtool verify", tests="1", failures="0", errors="1", time="0.000")
    case = ET.SubElement(suite, "testcase", classname="cwtool.verify", name="verify could not judge the files", time="0.000")
    ET.SubElement(case, "error", message=message, type=kind).text = message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + printable(ET.tostring(suites, encoding="unicode")) + "\n"
