"""toolchain.report.console: what a person reads in the terminal."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console

from toolchain.metrics import evaluate_logits
from toolchain.report.console import print_evaluation, render_evaluation

NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def _evaluation(protected=(6,)):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    z = rng.normal(size=(600, 10)) + 2.0 * np.eye(10)[y]
    return evaluate_logits(y, z, list(protected))


def _text(renderable, width=100):
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def _row(text, prefix):
    rows = [line for line in text.splitlines() if line.strip("│┃ ").startswith(prefix)]
    assert rows, f"no row starting with {prefix!r}"
    return rows[0]


def test_protected_fn_and_name_appear():
    ev = _evaluation()
    text = _text(render_evaluation(ev, NAMES, title="Fashion test"))
    p = ev["protected"][0]
    assert "Shirt" in text and "Fashion test" in text
    # Per-class row is marked with '*' and shows the protected FN count.
    row = _row(text, "6*")
    assert "Shirt" in row and f" {p['fn']} " in row
    # The summary shows FN, FNR with its interval, FPR and AUC.
    summary = text.split("Protected classes", 1)[1]
    assert f" {p['fn']} " in summary
    assert f"{100 * p['fnr']:.1f}%" in summary
    lo, hi = p["fnr_ci95"]
    assert f"[{100 * lo:.1f}%, {100 * hi:.1f}%]" in summary
    assert f"{p['auc']:.4f}" in summary
    assert f"accuracy {100 * ev['accuracy']:.2f}%" in text


def test_only_protected_classes_are_marked():
    text = _text(render_evaluation(_evaluation((6, 3)), NAMES))
    marked = [line for line in text.split("Protected classes")[0].splitlines() if "*" in line and "│" in line]
    assert len(marked) == 2
    assert "Dress" in _row(text, "3*") and "Shirt" in _row(text, "6*")
    assert "0*" not in text


def test_fits_80_columns_and_handles_missing_values():
    # Class 3 absent and never predicted: its FNR/recall/precision and AUC are undefined.
    y = np.array([0, 1, 2, 0, 1, 2])
    z = np.eye(4)[[0, 1, 2, 0, 2, 2]] * 3.0
    ev = evaluate_logits(y, z, [3, 1])
    text = _text(render_evaluation(ev, ["a" * 40, "b", "c", "d"], title="t"), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    row = _row(text, "3*")
    assert "\u2013" in row and "nan" not in text.lower() and "None" not in text


def test_print_evaluation_writes_to_given_console():
    buf = io.StringIO()
    print_evaluation(_evaluation(), NAMES, console=Console(file=buf, width=100, color_system=None))
    assert "Shirt" in buf.getvalue()


def test_progress_times_read_as_a_person_reads_them(monkeypatch):
    from toolchain.report import pace as paces

    assert [paces.duration(s) for s in (0.4, 9.96, 89, 95, 3000, 5400, 20000)] == ["0.4 s", "10 s", "89 s", "2 min", "50 min", "1.5 h", "5.6 h"]
    clock = iter([100.0, 160.0, 220.0])  # started, after epoch 1, after epoch 2
    monkeypatch.setattr(paces.time, "perf_counter", lambda: next(clock))
    pace = paces.EpochPace(8)
    assert pace.line(1) == "epoch 1/8 done (60 s an epoch, about 7 min to go)"
    assert pace.line(2) == "epoch 2/8 done (60 s an epoch, about 6 min to go)"


def test_a_progress_line_reaches_a_pipe_but_not_a_terminal_and_always_the_log(tmp_path, monkeypatch):
    from toolchain.report.consoles import RunLog

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for terminal in (True, False):
        screen = io.StringIO()
        log = RunLog(Console(file=screen, force_terminal=terminal, color_system=None))
        log.attach(tmp_path / f"log{terminal}")
        log.progress("round 1/4 retrain: epoch 1/8 done (20 s an epoch)")
        assert ("epoch 1/8 done" in screen.getvalue()) is not terminal  # a terminal shows it in its progress bar
        assert "epoch 1/8 done" in (tmp_path / f"log{terminal}").read_text()


def test_a_long_prediction_says_where_it_is_and_a_short_one_says_nothing(monkeypatch):
    from toolchain.report import pace as paces

    said = []
    clock = iter([100.0, 110.0, 140.0, 150.0, 175.0])  # started; then after each batch
    monkeypatch.setattr(paces.time, "perf_counter", lambda: next(clock))
    rows = paces.RowPace("model_int8.tflite", 20_000)
    with paces.saying_progress(said.append):
        for done in (2_000, 8_000, 10_000, 20_000):
            rows(done)
    assert said == ["model_int8.tflite: 8,000 of 20,000 rows (40 s, about 60 s to go)"]  # 10 s in: too soon; the end: not said
    rows(4_000)  # outside the block: nowhere to say it
    assert len(said) == 1


@pytest.mark.parametrize("columns", ["0", "5", "60", "wide", "10000000", "99999999999999999999"])
def test_a_columns_setting_no_table_can_be_read_at_is_passed_over(monkeypatch, capsys, columns):
    """COLUMNS=0 (some CI and docker setups): a failing verify printed nothing at all, not even its reasons; COLUMNS=5
    drew its table as empty box characters; COLUMNS=10000000 padded --help to 290 MB, and 20 digits crashed rich."""
    from toolchain.report.consoles import MAX_COLUMNS, log_console, out_console

    monkeypatch.setenv("COLUMNS", columns)
    for make in (out_console, log_console):
        console = make()
        assert 80 <= console.width <= MAX_COLUMNS  # a table narrower holds no number in its cells
        console.print("FAIL model.onnx: class 3: 2 more missed")
    captured = capsys.readouterr()
    assert "FAIL model.onnx: class 3: 2 more missed" in captured.out and "FAIL model.onnx" in captured.err


def test_a_ci_log_that_force_color_colours_still_gets_the_markdown_and_a_line_an_epoch(monkeypatch, capfd, tmp_path):
    """FORCE_COLOR=1 (CI systems set it) made rich take a pipe for a terminal: report.md reached the log rendered, its
    list items cut at 80 columns, and no epoch's line was said (a terminal's progress bar was to show it)."""
    from toolchain.report.consoles import RunLog, log_console, print_markdown

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("COLUMNS", raising=False)
    item = "- class 3: " + "the shipped model misses at most the dense model's misses plus one " * 3
    print_markdown(f"# Report\n\n{item}\n")
    log = RunLog(log_console())
    log.attach(tmp_path / "log")
    log.progress("round 1/4 retrain: epoch 1/8 done")
    out, err = capfd.readouterr()
    assert out == f"# Report\n\n{item}\n" and "epoch 1/8 done" in re.sub(r"\x1b\[[0-9;]*m", "", err)  # coloured, as asked


def test_a_dumb_terminal_gets_a_line_an_epoch_where_it_draws_no_progress_bar(monkeypatch, tmp_path):
    """TERM=dumb: rich draws no bar there, and the epoch lines went to the log file alone (minutes of silence)."""
    from toolchain.report.consoles import RunLog, interactive

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for term, said in (("dumb", True), ("xterm", False)):
        monkeypatch.setenv("TERM", term)
        screen = io.StringIO()
        log = RunLog(Console(file=screen, force_terminal=True, color_system=None))
        log.progress("round 1/4 retrain: epoch 1/8 done")
        assert ("epoch 1/8 done" in screen.getvalue()) is said and interactive(log.console) is not said


def test_a_list_item_of_the_report_wraps_on_a_terminal_instead_of_being_cut(monkeypatch):
    """On a real terminal every bullet of "The FN promise" was cut at the window's edge, with no ellipsis."""
    from toolchain.report import consoles

    screen = io.StringIO()
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setattr(consoles, "out_console", lambda: consoles.SafeConsole(file=screen, force_terminal=True, width=40,
                                                                              soft_wrap=True, color_system=None, markup=False))
    command = "cwtool verify artifacts/model_int8.onnx --data digits -p 3 --baseline report.json"
    consoles.print_markdown("# Report\n\n- class 3: on new data the shipped model misses at most the dense model's misses plus "
                            f"one\n- and more\n\nRe-check a file here: `{command}`.\n")
    shown = screen.getvalue()
    assert " ".join(shown.replace("•", " ").split()).startswith("Report class 3: on new data the shipped model misses at most "
                                                                "the dense model's misses plus one and more Re-check")
    assert any(command in line for line in shown.splitlines())  # a paragraph is the terminal's to wrap: it copies whole


def test_help_is_printed_whatever_columns_says(monkeypatch, capsys):
    """COLUMNS=0: `cwtool --help` printed one empty line (typer and rich read COLUMNS themselves)."""
    from clirun import run_cli

    monkeypatch.setenv("COLUMNS", "0")
    code, out, _ = run_cli(["verify", "--help"], capsys)
    assert code == 0 and "--baseline" in out and "--max-fnr" in out, out


def test_a_terminal_that_went_away_is_a_reader_gone_not_a_stop():
    """A run that ignores SIGHUP (nohup, a trap) lost its terminal: the next console line raised EIO and the run stopped
    with 'OSError' and exit 1, the gate-failed code. It goes on, as after a reader of a pipe went away."""
    import os

    from toolchain.report.consoles import SafeConsole

    master, slave = os.openpty()
    stream = os.fdopen(slave, "w")
    console = SafeConsole(file=stream, markup=False)
    console.print("before")
    os.close(master)  # the terminal's window closed: writes to its other end fail with EIO
    console.print("a line nobody reads")
    console.print("and another")
    stream.close()


def test_a_report_and_an_error_line_to_a_terminal_gone_leave_the_exit_code_alone(monkeypatch, capsys):
    """A terminal gone (EIO) under a finished compress: its Markdown summary, written plainly once the terminal no longer
    says it is one, ended in exit 3; a bad input's line, in exit 1 (the gate-failed code) instead of 2."""
    import errno
    import sys

    import toolchain.cli as cli
    from toolchain.report import consoles

    class Gone:
        def write(self, text):
            raise OSError(errno.EIO, "Input/output error")

        def flush(self):
            raise OSError(errno.EIO, "Input/output error")

        def fileno(self):
            raise ValueError("no descriptor")

        def isatty(self):
            return False

    monkeypatch.setattr(sys, "stdout", Gone())
    monkeypatch.setattr(sys, "stderr", Gone())
    consoles.print_markdown("# report\n")  # raised OSError: the finished run's exit 3
    cli._err("cwtool: error: a bad input")
    with pytest.raises(SystemExit) as bad:  # a bad input's whole path, its line written to the terminal gone
        cli.main(["evaluate", "no-such-model.pt", "--data", "digits", "-p", "3"])
    assert bad.value.code == 2


def test_a_thousand_class_evaluation_shows_the_protected_and_the_most_missed_classes():
    """evaluate printed 1,017 lines for a 1,000-class head: the two protected rows were lost among the others."""
    import io

    from rich.console import Console

    from toolchain.metrics import evaluate_logits
    from toolchain.report.console import PER_CLASS_ROWS, render_evaluation

    k = 1000
    y = np.arange(5 * k) % k
    pred = y.copy()
    pred[y == 500] = 1  # class 500 missed whole: the most missed
    pred[np.flatnonzero(y == 7)[:2]] = 0
    ev = evaluate_logits(y, np.eye(k, dtype=np.float32)[pred], [3, 7])
    buffer = io.StringIO()
    Console(file=buffer, width=120).print(render_evaluation(ev, [f"c{i}" for i in range(k)]))
    text = buffer.getvalue()
    assert len(text.splitlines()) < PER_CLASS_ROWS + 25, len(text.splitlines())
    assert "Per class: 3 of 1,000, the protected ones and the most missed (--json holds every class)" in " ".join(text.split()), text
    assert all(f" {c} " in text or f" {c}* " in text for c in ("3", "7", "500"))
    small = io.StringIO()
    Console(file=small, width=120).print(render_evaluation(evaluate_logits(y % 10, np.eye(10)[y % 10], [3])))
    assert "Per class " in small.getvalue() and "of 10" not in small.getvalue() and " 9 " in small.getvalue()
