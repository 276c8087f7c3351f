"""What a compress run with a --target leaves for its user: the device verdict on the console and in
report.md, report.html beside it with the plots inside, and the sha256 of every file in report.json."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from toolchain.deploy import TIE


def test_the_fit_verdict_is_on_the_console_and_in_report_md(pi4_run):
    code, out, stdout, stderr = pi4_run
    assert code in (0, 1), stderr
    report = json.loads((out / "report.json").read_text())
    target = report["target"]
    assert target["name"] == "raspberry-pi-4" and target["files"] == len(report["artifacts"]) == 2
    assert target["verdict"] == ("fits" if target["fits"] else target["verdict"]) and target["throughput_source"]
    md = (out / "report.md").read_text()
    word = "fits" if target["fits"] else "**does not fit**"
    assert f"## Target raspberry-pi-4: {word}" in md
    for art in report["artifacts"]:
        fit = art["fit"]
        assert fit["artifact"] == art["path"] and fit["checks"]["bytes"]["value"] == art["bytes"]
        row = next(line for line in md.splitlines() if line.startswith(f"| {art['path']} |") and "MiB" in line)
        assert f"{art['bytes']:,} ({fit['checks']['bytes']['limit']:,})" in row and "kinds" in row
        assert f"{fit['estimated_latency']['estimate_ms']:.3g} ms" in row
    # the files' own graphs, as `cwtool bench --target` counts them: the report and bench gave one file two estimates
    assert "Latency is an estimate" in md and "from artifact graph (Conv/Gemm/MatMul/FC)" in md and "Peak memory is an estimate" in md
    from toolchain.device_fit import fit_check

    for art in report["artifacts"]:
        assert art["fit"]["estimated_latency"] == fit_check("raspberry-pi-4", out / art["path"])["estimated_latency"]
    assert "## Target raspberry-pi-4" in stdout  # the report, printed after the run
    assert re.search(r"target raspberry-pi-4: (fits|does NOT fit); \d of 2 files fit", stderr), stderr


def test_report_html_holds_the_report_and_its_plots(pi4_run):
    _, out, stdout, stderr = pi4_run
    report = json.loads((out / "report.json").read_text())
    assert report["html"] == "report.html" and {"plots/rounds.png", "plots/ledger.png", "plots/confusion.png"} <= set(report["plots"])
    page = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted((out / p).read_bytes() for p in report["plots"])
    assert not re.search(r"<script|\bhref=|src=\"(?!data:)", page)  # opens anywhere, offline
    assert "Target raspberry-pi-4" in page and "<table>" in page
    assert "report.html" in stderr


def test_report_json_holds_the_sha256_of_every_file_and_of_the_rows(pi4_run, digits_dataset):
    from toolchain.provenance import rows_sha256

    _, out, _, _ = pi4_run
    report = json.loads((out / "report.json").read_text())
    digest = rows_sha256(*digits_dataset.split("test"))
    assert report["data"]["test_rows_sha256"] == digest
    for art in report["artifacts"]:
        path = out / art["path"]
        assert art["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert [f["name"] for f in art["files"]] == [path.name, path.name + ".json"]  # the TFLite file and its sidecar
        assert all(f["sha256"] == hashlib.sha256((path.parent / f["name"]).read_bytes()).hexdigest() for f in art["files"])
        assert art["evaluation"]["rows_sha256"] == digest
    md = (out / "report.md").read_text()
    assert all(art["sha256"] in md for art in report["artifacts"])


def test_every_file_is_timed_and_one_is_named_to_deploy(pi4_run):
    _, out, stdout, stderr = pi4_run
    report = json.loads((out / "report.json").read_text())
    deploy = report["deploy"]
    assert deploy["timed"] and set(deploy["latency_ms"]) == {a["path"] for a in report["artifacts"]}
    assert all(ms > 0 for ms in deploy["latency_ms"].values())
    (choice,) = deploy["choices"]  # the pi4 profile asks for TFLite files only
    eligible = [a for a in report["artifacts"] if a["gate"]["passed"] and a["fit"]["fits"]]
    assert eligible and choice["file"] in {a["path"] for a in eligible}, report["gate"]
    assert f"deploy (tflite): {choice['file']}" in stderr
    # the fastest on the target by its estimate, or a smaller file within TIE of it
    estimate = {a["path"]: a["fit"]["estimated_latency"]["estimate_ms"] for a in eligible}
    near = [a for a in eligible if estimate[a["path"]] <= min(estimate.values()) * (1 + TIE)]
    assert choice["file"] == min(near, key=lambda a: (a["bytes"], estimate[a["path"]]))["path"], (estimate, choice)
    md = (out / "report.md").read_text()
    assert "## Which file to deploy" in md and f"{deploy['runs']} calls per file" in md
    assert report["seconds"]["timing the files"] > 0
    # the profile's 4 threads, or this machine's cores where fewer (more threads than cores time the scheduler)
    cores = len(os.sched_getaffinity(0))
    assert deploy["threads"] == min(4, cores) and deploy.get("threads_asked") == (4 if cores < 4 else None), deploy
    assert (f"timed with {cores} threads, not the target profile's 4" in md.replace("\n", " ")) == (cores < 4)


def test_report_md_says_each_int8_file_s_float_input_as_the_file_has_it(pi4_run):
    """report.md said "none (fully int8)" of an int8 file that takes float32 input (an ONNX QDQ file always; a TFLite
    file where the converter quantizes inside), where a target wanting int8 input and output reads it."""
    from toolchain.runtimes import load_runner

    _, out, _, _ = pi4_run
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    section = md[md.index("## int8 files"):].split("\n## ")[0]
    int8 = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert int8 and "fully int8" not in md
    # the size reached, said where the goal was met too (it was in report.json alone), with thousands separators
    goal = report["size_goal"]
    if goal["met"]:
        assert (f"**Size goal met**: the shipped model keeps {goal['param_fraction']:.1%} of the parameters and "
                f"{goal['mac_fraction']:.1%} of the MACs (--keep-params {goal['keep_params']:g})") in md, md[:2000]
    assert f"| dense (torch) | {report['baseline']['params']:,} |" in md
    # each file's own validation counts and promise, beside the torch model's (only report.json held them)
    for art in int8:
        line = next(line for line in section.splitlines() if line.startswith(f"- {art['path']}: "))
        own = art["quantization"]["val_promise"]
        assert all(f"class {k} misses {v['fn']} of " in line and f"(probability {v['confidence']:.3f}" in line for k, v in own.items()), line
    # which rows calibrated them, as export.md says (report.md named no set)
    assert f"Calibrated on {report['calibration']['size']:,} calibration rows drawn from the train split." in section, section
    for art in int8:
        dtype = load_runner(out / art["path"]).input_dtype.name  # the file's own, not what the report says of it
        line = next(line for line in section.splitlines() if line.startswith(f"- {art['path']}: "))
        assert (f"({dtype} input, quantized inside the file)" in line) == dtype.startswith("float"), (dtype, line)


def test_stderr_and_the_log_say_the_gate_s_verdict_in_one_line(pi4_run):
    """With stdout sent elsewhere (the Markdown summary, which held the verdict), stderr ended with the file to deploy and
    the run directory: no word of whether the gate passed. The summary's lines now begin with it, on stderr and in the log."""
    code, out, _, stderr = pi4_run
    report = json.loads((out / "report.json").read_text())
    lines = stderr.splitlines()
    verdict = next(line for line in lines if line.startswith("gate: "))
    if report["gate"]["passed"]:
        assert code == 0 and verdict == "gate: PASSED", verdict
    else:
        assert code == 1 and verdict.startswith(f"gate: FAILED: {report['gate']['reasons'][0]}"), verdict
    assert lines.index(verdict) < next(i for i, line in enumerate(lines) if line.startswith("run directory: "))
    assert any(line.endswith(verdict) for line in (out / "compress.log").read_text().splitlines())


def test_compress_log_has_every_progress_line_time_stamped_and_the_seconds(pi4_run):
    _, out, _, stderr = pi4_run
    lines = (out / "compress.log").read_text().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+ *\d+\.\ds ")
    assert lines and all(stamp.match(line) for line in lines)
    text = "\n".join(stamp.sub("", line) for line in lines)
    assert "round 1:" in text and "round 1:" in stderr  # the console's round line, in the file too
    # each epoch's end, in the file and, the console being a pipe here, on it too: a CI log shows where a run is
    # (what is left after each round: test_compress.py's resume test, of three rounds; this run has one)
    assert re.search(r"^round 1/\d+ retrain: epoch 1/\d+ done \([\d.]+ (s|min) an epoch(, about [\d.]+ (s|min) to go)?\)$", text, re.M)
    assert re.search(r"^round 1/\d+ retrain: epoch 1/\d+ done ", stderr, re.M)
    assert text.splitlines()[0].startswith("cwtool ") and "data: digits" in text
    last = next(line for line in reversed(text.splitlines()) if line.startswith("finished: "))  # then the summary's end
    assert last.startswith("finished: gate ") and "pruning " in last and "total " in last
    assert text.splitlines()[-1].startswith("run directory: ")


def test_a_stopped_run_says_why_in_its_log(trained_digits, tmp_path, monkeypatch):
    from toolchain.cli import main
    from toolchain.prune import lottery

    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lottery.LotteryPruner, "run", fail)
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        main(["compress", str(trained_digits[0]), "--data", "digits", "-p", "3", "--out", str(out)])
    assert "stopped: RuntimeError: disk on fire" in (out / "compress.log").read_text().splitlines()[-1]


def test_report_md_s_verify_command_runs_as_printed_from_the_run_directory(pi4_run, monkeypatch, capsys):
    """report.md names the command that re-checks the files to deploy against report.json on the rows the run measured, with the
    run's own budget: run as printed from the run directory, it judges the same rows (their sha256) and says pass or fail,
    not a refusal."""
    import shlex

    from toolchain.cli import main

    _, out, _, _ = pi4_run
    report = json.loads((out / "report.json").read_text())
    found = re.search(r"from this folder: `cwtool (verify [^`]+)`", (out / "report.md").read_text())
    assert found, "report.md names no verify command"
    args = shlex.split(found.group(1))
    # the files it recommends to deploy (a command naming the int8 file beside "deploy: model_fp32.onnx" re-checked a file
    # the user was told not to ship), else the int8 file
    chosen = [c["file"] for c in report["deploy"]["choices"] if c["file"]]
    int8 = [a["path"] for a in report["artifacts"] if a["precision"] == "int8"]
    assert args[1:args.index("--data")] == (chosen or int8[:1]) and args[args.index("--baseline") + 1] == "report.json"
    assert args[args.index("--max-fn-increase") + 1] == "2"  # the run's own budget, not verify's default 0
    monkeypatch.chdir(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--json", str(out.parent / "verify.json"), "--quiet"])
    assert exc.value.code in (0, 1), capsys.readouterr().err
    result = json.loads((out.parent / "verify.json").read_text())
    assert result["data"]["rows_sha256"] == report["data"]["test_rows_sha256"]


def test_report_json_is_written_first_and_an_error_leaves_no_document(pi4_run, tmp_path, monkeypatch):
    """report.json marks a run finished: a kill -9 between report.md and report.json left "Gate: PASSED" in a run that was
    not (an interruption reviewer's finding). It is written first now; an error after it removes all it wrote."""
    import shutil

    from toolchain.report import run_report

    _, out, _, _ = pi4_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    report = json.loads((run / "report.json").read_text())
    for name in ("report.json", "report.md", "report.html"):
        (run / name).unlink()
    order = []
    real = run_report.atomic_write_text

    def writing(path, text):
        order.append(Path(path).name)
        if Path(path).name == "report.md":
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(run_report, "atomic_write_text", writing)
    with pytest.raises(OSError):
        run_report.write_run_report(report, run)
    assert order == ["report.json", "report.md"]
    assert not any((run / name).exists() for name in ("report.json", "report.md", "report.html"))


def test_the_report_says_each_session_s_processes_and_threads_where_a_resume_changed_them():
    from toolchain.run_identity import by_session
    from toolchain.report.markdown import _processes_said

    assert by_session("threads", [2, 2], 2) == {"threads": 2}
    training = {**by_session("processes", [1], 1), **by_session("threads", [1], 2)}
    assert training == {"processes": 1, "threads": 2, "threads_by_session": [1, 2]}  # report.json said 2 alone
    assert _processes_said(training) == (" with 1, then 2 thread(s) a process (resumed on another number: the last digits can "
                                         "differ from an uninterrupted run's)")
    assert _processes_said({**by_session("processes", [], 2), "threads": 4}).startswith(" on 2 torchrun processes")
