"""The limits a container, a CI runner or a shared server sets on a process (memory, threads): a step that meets one
says so in one line and exits 2, not 3 (a bug in cwtool) nor 1 (the gate-failed code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clirun import run_cli

REPO = Path(__file__).resolve().parents[1]


def _raising(exc):
    def raise_it(*args, **kwargs):
        raise exc
    return raise_it


def _torch_that_cannot_map():
    exc = ImportError("libtorch_cpu.so: failed to map segment from shared object")
    exc.name = "torch._C"
    return exc


@pytest.mark.parametrize("exc, words", [
    (MemoryError(), "ran out of memory (MemoryError): this process may use less memory than this step needs: raise its limit"),
    (MemoryError("Unable to allocate 3.64 EiB for an array with shape (1000000000000, 1000000)"),
     "ran out of memory (MemoryError: Unable to allocate 3.64 EiB for an array"),  # the size said: absurd is visible
    (RuntimeError("/onnxruntime/core/platform/posix/env.cc:327 PosixThread: pthread_create failed, error code: 11"),
     "could not start a thread (RuntimeError: "),
    (RuntimeError("can't start new thread"), "raise the limit (ulimit -u, the container's pids limit), or set OMP_NUM_THREADS=1"),
    (_torch_that_cannot_map(), "torch==2.13.0 is installed but does not import here (ImportError: libtorch_cpu.so: failed to map "
                               "segment from shared object): this process may not have the memory to load it"),
])
def test_a_step_that_meets_the_process_s_limits_is_exit_2_not_a_bug(exc, words, capsys, monkeypatch, tmp_path):
    """Under ulimit -v or -u: MemoryError, onnxruntime's and Python's "cannot start a thread", torch's shared library that
    cannot be mapped ended in "internal error ... a bug in cwtool" (exit 3), a resource-limits reviewer's findings."""
    monkeypatch.setattr("toolchain.input_paths.input_paths", _raising(exc))
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("cwtool: error: ") and words in err, err
    assert "a bug in cwtool" not in err


@pytest.mark.parametrize("exc", [RuntimeError("made up"), ImportError("cannot import name 'x' from 'toolchain.y'", name="toolchain.y"),
                                 ImportError("cannot import name 'StrEnum' from 'enum'", name="enum"),  # "pip install enum"
                                 ImportError("cannot import name 'trapz' from 'numpy'", name="numpy"),  # a version mismatch
                                 ImportError("libfoo.so: failed to map segment from shared object", name="enum")])
def test_other_failures_stay_bugs(exc, capsys, monkeypatch, tmp_path):
    """A name a module lacks is a version mismatch or cwtool's bug, and the standard library is no package to reinstall
    (the regression reviewer's: "enum is installed but does not import here ... pip install enum")."""
    monkeypatch.setattr("toolchain.input_paths.input_paths", _raising(exc))
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "-d", "digits", "-p", "3"], capsys)
    assert code == 3 and "a bug in cwtool" in err, err


def test_no_thread_for_the_stop_watcher_is_one_line_not_a_traceback():
    """ulimit -u 1: every command printed a traceback from the signal watcher's thread and exited 1, the gate-failed code."""
    script = ("import threading, toolchain.cli as cli\n"
              "def refuse(self): raise RuntimeError(\"can't start new thread\")\n"
              "threading.Thread.start = refuse\n"
              "cli.entry()\n")
    proc = subprocess.run([sys.executable, "-c", script, "targets"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "cwtool: error: could not start a thread (RuntimeError: can't start new thread): this process or user may run fewer "
        "threads than cwtool's libraries start: raise the limit (ulimit -u, the container's pids limit), or set OMP_NUM_THREADS=1"]


def test_a_scikit_learn_that_does_not_load_is_not_said_missing(monkeypatch, capsys, tmp_path):
    """--data digits said scikit-learn "is not installed" where it was, and could not map its shared libraries (ulimit -v)."""
    import builtins

    real = builtins.__import__

    def sklearn_that_cannot_map(name, *args, **kwargs):
        if name == "sklearn":
            exc = ImportError("libscipy_openblas.so: failed to map segment from shared object")
            exc.name = "scipy.linalg._fblas"
            raise exc
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", sklearn_that_cannot_map)
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "scikit-learn is installed but does not import here" in err and "not installed" not in err, err
    assert "this process may not have the memory to load it" in err


def test_an_onnx_session_without_threads_names_the_limit_not_the_file(tmp_path, monkeypatch):
    """bench --threads 4 under ulimit -u: the file was said to need re-exporting, the runtime's reason cut off."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from toolchain.errors import UserError
    from toolchain.runtimes.onnx import OnnxRunner

    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    monkeypatch.setattr(ort, "InferenceSession", _raising(RuntimeError(
        "/onnxruntime/core/platform/posix/env.cc:327 onnxruntime::PosixThread::PosixThread pthread_create failed, error code: 11")))
    with pytest.raises(UserError) as caught:
        OnnxRunner(tmp_path / "m.onnx", threads=4)
    assert "onnxruntime could not start its threads" in str(caught.value) and "pthread_create failed, error code: 11" in str(caught.value)
    assert str(caught.value).endswith("or give --threads 1") and "re-export" not in str(caught.value)


def _green_verify_report(path):
    import json

    path.write_text(json.dumps({"schema_version": 1, "kind": "cwtool-verify", "gate": {"passed": True}}, indent=2))


def test_verify_s_reports_say_a_limit_as_its_exit_code_does(tmp_path, monkeypatch, capsys):
    """A MemoryError in verify exited 2 with the limit's line while its --json and --junit said "internal error" (the
    regression reviewer's)."""
    import json
    import xml.etree.ElementTree as ET

    from test_trust import _endless_onnx

    _endless_onnx(tmp_path / "m.onnx")
    outs = {"--json": tmp_path / "v.json", "--junit": tmp_path / "v.xml"}
    _green_verify_report(outs["--json"])
    outs["--junit"].write_text('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="cwtool verify" tests="1" failures="0" '
                               'errors="0" />\n')  # an earlier run's green reports
    monkeypatch.setattr("toolchain.verify.run_verify", _raising(MemoryError()))
    code, _, err = run_cli(["verify", tmp_path / "m.onnx", "-d", "digits", "-p", "3", *[v for pair in outs.items() for v in pair]], capsys)
    assert code == 2 and "ran out of memory" in err, err
    report = json.loads(outs["--json"].read_text())
    assert report["gate"]["passed"] is False and report["error"].startswith("ran out of memory (MemoryError)"), report
    assert ET.parse(outs["--junit"]).getroot().find(".//error").get("type") == "BadInput"


def test_no_thread_for_the_stop_watcher_replaces_an_earlier_verify_s_report(tmp_path):
    """The watcher's failed start exited 2 with its line and left an earlier run's green --json (the regression reviewer's)."""
    import json

    _green_verify_report(tmp_path / "v.json")
    script = ("import threading, toolchain.cli as cli\n"
              "def refuse(self): raise RuntimeError(\"can't start new thread\")\n"
              "threading.Thread.start = refuse\n"
              "cli.entry()\n")
    proc = subprocess.run([sys.executable, "-c", script, "verify", str(tmp_path / "m.onnx"), "-d", "digits", "-p", "3", "--json",
                           str(tmp_path / "v.json")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "could not start a thread" in proc.stderr, proc.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["gate"]["passed"] is False and report["error"].startswith("could not start a thread"), report


def test_an_onnx_file_too_large_to_read_whole_says_memory_not_a_bug(tmp_path, monkeypatch, capsys):
    """The bytes of an ONNX file under a name the runtime cannot open are read whole; a MemoryError there ended in
    "internal error: UnboundLocalError" (a static-typing reviewer's), hiding the limit."""
    from test_trust import _endless_onnx

    _endless_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr("toolchain.runtimes.onnx.model_source", _raising(MemoryError()))
    code, _, err = run_cli(["verify", tmp_path / "m.onnx", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "ran out of memory" in err and "a bug in cwtool" not in err, err
