"""`cwtool verify`: the false-negative gate for CI and for the device.

Imports typer at module level only; the library (numpy and one runtime) is imported when it runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.cli.options import ImageOptions, stripped_data, unique_paths, with_config
from toolchain.errors import Interrupted, UserError

__all__ = ["verify"]


@with_config(ImageOptions)
def verify(
    artifacts: List[Path] = typer.Argument(..., metavar="ARTIFACT", help="Exported .onnx / .tflite files, each run in its own runtime."),
    data: str = typer.Option(..., "--data", "-d", help="A .npz (x, y: every row; or given splits: test), digits, a .csv, an idx or ImageFolder folder.",
                             callback=stripped_data),
    protect_class: List[str] = typer.Option(..., "--protect-class", "-p", metavar="CLASS", help="Class name (or index, where no class has that name) whose false negatives matter (repeatable)."),
    baseline: Optional[Path] = typer.Option(None, help="cwtool compress report.json (its baseline.test), an export folder's export.json, an earlier verify JSON, or an evaluate JSON (one of a compress run that recommended no file fails every file)."),
    max_fn_increase: Optional[int] = typer.Option(None, help="FN budget per protected class over the baseline (default 0 with a baseline)."),
    max_fnr_increase: Optional[float] = typer.Option(None, help="FN budget as a fraction of the class's samples (instead of --max-fn-increase)."),
    max_fnr: Optional[float] = typer.Option(None, help="Absolute FNR ceiling per protected class (works without a baseline)."),
    max_accuracy_drop: Optional[float] = typer.Option(None, help="Accuracy budget against the baseline (fraction, 0.02 = 2 points; default 0.02 with a baseline)."),
    gate: str = typer.Option("plain", help="plain: fail over budget; significant: fail only on a significant increase (exact McNemar p < 0.05)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON (report.json's artifact entries plus the gate)."),
    markdown: Optional[Path] = typer.Option(None, help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)."),
    junit: Optional[Path] = typer.Option(None, help="Write JUnit XML: one test case per artifact and protected class."),
    threads: int = typer.Option(1, help="Runtime threads."),
    split: str = typer.Option("auto", help="auto, train, val, test or all (auto: every row of an x/y .npz, or of the --test "
                                           "folder or file the files' compress run recorded, else test)."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of the train/val/test split when the data has none (use compress's)."),
    label_column: Optional[str] = typer.Option(None, help="CSV label column (default: the last)."),
    class_names: Optional[str] = typer.Option(None, "--class-names", help="Comma-separated class names in label order (CSV string labels: sets their numbering); a JSON list for names that hold a comma."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="ImageFolder: resize every image to HEIGHTxWIDTH (or one side)."),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="The shape of one sample for the model, e.g. 1,28,28 (flat rows fed to an image model)."),
    allow_other_data: bool = typer.Option(False, "--allow-other-data", help="Compare with a baseline measured on other rows (by FN rate, unpaired; said so in every output)."),
    save_rows: Optional[Path] = typer.Option(None, "--save-rows", help="Also write the rows judged as an x/y .npz with their class names: "
                                             "a device's verify --data FILE judges the very same rows, with numpy and one runtime."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table on the terminal: the verdict alone (a failure's reasons and the run's own budget where it would pass; a pass's misses)."),
    image_options: ImageOptions = None,
) -> int:
    """Re-check the protected classes' false negatives on exported artifacts; exit 1 when a budget is broken, or when the baseline is a compress run that recommended no file."""
    from toolchain import interrupts
    from toolchain.data.options import parse_image_size, parse_input_shape
    from toolchain.io import json_text, write_named_output
    from toolchain.output_paths import check_output_file
    from toolchain.input_paths import input_paths
    from toolchain.report.consoles import log_console
    from toolchain.report.pace import saying_progress
    from toolchain.verify import VerifyRequest, run_verify

    inputs = None  # known once input_paths has read them: no report is written over an input
    try:  # on bad input, a report an earlier run left at --junit would be read as this run's ("0 failures")
        artifacts = unique_paths(artifacts)
        inputs = input_paths(data, baseline, artifacts=artifacts)
        for path, flag in ((json_out, "--json"), (markdown, "--markdown"), (junit, "--junit"), (save_rows, "--save-rows")):
            check_output_file(path, flag, inputs=inputs)
        for path, flag in ((json_out, "--json"), (markdown, "--markdown"), (junit, "--junit")):
            _check_replaceable(path, flag)
        if save_rows is not None and not save_rows.name.lower().endswith(".npz"):
            raise UserError(f"--save-rows '{save_rows}' must end in .npz: it is an x/y .npz for verify --data")
        _check_rows_replaceable(save_rows)
        named = [p.resolve() for p in (json_out, markdown, junit, save_rows) if p is not None]
        if len(set(named)) < len(named):
            raise UserError("--json, --markdown, --junit and --save-rows must name different files")
        interrupts.replace_if_stuck(_stop_documents(json_out, markdown, junit))  # a stop while a runtime is stuck loading
        request = VerifyRequest(
            artifacts=[str(a) for a in artifacts], data=data, protect=list(protect_class),
            baseline=str(baseline) if baseline is not None else None, max_fn_increase=max_fn_increase,
            max_fnr_increase=max_fnr_increase, max_fnr=max_fnr, max_accuracy_drop=max_accuracy_drop, gate=gate,
            threads=threads, split=split, seed=seed, label_column=label_column, allow_other_data=allow_other_data,
            keep_rows=save_rows is not None,
            class_names=class_names, image_size=parse_image_size(image_size), input_shape=parse_input_shape(input_shape),
            **image_options.load_args(),
        )
        with saying_progress(log_console().print):  # on stderr, --quiet too: 20,000 images of 224 px on a device's CPU, an hour a file
            result = run_verify(request)
        interrupts.replace_if_stuck([])  # a verdict from here: its own reports, not a stop's
        # Render and print everything first, then write: a fault there replaces the named reports with error documents.
        outputs = []
        if json_out is not None:
            outputs.append((json_out, "--json", json_text(result)))
        if markdown is not None:
            from toolchain.report.verify_markdown import render_verify_markdown

            outputs.append((markdown, "--markdown", render_verify_markdown(result)))
        if junit is not None:
            from toolchain.report.junit import render_junit

            outputs.append((junit, "--junit", render_junit(result)))
        log_console().print(f"rows: {result['data']['rows']}; {result['data']['preprocessing']}")
        from toolchain.report.verify_console import print_verdict, print_verify

        print_verdict(result, quiet=True) if quiet else print_verify(result)  # a failed gate says why, even --quiet
    except UserError as exc:
        interrupts.replace_if_stuck([])
        if inputs is not None:
            _write_error_documents(str(exc), json_out, markdown, junit, inputs, save_rows=save_rows)
        raise
    except Interrupted as exc:  # a CI job stopped or timed out: the last run's green report must not be published as this one's
        if inputs is not None:  # (else the command line's report paths are judged as after a usage error)
            from toolchain.interrupts import writing_after_stop

            with writing_after_stop():
                _write_error_documents(f"interrupted by {exc.signal_name} before a verdict", json_out, markdown, junit, inputs,
                                   "Interrupted", save_rows)
            exc.reports_replaced = True
        raise
    except Exception as exc:  # a bug in cwtool (exit 3), or the machine's: no verdict either, so no earlier run's report
        interrupts.replace_if_stuck([])
        if inputs is not None:  # may stand for one
            said, kind = _failure_words(exc)
            _write_error_documents(said, json_out, markdown, junit, inputs, kind, save_rows)
        raise
    writes = [(path, _verify_wrote, lambda path=path, flag=flag, payload=payload: write_named_output(path, payload, flag, inputs))
              for path, flag, payload in outputs]
    if save_rows is not None:
        def rows_saved():
            _write_rows(save_rows, request.rows_kept, inputs)
            shape = getattr(request.rows_kept["x"], "shape", ())
            # (N, C, L) signals: read alone, an .npz's 3-D x is (N, H, W) images (the printed command failed, exit 2)
            signals = f" --input-shape {shape[1]},{shape[2]}" if len(shape) == 3 else ""
            log_console().print(f"rows saved: {save_rows} ({len(request.rows_kept['y']):,} rows, the same sha256): a device with "
                                f"numpy and one runtime judges them with --data {save_rows.name}{signals}")
        writes.insert(0, (save_rows, _saved_by_verify, rows_saved))
    _write_all(writes)
    return 0 if result["gate"]["passed"] else 1


def _write_all(writes) -> None:
    """Every output of a verdict made, written whole: a stop while they are written (a CI job cancelled) lets the rest be
    written too, then is said as one that arrived as the command finished. Some had been left and some not (a 'passed'
    Markdown beside no JUnit), the console saying 'temporary files removed'. A second stop ends it at once.
    ``writes``: (path, whether a file there is verify's own, write). One that cannot be written (a full disk) does not
    stop the others, and what an earlier run left at its path is removed (a 'passed' JUnit of yesterday stood beside
    today's exit 2); the command then ends in that error."""
    from toolchain.interrupts import writing_after_stop

    stop = failed = None
    written, kept_stale = 0, False

    def attempt(path, ours, write):
        nonlocal failed, written, kept_stale
        try:
            write()
            written += 1
        except UserError as exc:
            failed = failed or exc
            try:
                if path.is_file() and not path.is_symlink() and ours(path):
                    path.unlink()
            except OSError:
                kept_stale = True

    for path, ours, write in writes:
        try:
            if stop is None:
                attempt(path, ours, write)
                continue
        except Interrupted as exc:
            stop = exc
        with writing_after_stop():
            attempt(path, ours, write)
    if failed is not None:  # before a stop that arrived meanwhile: an output is missing, which the stop's line would not say
        raise UserError(f"{failed} (the verdict above was made; {written} of its {len(writes)} outputs written"
                        f"{'' if kept_stale else ', none an earlier run left at the others'})")
    if stop is not None:
        stop.completed = True
        raise stop


def _check_replaceable(path: Path | None, flag: str) -> None:
    """A report replaces only a verify report (an earlier run's, in a CI workspace) or an empty file (a fresh
    $GITHUB_STEP_SUMMARY): a compress run's report.json given to --json by mistake became a verify of its own artifact,
    and a later --baseline on it passed a file the run had failed (a new user's finding); --junit replaced a training
    log and --markdown a user's notes."""
    from toolchain.output_paths import check_replaceable

    what = (" (a compress report.json or export.json is a baseline, not an output)" if flag == "--json" else "")
    check_replaceable(path, flag, _verify_wrote, f"a file verify did not write{what}")


def _write_rows(path: Path, rows: dict, inputs) -> None:
    """The rows judged, as an x/y .npz (x float32 as prepared, y int64, class_names): the same rows hash on a device.
    x is written a batch at a time, never held whole: a folder's rows can outgrow memory."""
    import numpy as np

    from toolchain.data.samples import batches
    from toolchain.io import atomic_write_npz
    from toolchain.output_paths import check_output_file

    x = rows["x"]
    arrays = {"x": ((len(x), *x.shape[1:]), np.float32, batches(x)), "y": np.asarray(rows["y"], dtype=np.int64),
              SAVED_ROWS_MARK: np.array("cwtool verify --save-rows")}  # what a later run may replace or remove: its own
    if rows.get("class_names"):
        arrays["class_names"] = np.array(rows["class_names"], dtype=str)
    check_output_file(path, "--save-rows", inputs)
    atomic_write_npz(path, arrays)


SAVED_ROWS_MARK = "cwtool_saved_rows"  # the member that marks an .npz verify --save-rows wrote


def _saved_by_verify(path: Path) -> bool:
    """Whether ``path`` is an .npz an earlier verify --save-rows wrote (its mark and verify's keys alone): a user's own
    x/y rows have the same keys, and a failed run deleted them."""
    from toolchain.data.npz import npz_keys

    try:
        keys = npz_keys(path)
    except (OSError, UserError):
        return False
    return SAVED_ROWS_MARK in keys and keys <= {"x", "y", "class_names", SAVED_ROWS_MARK}


def _check_rows_replaceable(path: Path | None) -> None:
    """--save-rows replaces only rows an earlier verify saved (or an empty file), as the reports replace only reports."""
    from toolchain.output_paths import check_replaceable

    check_replaceable(path, "--save-rows", _saved_by_verify,
                      "a file not marked as verify's own (your own rows, or rows a cwtool from before the mark saved)")


def _remove_stale_rows(path, inputs) -> None:
    """A --save-rows file an earlier run left, removed where this run judged nothing: a device step that copies it would
    judge rows this run never chose. Only rows an earlier verify saved (marked so), no link and never an input (the
    refusal of --save-rows naming the data itself is an error too) are touched."""
    if path is None or not Path(path).is_file() or Path(path).is_symlink():
        return
    try:
        from toolchain.output_paths import check_output_file

        check_output_file(path, "--save-rows", inputs)  # raises for an input: left as it is
        if _saved_by_verify(Path(path)):
            Path(path).unlink()
    except (OSError, UserError):
        pass


REPORT_FLAGS = ("--json", "--markdown", "--junit", "--save-rows")


def _failure_words(exc: Exception) -> tuple[str, str]:
    """What the reports say of a failure before a verdict, and its kind: as the command line's exit code says it (a
    limit of the process, a file this user may not read, or the machine's: exit 2; anything else a bug, exit 3)."""
    from toolchain.cli.failures import limits_line
    from toolchain.errors import describe
    from toolchain.io import environment_advice

    line = limits_line(exc)
    if line is not None:
        return line, "BadInput"
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and environment_advice(exc)):
        return f"cannot go on before a verdict: {describe(exc, 200)}", "BadInput"
    return f"internal error before a verdict: {describe(exc, 200)}", "InternalError"


def replace_stale_reports(argv: list[str], message: str, kind: str = "BadInput") -> None:
    """After a usage error the parser found (verify's own code never ran), the reports an earlier run left at --json,
    --markdown or --junit are replaced as after any bad input, and rows it saved at --save-rows removed. Only files that are verify's own reports are touched,
    and none that another argument names."""
    named: dict[str, Path] = {}
    own = set()  # the positions of the report paths themselves
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in REPORT_FLAGS and (eq or i + 1 < len(argv)):
            named[flag] = Path(value if eq else argv[i + 1])
            own.add(i if eq else i + 1)
    others = set()  # every other argument that may be a path (--baseline prev.json, an artifact, --data)
    for i, arg in enumerate(argv):
        if i in own:
            continue
        try:
            others.add(Path(arg.partition("=")[2] or arg).resolve())
        except (OSError, ValueError, RuntimeError):
            pass
    rows = named.pop("--save-rows", None)  # rows an earlier run saved: removed, never a file another argument names
    if rows is not None and rows.resolve() not in others:
        _remove_stale_rows(rows, [])
    reports = {flag: path for flag, path in named.items() if path.resolve() not in others and _is_verify_report(path)}
    if reports:
        _write_error_documents(message, reports.get("--json"), reports.get("--markdown"), reports.get("--junit"), [], kind)


def _is_verify_report(path: Path) -> bool:
    """A file cwtool verify wrote as a report, not a link."""

    try:
        if not path.is_file() or path.is_symlink():
            return False
    except OSError:
        return False
    return _verify_wrote(path)


def _ours_to_replace(path: Path) -> bool:
    """A file a report of verify's may replace: an empty one (made for it), or one verify wrote."""
    return path.stat().st_size == 0 or _verify_wrote(path)


def _verify_wrote(path: Path) -> bool:
    """Whether the file at ``path`` (a link followed) begins as a report cwtool verify writes: its JSON's schema and kind,
    its JUnit suite's name, its Markdown heading."""
    from toolchain.output_paths import file_head

    head = file_head(path)
    return (re.match(r'\{\s*"schema_version":\s*\d+,\s*"kind":\s*"cwtool-verify"', head) is not None
            or '<testsuites name="cwtool verify"' in head or head.startswith(("## \u2705 cwtool verify:", "## \u274c cwtool verify:")))


def _stop_documents(json_out, markdown, junit) -> list[tuple[str, bytes]]:
    """The reports a stop writes over an earlier run's where the main thread cannot (see interrupts.replace_if_stuck):
    rendered now, the stop's name left as a mark."""
    from toolchain.interrupts import SIGNAL_MARK

    message = f"interrupted by {SIGNAL_MARK.decode()} before a verdict"
    return [(os.path.realpath(path), render().encode("utf-8"))  # a link the user made is written through, as verify writes it
            for path, render in _error_renderers(message, json_out, markdown, junit, "Interrupted")
            if path is not None and path.is_file() and _ours_to_replace(path)]


def _error_renderers(message: str, json_out, markdown, junit, kind: str):
    from toolchain.io import json_text
    from toolchain.report.junit import render_junit_error
    from toolchain.report.verify_markdown import render_verify_error_markdown
    from toolchain.verify import VERIFY_SCHEMA

    return ((json_out, lambda: json_text({"schema_version": VERIFY_SCHEMA, "kind": "cwtool-verify", "error": message,
                                          "artifacts": [], "gate": {"passed": False, "error": message}})),
            (markdown, lambda: render_verify_error_markdown(message)),
            (junit, lambda: render_junit_error(message, kind)))


def _write_error_documents(message: str, json_out, markdown, junit, inputs, kind: str = "BadInput", save_rows=None) -> None:
    """A verify that could not judge writes no report, but one an earlier run left at --json, --markdown or --junit (a
    persistent CI workspace, a device's loop) would be read as this run's: it is replaced by one that says so. Only
    verify's own reports (or empty files) are: a compress report.json named by --json stays. Best effort: the error is
    the news."""
    from toolchain.errors import one_line
    from toolchain.io import write_named_output

    message = one_line(message)
    documents = [(path, flag, render) for (path, render), flag
                 in zip(_error_renderers(message, json_out, markdown, junit, kind), ("--json", "--markdown", "--junit"))]
    _remove_stale_rows(save_rows, inputs)
    for path, flag, render in documents:
        if path is not None and path.is_file() and _ours_to_replace(path):
            try:
                write_named_output(path, render(), flag, inputs)
            except (OSError, UserError):
                pass
