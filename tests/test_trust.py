"""Trust (docs/SECURITY.md): a file handed to cwtool runs no code without --trust-model, a checkpoint's
fields are data, good old files still load, console text from files is literal, and interrupts leave
nothing half-written. Each attack tries to create a file; the test fails if it exists afterwards."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clirun import run_cli

from toolchain.models import registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rows(tmp_path):
    """A small digits-shaped .npz (x: N x 1 x 8 x 8, y: 0..9) for evaluate."""
    rng = np.random.default_rng(0)
    path = tmp_path / "rows.npz"
    np.savez(path, x=rng.random((60, 1, 8, 8), dtype=np.float32), y=np.arange(60) % 10)
    return path


def _evaluate(capsys, model, rows, *extra):
    return run_cli(["evaluate", model, "--data", rows, "-p", "3", *extra], capsys)


# --------------------------------------------------------------------------- files that try to run code


def test_a_checkpoint_cannot_name_code_to_run(tmp_path, rows, capsys):
    """Its `arch` is a record, not an instruction: module:callable with kwargs from the same file."""
    marker = tmp_path / "pwned-by-arch"
    model = tmp_path / "evil.pt"
    torch.save({"format": "cwtool.model/1", "arch": "subprocess:getoutput", "arch_kwargs": {"cmd": f"touch {marker}"},
                "input_shape": [1, 8, 8], "channel_plan": {}, "state_dict": {"w": torch.zeros(1)}, "extra": {}}, model)
    code, _, err = _evaluate(capsys, model, rows)
    assert code == 2 and "--trust-model" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()


def test_a_checkpoint_cannot_run_a_file_placed_beside_it(tmp_path, rows, capsys):
    marker = tmp_path / "pwned-by-file"
    (tmp_path / "net.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Net: pass\n")
    model = tmp_path / "evil.pt"
    torch.save({"format": "cwtool.model/1", "arch": "/gone/away/net.py:Net", "arch_kwargs": {},
                "input_shape": [1, 8, 8], "channel_plan": {}, "state_dict": {"w": torch.zeros(1)}, "extra": {}}, model)
    code, _, err = _evaluate(capsys, model, rows)
    assert code == 2 and "--arch path/to/net.py:Net" in err, err
    assert not marker.exists()


class _ExecSource:
    """Pickles as a call to a torch function that executes Python source text."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        import torch.fx.graph_module as gm

        return (gm._exec_with_source, (self.source, {}))


def test_a_pickle_cannot_call_torch_functions_that_execute_source(tmp_path, rows, capsys):
    marker = tmp_path / "pwned-by-pickle"
    model = tmp_path / "evil.pt"
    torch.save({"state_dict": _ExecSource(f"import pathlib; pathlib.Path({str(marker)!r}).touch()")}, model)
    for extra in ([], ["--arch", "digits-cnn"]):  # naming an architecture widens nothing beyond its own classes
        code, _, err = _evaluate(capsys, model, rows, *extra)
        assert code == 2 and "_exec_with_source" in err and "--trust-model" in err, err
        assert not marker.exists()


def test_torchscript_runs_only_with_trust_model(tmp_path, rows, capsys):
    marker = tmp_path / "pwned-by-torchscript"
    source = tmp_path / "scripted.py"
    source.write_text(textwrap.dedent(f"""
        import torch

        class M(torch.nn.Module):
            def forward(self, x):
                t = torch.from_file({str(marker)!r}, shared=True, size=1, dtype=torch.uint8)
                return x.flatten(1)[:, :10] + t.sum().float()

        torch.jit.script(M()).save({str(tmp_path / 'ts.pt')!r})
    """))
    subprocess.run([sys.executable, str(source)], check=True, capture_output=True)
    code, _, err = _evaluate(capsys, tmp_path / "ts.pt", rows)
    assert code == 2 and "TorchScript" in err and "--trust-model" in err, err
    assert not marker.exists()
    code, _, err = _evaluate(capsys, tmp_path / "ts.pt", rows, "--trust-model")
    assert code == 0, err
    assert marker.exists()  # what the archive does once trusted: why it needs the flag
    code, _, err = run_cli(["export", tmp_path / "ts.pt", "--data", rows, "-p", "1", "--trust-model", "--format", "onnx",
                            "--precision", "fp32", "--out", tmp_path / "ex"], capsys)
    assert code == 2 and "TorchScript archive carries a compiled program" in err and "TFLite" not in err, err  # not asked for


# --------------------------------------------------------------------------- good files that must load


def test_a_legacy_format_state_dict_with_gpu_storages_loads_on_cpu(tmp_path, rows, capsys):
    import torch.serialization as ser

    from toolchain.models import registry
    from toolchain.models.loading import load_model

    torch.manual_seed(0)
    model = registry.create("digits-cnn")
    path = tmp_path / "legacy.pt"
    real_tag = ser.location_tag
    ser.location_tag = lambda storage: "cuda:0"  # as saved on a GPU machine
    try:
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    finally:
        ser.location_tag = real_tag
    assert b"cuda:0" in path.read_bytes() and not path.read_bytes().startswith(b"PK")
    loaded = load_model(path, arch="digits-cnn")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)
    code, _, err = _evaluate(capsys, path, rows, "--arch", "digits-cnn")
    assert code == 0, err


@pytest.mark.parametrize("name", registry.names())  # a new built-in is covered without a list to edit
def test_a_pickled_builtin_model_loads_with_its_arch(tmp_path, name):
    """The allow-list is narrow, not useless: torch.nn layers plus the --arch module's own classes."""
    from toolchain.models import registry
    from toolchain.models.loading import load_model

    model = registry.create(name)
    torch.save(model, tmp_path / "whole.pt")
    loaded = load_model(tmp_path / "whole.pt", arch=name)
    assert loaded.kind == "pickle" and type(loaded.module) is type(model)


def test_a_legacy_whole_module_pickle_is_refused_with_a_way_out(tmp_path, rows, capsys):
    from toolchain.models import registry

    torch.save(registry.create("digits-cnn"), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    code, _, err = _evaluate(capsys, tmp_path / "old.pt", rows, "--arch", "digits-cnn")
    assert code == 2 and "legacy" in err and "state_dict" in err, err


def test_trusted_pickle_of_a_class_from_a_missing_module_suggests_arch(tmp_path, rows, capsys):
    (tmp_path / "mynet.py").write_text("import torch\nclass MyNet(torch.nn.Module):\n"
                                       "    def __init__(self):\n        super().__init__(); self.fc = torch.nn.Linear(64, 10)\n"
                                       "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    subprocess.run([sys.executable, "-c", "import torch, mynet; torch.save(mynet.MyNet(), 'whole.pt')"], cwd=tmp_path, check=True)
    code, _, err = _evaluate(capsys, tmp_path / "whole.pt", rows, "--trust-model")
    assert code == 2 and "--arch path/to/mynet.py:ClassName" in err, err
    code, _, err = _evaluate(capsys, tmp_path / "whole.pt", rows, "--arch", f"{tmp_path / 'mynet.py'}:MyNet")
    assert code == 0, err  # the user's own file names the class: no trust needed


# --------------------------------------------------------------------------- damaged checkpoints


def _checkpoint(**changes):
    from toolchain.models import registry

    torch.manual_seed(0)
    model = registry.create("digits-cnn")
    payload = {"format": "cwtool.model/1", "arch": "digits-cnn", "arch_kwargs": {}, "input_shape": [1, 8, 8],
               "channel_plan": {}, "state_dict": model.state_dict(), "extra": {}}
    for key, value in changes.items():
        if value is KeyError:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


DAMAGED = {
    "no state_dict": dict(state_dict=KeyError),
    "state_dict of strings": dict(state_dict={"a": "b"}),
    "arch is a number": dict(arch=7),
    "kwargs not an object": dict(arch_kwargs=[1, 2]),
    "kwargs with an object": dict(arch_kwargs={"width": torch.zeros(1)}),
    "absurd input shape": dict(input_shape=[1, 10**7, 10**7]),
    "negative input shape": dict(input_shape=[1, -8, 8]),
    "plan of strings": dict(channel_plan={"features.0": ["a"]}),
    "plan for a layer that does not exist": dict(channel_plan={"nowhere": [0, 1]}),
    "plan of another architecture": dict(arch="mlp", channel_plan={"features.0": [0, 1]}),  # the mlp's traced forward raised AttributeError
    "absurd width": dict(arch_kwargs={"num_classes": 10**12}),
    "kwargs the arch does not take": dict(arch_kwargs={"evil": 1}),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_checkpoint_is_bad_input(case, tmp_path, rows, capsys):
    torch.save(_checkpoint(**DAMAGED[case]), tmp_path / "bad.pt")
    code, _, err = _evaluate(capsys, tmp_path / "bad.pt", rows)
    assert code == 2 and err.startswith("cwtool: error: ") and len(err.strip().splitlines()) == 1, (case, err)


def test_a_zip_checkpoint_that_unpacks_beyond_memory_is_refused(tmp_path, rows, capsys, monkeypatch):
    """A compressed member can declare far more than the file holds: compared with the memory left
    (made small here, so the test needs no giant file) before torch reads it."""
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", bytes(64 << 20))  # 64 MiB of zeros, ~64 KiB on disk
    assert path.stat().st_size < 1 << 20
    monkeypatch.setattr("toolchain.limits.available_memory", lambda: (32 << 20, "a limit set by this test"))
    code, _, err = _evaluate(capsys, path, rows)
    assert code == 2 and "memory" in err, err


# --------------------------------------------------------------------------- text from files is literal


def test_class_names_that_look_like_markup_print_as_themselves(tmp_path, capsys):
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    names = np.array(["[/x]", "[bold]b", "c", "d", "e", "f", "g", "h", "i", "[link=file:///etc]j"])
    rng = np.random.default_rng(0)
    data = tmp_path / "rows.npz"
    np.savez(data, x=rng.random((40, 1, 8, 8), dtype=np.float32), y=np.arange(40) % 10, class_names=names)
    save_checkpoint(tmp_path / "m.pt", registry.create("digits-cnn"), "digits-cnn", {}, (1, 8, 8))
    code, out, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", data, "-p", "[/x]"], capsys)
    assert code == 0, err
    assert "[/x]" in out and "[bold]b" in out


def test_a_profile_description_that_looks_like_markup_prints_as_itself(tmp_path, capsys):
    text = (REPO / "targets" / "raspberry-pi-4.toml").read_text()
    lines = ['description = "a [/x] board [bold]"' if line.startswith("description") else line for line in text.splitlines()]
    (tmp_path / "mine.toml").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(["targets", tmp_path / "mine.toml"], capsys)
    assert code == 0, err
    assert "a [/x] board [bold]" in out


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("args", [
    ["compress", "m.pt", "-d", "digits", "-p", "3", "--gamma", "nan"],
    ["compress", "m.pt", "-d", "digits", "-p", "3", "--lr", "inf"],
    ["compress", "m.pt", "-d", "digits", "-p", "3", "--max-accuracy-drop", "-inf"],
    ["train", "--arch", "mlp", "-d", "digits", "--out", "m.pt", "--lr", "nan"],
    ["verify", "a.onnx", "-d", "digits", "-p", "3", "--max-fnr", "nan"],
    ["verify", "a.onnx", "-d", "digits", "-p", "3", "--threads", "1000000"],
    ["verify", "a.onnx", "-d", "digits", "-p", "3", "--threads", "0"],
])
def test_non_finite_floats_and_absurd_threads_are_refused(args, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "finite" in err or "--threads" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, said", [
    (["train", "--arch", "mlp", "-d", "digits", "--out", "m.pt", "--lr", "1e308"], "--lr must be > 0 and at most 10"),
    (["train", "--arch", "mlp", "-d", "digits", "--out", "m.pt", "--epochs", "99999999999999999999"], "at most 100,000"),
    (["compress", "m.pt", "-d", "digits", "-p", "3", "--lr", "1e39"], "--lr must be at most 10"),
])
def test_a_learning_rate_or_epochs_beyond_reason_are_refused(args, said, capsys, monkeypatch, tmp_path):
    """--lr 1e308 overflowed inside Adam's step (exit 3); --epochs 1e20 ran, promising a finish in 10**15 hours."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and said in err, err
    assert not any(tmp_path.iterdir())


def test_training_that_diverges_says_so_and_names_the_learning_rate(monkeypatch):
    from toolchain.errors import UserError
    from toolchain.models.train import TrainConfig, train

    model = torch.nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    with pytest.raises(UserError, match=r"training diverged in epoch 1: .* lower --lr \(the peak --lr was 0.001\)"):
        train(model, np.zeros((8, 4), np.float32), np.array([0, 1] * 4), TrainConfig(epochs=2, lr=1e-3, batch_size=4), device=torch.device("cpu"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_that_diverges_under_bf16_names_fp32_training_as_a_way_out(precision):
    """MobileNetV3 and ShuffleNetV2 diverged on digits under bf16 autocast and the line named only --lr."""
    from toolchain.errors import UserError
    from toolchain.models.train import TrainConfig, train

    model = torch.nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    with pytest.raises(UserError) as caught:
        train(model, np.zeros((8, 4), np.float32), np.array([0, 1] * 4),
              TrainConfig(epochs=1, lr=1e-3, batch_size=4, precision=precision), device=torch.device("cpu"))
    assert ("--train-precision fp32" in str(caught.value)) == (precision == "bf16"), caught.value


# --------------------------------------------------------------------------- interrupts and a light install


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    """A real SIGTERM while a staged file is half-written: no temporary file stays (the output, if the write
    finished first, is whole), exit 143, one line that says so."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import toolchain.io as io
        real = io.publish

        def publish(tmp, path):
            os.kill(os.getpid(), signal.SIGTERM)  # arrives with the temporary file on disk
            real(tmp, path)

        io.publish = publish
        from toolchain.cli import main
        main(["targets", "--json", {str(tmp_path / 'out' / 'targets.json')!r}])
    """)
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    left = list((tmp_path / "out").iterdir())
    if "SIGTERM arrived as the command finished" in proc.stderr:
        assert left == [tmp_path / "out" / "targets.json"]
    else:
        assert "interrupted by SIGTERM" in proc.stderr
    assert left in ([], [tmp_path / "out" / "targets.json"])
    if left:
        assert json.loads(left[0].read_text())  # whole, never half-written


def _stuck_in_native_code(setup: str) -> str:
    """A script whose command runs ``setup``, then sends itself SIGTERM and blocks where no Python handler runs: the
    watcher's grace path (shortened to 0.5 s) must end it."""
    return textwrap.dedent("""
        import os, signal, threading
        import toolchain.cli as cli
        from toolchain import interrupts
        interrupts.GRACE_SECONDS = 0.5

        def stuck(argv):
    """) + textwrap.indent(textwrap.dedent(setup).strip(), "    ") + textwrap.dedent("""

            os.kill(os.getpid(), signal.SIGTERM)
            lock = threading.Lock()
            lock.acquire()
            lock.acquire()  # blocks in native code

        cli._main = stuck
        cli.main([])
    """)


def test_a_stop_that_finds_compress_stuck_in_native_code_still_names_the_run_to_resume(tmp_path):
    """The watcher's grace path (the main thread never comes back, e.g. inside an exporter's native call) exits on its
    own: its line names the run that --resume finishes, as the usual path's does."""
    script = _stuck_in_native_code(f"interrupts.resumable({str(tmp_path / 'run')!r})")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("cwtool: interrupted by SIGTERM") and "--resume" in line and str(tmp_path / "run") in line, line
    assert "no round had finished" in line, line  # it said "the finished rounds are kept" of none


def test_a_stop_that_finds_a_converter_stuck_with_its_logs_redirected_still_says_its_line_and_cleans_up(tmp_path):
    """A converter runs with fd 1/2 sent to a log (quiet_native): the grace path's one line goes to the user's stderr,
    not into that log, and the staged file and staging folder go with it (a SIGTERM during TFLite conversion ended
    with exit 143, no line, and a .cwtool-tmp file and folder left behind)."""
    staged_file, staged_folder = tmp_path / ".cwtool-tmp.model.x.tflite", tmp_path / ".cwtool-tmp.out.1.x"
    script = _stuck_in_native_code(f"""
        open({str(staged_file)!r}, "w").close()
        os.mkdir({str(staged_folder)!r})
        open(os.path.join({str(staged_folder)!r}, "model.onnx"), "w").close()
        interrupts.staged({str(staged_file)!r})
        interrupts.staged({str(staged_folder)!r})
        from toolchain.export.tflite import quiet_native
        quiet = quiet_native()
        quiet.__enter__()
        print("converter chatter")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().startswith("cwtool: interrupted by SIGTERM"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "chatter" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_swallowed_stop_the_main_thread_took_first_still_ends_the_command_after_the_grace_period(tmp_path):
    """A SIGTERM taken by a thread that does not block it (a converter's) reaches the main thread's handler without the
    watcher; its Interrupted, swallowed inside the converter's tracing, left the command running to its end (a reviewer:
    6.8 s after the signal, the reports written, then "arrived as the command finished"). The watcher's grace period now
    applies to it too: the staged files go, one line, exit 143."""
    staged = tmp_path / "staged.tmp"
    script = textwrap.dedent(f"""
        import signal, sys, time
        import toolchain.cli as cli
        from toolchain import interrupts
        from toolchain.errors import Interrupted

        def swallowing(argv):
            open({str(staged)!r}, "w").close()
            interrupts.staged({str(staged)!r})
            try:
                cli._state["watcher"].deliver(signal.SIGTERM)  # what the handler does for a signal the watcher never saw
            except Interrupted:
                pass  # swallowed, as inside a weakref callback
            started = time.monotonic()
            while time.monotonic() - started < 30:
                pass
            print("ran to its end")
            sys.exit(0)

        cli._main = swallowing
        cli.main([])
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143 and time.monotonic() - started < 25, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == ["cwtool: interrupted by SIGTERM; temporary files removed"], proc.stderr
    assert "ran to its end" not in proc.stdout and not staged.exists()


def test_a_stop_waits_for_a_native_import_then_ends_the_command(tmp_path):
    """A SIGTERM as LiteRT's first import began (compress's TFLite export) was raised inside TensorFlow's initialisation:
    exit 134 with no line, or an ImportError said as "reinstall it" (an interruption reviewer's finding). The stop now
    waits for the import, then ends the command as anywhere else."""
    script = textwrap.dedent("""
        import os, signal, sys, time
        import toolchain.cli as cli
        from toolchain import interrupts

        def importing(argv):
            with interrupts.uninterrupted_import():
                os.kill(os.getpid(), signal.SIGTERM)
                started = time.monotonic()
                while time.monotonic() - started < 1.0:  # the import's own Python code: no stop may arise in it
                    pass
                print("import finished", flush=True)
            started = time.monotonic()
            while time.monotonic() - started < 20:
                pass
            print("ran to its end")

        cli._main = importing
        cli.main([])
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143 and time.monotonic() - started < 15, proc.stdout + proc.stderr
    assert "import finished" in proc.stdout and "ran to its end" not in proc.stdout, proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("cwtool: interrupted by SIGTERM"), proc.stderr


def _swallowing_a_sigterm(then: str) -> str:
    """A script whose command swallows the Interrupted of its own SIGTERM (as a converter's tracing does), then runs
    the lines ``then``."""
    return textwrap.dedent("""
        import os, signal, sys
        import toolchain.cli as cli
        from toolchain.errors import Interrupted

        def swallowing(argv):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10**6):
                    pass
            except Interrupted:
                pass
    """) + textwrap.indent(textwrap.dedent(then).strip("\n"), "    ") + "\n" + textwrap.dedent("""
        cli._main = swallowing
        cli.main([])
    """)


def test_nothing_is_published_after_a_stop_that_code_swallowed(tmp_path):
    """A SIGTERM early in the int8 TFLite conversion was swallowed there: compress went on to write the file, time all
    four and write the reports, then said the stop "arrived as the command finished". The stop now ends the command at
    the next file it would publish, and that file is not written."""
    out = tmp_path / "after.json"
    script = _swallowing_a_sigterm(f"""
            from toolchain.io import atomic_write_text
            atomic_write_text({str(out)!r}, "written after the stop")
            print("ran to its end")
            sys.exit(0)""")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == ["cwtool: interrupted by SIGTERM; temporary files removed"], proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [] and "ran to its end" not in proc.stdout


@pytest.mark.parametrize("ends_with, completed", [(0, True), (1, True), (2, False)])
def test_a_stop_that_code_swallowed_is_told_at_the_end_as_whether_the_output_is_complete(ends_with, completed):
    """A converter's tracing swallows the Interrupted a SIGTERM raised and the command runs to its end: the caller
    still hears of the stop (exit 143), and the line says the output is complete rather than "temporary files
    removed" beside a finished export; a command that ended in an error says the usual line."""
    script = _swallowing_a_sigterm(f"""
            print("written: out")
            sys.exit({ends_with})""")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    if completed:
        assert lines[0] == "cwtool: SIGTERM arrived as the command finished: what it wrote is complete"
    else:
        assert lines[0] == "cwtool: interrupted by SIGTERM; temporary files removed"


def _signals_as_a_foreground_shell_leaves_them() -> None:
    """A child's SIGINT and SIGHUP as an interactive shell's foreground job gets them: a suite started in the background
    (`pytest &` in a script, nohup) passes them on ignored, and cwtool keeps a stop its process was started to ignore."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_a_background_job_of_a_script_keeps_ignoring_ctrl_c(tmp_path, rows):
    """A script's `cwtool ... &` is started with SIGINT ignored (the shell keeps a Ctrl-C meant for the foreground away
    from it), as Python leaves it: cwtool took SIGINT back and stopped the job. SIGTERM still stops it."""
    _endless_onnx(tmp_path / "endless.onnx")

    def background_job():
        _signals_as_a_foreground_shell_leaves_them()
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "toolchain", "verify", str(tmp_path / "endless.onnx"), "--data", str(rows), "-p", "3"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True, preexec_fn=background_job)
    err = _ignored_then_stopped(proc, signal.SIGINT)
    assert err.strip().splitlines() == ["cwtool: interrupted by SIGTERM; temporary files removed"], err


def _ignored_then_stopped(proc, ignored: int) -> str:
    """Sends ``proc`` the signal it was started to ignore once its runtime runs, checks it goes on, then stops it with
    SIGTERM; its stderr."""
    _running_its_runtime(proc)
    proc.send_signal(ignored)
    time.sleep(1)
    assert proc.poll() is None  # still running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    return err


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_as_the_process_exits_after_the_command_says_the_output_is_complete(sig, code):
    """After main returned, the interpreter's teardown (1-2 s of torch's and TensorFlow's) ran with the default handlers:
    a stop then killed the process with no line. The entry now leaves at once, and a stop while it flushes says so."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import toolchain.cli as cli

        class Stopped:  # stdout whose flush at the exit meets a stop
            def write(self, text):
                return len(text)
            def flush(self):
                os.kill(os.getpid(), signal.{sig})

        def finished(argv=None):  # as main ends: its work done, its handlers given back
            sys.stdout = Stopped()
            cli._state["ended"] = True
            sys.exit(0)

        cli.main = finished
        cli.entry()
        print("entry returned", file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                          preexec_fn=_signals_as_a_foreground_shell_leaves_them)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"cwtool: {sig} arrived as the command finished: what it wrote is complete"]


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_while_compress_prints_its_summary_says_the_run_is_complete(sig, code, tmp_path):
    """A stop after the run's report was written, while the summary printed, said "interrupted; temporary files removed"
    and named no run (a reviewer: 3 of 3 runs): the run directory was whole. It now says so, and where."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        import toolchain.cli as cli
        import toolchain.cli.compress as command
        import toolchain.pipeline as pipeline

        run = Path({str(tmp_path / "run")!r})
        pipeline.compress = lambda request, config, export=None: ({{"gate": {{"passed": True}}}}, run)

        def summary(report, run_dir):  # the stop meets the summary half-printed (Python code runs: it is raised there)
            os.kill(os.getpid(), signal.{sig})
            for _ in range(2000):
                time.sleep(0.01)

        command.print_summary = summary
        cli.main(["compress", {str(tmp_path / "m.pt")!r}, "--data", "digits", "-p", "3", "--out", str(run)])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
                          preexec_fn=_signals_as_a_foreground_shell_leaves_them)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"cwtool: {sig} arrived as the command finished: what it wrote is complete "
                                                    f"(run directory: {tmp_path / 'run'})"), proc.stderr


def test_a_stop_outside_mains_own_handlers_never_kills_the_process_silently():
    """main gives its handlers back as it ends: a SIGTERM between that and the entry's own (a reviewer: 1 of 100 runs)
    killed the process with no line. The entry's handlers now stand before and after main's."""
    script = textwrap.dedent("""
        import os, signal, time
        import toolchain.cli as cli

        def stopped_before_its_handlers(argv=None):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

        cli.main = stopped_before_its_handlers
        cli.entry()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["cwtool: interrupted by SIGTERM; temporary files removed"], proc.stderr


def test_the_entry_exits_with_the_commands_code_and_its_whole_output(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "toolchain", "targets", "--json", str(tmp_path / "t.json")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "raspberry-pi-4" in proc.stdout and "x86-edge" in proc.stdout, proc.stderr  # the last row too
    assert json.loads((tmp_path / "t.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "toolchain", "targets", "no-such-board"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("cwtool: error: unknown target"), proc.stderr


def test_a_command_gives_the_warning_filters_back_as_it_found_them(tmp_path, capsys):
    """The CLI silences library warnings while it runs and restores the filters after: dropping Python's default
    filters instead let a ResourceWarning from an import a SIGTERM interrupted reach stderr beside the one line."""
    import warnings

    before = list(warnings.filters)
    code, _, err = run_cli(["targets", "--json", tmp_path / "t.json"], capsys)
    assert code == 0, err
    assert warnings.filters == before


def test_an_interrupted_compress_names_its_run_for_resume(trained_digits, tmp_path, capsys, monkeypatch):
    from toolchain.errors import Interrupted

    def interrupt(*args, **kwargs):
        raise Interrupted("SIGINT")

    monkeypatch.setattr("toolchain.prune.lottery.LotteryPruner.run", interrupt)
    out = tmp_path / "run"
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--out", out, "--epochs", "1"], capsys)
    assert code == 130 and "--resume" in err and str(out) in err, err
    assert (out / "manifest.json").is_file()


def test_resume_sweeps_what_a_killed_run_left(tmp_path):
    from toolchain.io import TMP_PREFIX, atomic_write_text, sweep_temporaries

    (tmp_path / "artifacts").mkdir()
    stale = tmp_path / "artifacts" / f"{TMP_PREFIX}model_int8.abc.onnx"
    stale.write_bytes(b"")
    atomic_write_text(tmp_path / "report.md", "kept")
    assert sweep_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["artifacts", "report.md"]


def test_a_light_install_gets_an_install_hint_not_a_crash(tmp_path):
    """Without torch (a device install), a torch command says what to install: exit 2, one line."""
    np.savez(tmp_path / "rows.npz", x=np.zeros((20, 4), np.float32), y=np.arange(20) % 2)
    script = ("import sys; sys.modules['torch'] = None; from toolchain.cli import main; "
              f"main(['evaluate', 'm.pt', '--data', {str(tmp_path / 'rows.npz')!r}, '-p', '1'])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "torch==2.13.0" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --------------------------------------------------------------------------- found by an adversarial review


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_a_pickle_cannot_call_a_layer_constructor_or_allocate_at_will(tmp_path, rows, capsys):
    """A model file stores objects; a constructor call with the file's arguments (a 1 GB layer from 1 KB)
    is refused, and whatever torch's own allow-list can build is held to a memory cap."""
    torch.save(_Reduce(torch.nn.Linear, (16000, 16000)), tmp_path / "layer.pt")
    torch.save({"state_dict": _Reduce(bytearray, (10**9,))}, tmp_path / "bytes.pt")
    for name in ("layer.pt", "bytes.pt"):
        code, _, err = _evaluate(capsys, tmp_path / name, rows, "--arch", "digits-cnn")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert (tmp_path / name).stat().st_size < 4096


def test_a_pickled_module_cannot_replace_its_own_forward(tmp_path, rows, capsys):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model.__dict__["forward"] = torch.nn.Identity()
    torch.save(model, tmp_path / "forward.pt")
    code, _, err = _evaluate(capsys, tmp_path / "forward.pt", rows, "--arch", "digits-cnn")
    assert code == 2 and "replaced by the file" in err, err


def test_a_model_that_fails_on_the_rows_is_bad_input(tmp_path, rows, capsys):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Unflatten(0, (2, 1)), torch.nn.Flatten(0, 1))
    torch.save(model, tmp_path / "batch2.pt")
    code, _, err = _evaluate(capsys, tmp_path / "batch2.pt", rows, "--arch", "digits-cnn")
    assert code == 2 and "fails on the data's rows" in err, err


def test_control_characters_from_files_never_reach_the_terminal(tmp_path, capsys):
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    names = np.array(["a\x1b[2K\x1b[1Gall checks passed", "b\u202edeliaf", *"cdefghij"])  # U+202E: shown reversed
    data = tmp_path / "rows.npz"
    np.savez(data, x=np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32), y=np.arange(40) % 10, class_names=names)
    save_checkpoint(tmp_path / "m.pt", registry.create("digits-cnn"), "digits-cnn", {}, (1, 8, 8))
    code, out, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", data, "-p", "0"], capsys)
    assert code == 0, err
    assert "\x1b" not in out + err and "\\x1b[2K" in out
    assert "\u202e" not in out + err and "b\\u202edeliaf" in out
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", data, "-p", "0", "--json", tmp_path / "e\u202enosj.json"], capsys)
    assert code == 2 and "\u202e" not in err and "(\\u202e)" in err, err  # refused as an output's name too


def test_debug_keeps_the_exit_codes(tmp_path, capsys):
    code, _, err = run_cli(["--debug", "verify", tmp_path / "none.onnx", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "Traceback" in err


@pytest.mark.parametrize("args, word", [
    (["evaluate", "m.pt", "-d", "digits", "-p", "3", "--seed", "-1"], "--seed"),
    (["compress", "m.pt", "-d", "digits", "-p", "3", "--device", "meta"], "--device"),
    (["verify", "a.onnx", "-d", "~no-such-user-here/x.npz", "-p", "3"], "~"),
])
def test_odd_flag_values_are_bad_input(args, word, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and word in err and len(err.strip().splitlines()) == 1, err


def test_a_baseline_with_nan_or_infinity_is_malformed(tmp_path, capsys):
    from toolchain.verify import load_baseline

    (tmp_path / "b.json").write_text('{"n": 10, "accuracy": NaN, "protected": [], "fn_per_class": [0, 0]}')
    with pytest.raises(Exception, match="NaN"):
        load_baseline(tmp_path / "b.json")


def test_a_profile_with_non_finite_or_negative_numbers_is_refused(tmp_path, capsys):
    text = (REPO / "targets" / "raspberry-pi-4.toml").read_text()
    for old, new in (("overhead_ms = 0.05", "overhead_ms = nan"), ("overhead_ms = 0.05", "overhead_ms = -1.0"),
                     ("fp32_gmacs = 12.0", "fp32_gmacs = inf")):
        (tmp_path / "t.toml").write_text(text.replace(old, new, 1))
        code, _, err = run_cli(["targets", tmp_path / "t.toml"], capsys)
        assert code == 2 and "t.toml" in err, (new, err)


@pytest.mark.parametrize("damage", [b"not a checkpoint", b""])
def test_a_damaged_round_on_resume_is_bad_input(trained_digits, tmp_path, capsys, damage):
    """An empty checkpoint (torch.load's EOFError, which click turns into its Abort) was reported as Ctrl-C, exit 130."""
    out = tmp_path / "run"
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.25", "--epochs", "1", "--confidence", "0.5",
            "--max-accuracy-drop", "1", "--skip-export", "--out", out]
    code, _, err = run_cli(args, capsys)
    assert code in (0, 1), err
    (out / "rounds" / "round_1.pt").write_bytes(damage)
    code, _, err = run_cli([*args, "--resume"], capsys)
    last = err.strip().splitlines()[-1]  # found once the run had started: the log lines before it are progress
    assert code == 2 and last.startswith("cwtool: error: ") and "damaged round" in last, err


@pytest.mark.parametrize("field, value, refused", [
    ("multipliers", {"3": 10**400}, True),  # float() of it overflows: had been an internal error, exit 3
    ("multipliers", {}, True),  # the run saves one per protected class: none is not the run's state
    ("seconds", {"retrain": 10**400}, False),  # timings are for the report only: dropped, the resume goes on
])
def test_a_round_summary_with_out_of_range_numbers_is_a_damaged_round(trained_digits, tmp_path, capsys, field, value, refused):
    import json

    out = tmp_path / "run"
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.25", "--epochs", "1", "--confidence", "0.5",
            "--max-accuracy-drop", "1", "--skip-export", "--out", out]
    code, _, err = run_cli(args, capsys)
    assert code in (0, 1), err
    summary = out / "rounds" / "round_1.json"
    record = json.loads(summary.read_text())
    record[field] = value
    summary.write_text(json.dumps(record))
    code, _, err = run_cli([*args, "--resume"], capsys)
    last = err.strip().splitlines()[-1]
    if refused:
        assert code == 2 and last.startswith("cwtool: error: ") and "damaged round" in last, err
    else:
        assert code in (0, 1), err


def _endless_onnx(path) -> None:
    """A classifier that runs for many minutes: 400 MatMuls of 2048 x 2048 a row (a Loop of 10**15 steps, which never
    returned, is refused before it runs now; a long call of plain operators is what a signal must still stop)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 2048)).astype(np.float32) * 0.02, "W0"),
             numpy_helper.from_array(rng.standard_normal((2048, 2048)).astype(np.float32) * 0.02, "W"),
             numpy_helper.from_array(rng.standard_normal((2048, 10)).astype(np.float32) * 0.02, "W1")]
    nodes, h = [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "W0"], ["h0"])], "h0"
    for i in range(400):
        nodes.append(helper.make_node("MatMul", [h, "W"], [f"h{i + 1}"]))
        h = f"h{i + 1}"
    nodes.append(helper.make_node("MatMul", [h, "W1"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _running_its_runtime(proc) -> None:
    """Waits until the verify in ``proc`` has loaded onnxruntime (its code, past the entry's, is running), then a little
    more: a fixed sleep from the start was too short on a loaded machine and too long where the run ends sooner."""
    maps = Path(f"/proc/{proc.pid}/maps")
    if not maps.exists():
        time.sleep(4)
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if "onnxruntime" in maps.read_text():
                break
        except OSError:
            pass
        time.sleep(0.05)
    time.sleep(1.5)


def test_sigterm_stops_a_runtime_that_would_never_return(tmp_path, rows):
    _endless_onnx(tmp_path / "endless.onnx")
    proc = subprocess.Popen([sys.executable, "-m", "toolchain", "verify", str(tmp_path / "endless.onnx"), "--data", str(rows), "-p", "3"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    _running_its_runtime(proc)
    assert proc.poll() is None
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and time.perf_counter() - t0 < 10, err
    assert err.strip().splitlines() == ["cwtool: interrupted by SIGTERM; temporary files removed"], err


def test_sigterm_replaces_an_earlier_run_s_reports(tmp_path, rows):
    """A cancelled CI job's verify left the last run's green --json/--junit for `if: always()` to publish: the replacement
    was written through the stop check that refuses every file after a stop (a raised Interrupted in-process hid it)."""
    import time

    _endless_onnx(tmp_path / "endless.onnx")
    green = {"--json": tmp_path / "v.json", "--junit": tmp_path / "v.xml"}
    green["--json"].write_text(json.dumps({"schema_version": 1, "kind": "cwtool-verify", "gate": {"passed": True}}, indent=2))
    green["--junit"].write_text('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="cwtool verify" tests="1" failures="0" '
                                'errors="0" />\n')  # an earlier run's green reports
    proc = subprocess.Popen([sys.executable, "-m", "toolchain", "verify", str(tmp_path / "endless.onnx"), "--data", str(rows), "-p", "3",
                             *[str(v) for pair in green.items() for v in pair]], cwd=REPO, stderr=subprocess.PIPE, text=True)
    _running_its_runtime(proc)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert json.loads(green["--json"].read_text())["gate"] == {"passed": False, "error": "interrupted by SIGTERM before a verdict"}
    assert 'errors="1"' in green["--junit"].read_text()


def test_a_stop_while_a_runtime_is_stuck_loading_replaces_an_earlier_run_s_reports(tmp_path, rows):
    """onnxruntime building a session for a large model holds the main thread in native code for seconds: a SIGTERM then
    ended the process by the grace path, which left the earlier run's green --json and --junit (1 in 2 suite runs on a
    loaded machine). The grace path now writes the stop's reports, rendered ahead by verify."""
    _endless_onnx(tmp_path / "m.onnx")
    green = {"--json": tmp_path / "v.json", "--junit": tmp_path / "v.xml"}
    (tmp_path / "reports").mkdir()  # --json a link the user made: written through, as verify writes it (the reviewer's)
    green["--json"].symlink_to(tmp_path / "reports" / "v.json")
    green["--json"].write_text(json.dumps({"schema_version": 1, "kind": "cwtool-verify", "gate": {"passed": True}}, indent=2))
    green["--junit"].write_text('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="cwtool verify" tests="1" failures="0" '
                                'errors="0" />\n')
    marker = tmp_path / "loading"
    script = textwrap.dedent(f"""
        import signal
        # numpy's OpenBLAS threads start at the import below: blocking the stop signals first, as cwtool's own imports
        # come after its watcher blocks them, keeps a signal from landing in a thread that would hold it for the main one
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT, signal.SIGTERM, signal.SIGHUP}})
        import time
        from pathlib import Path
        import toolchain.cli as cli
        import toolchain.interrupts as interrupts
        from toolchain.runtimes.onnx import OnnxRunner

        interrupts.GRACE_SECONDS = 0.5

        def stuck(self, ort, opts):  # a session that takes its time, out of Python's reach (signals are the watcher's)
            Path({str(marker)!r}).touch()
            time.sleep(60)

        OnnxRunner._session = stuck
        cli.entry()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, "verify", str(tmp_path / "m.onnx"), "--data", str(rows), "-p", "3",
                             *[str(v) for pair in green.items() for v in pair]], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err.strip().splitlines() == ["cwtool: interrupted by SIGTERM; temporary files removed"], err
    assert json.loads(green["--json"].read_text())["gate"] == {"passed": False, "error": "interrupted by SIGTERM before a verdict"}
    assert 'errors="1"' in green["--junit"].read_text() and "interrupted by SIGTERM before a verdict" in green["--junit"].read_text()
    assert green["--json"].is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loading", "m.onnx", "reports", "rows.npz", "v.json", "v.xml"]
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["v.json"]


def test_a_stop_before_main_takes_the_signals_replaces_an_earlier_run_s_reports(tmp_path):
    """A SIGTERM in the entry's first moments (its own handler, before main's watcher) said its line and left an earlier
    run's green --json for a cancelled CI job to publish. main is replaced by one that stops its own process at once."""
    green = tmp_path / "v.json"
    green.write_text(json.dumps({"schema_version": 1, "kind": "cwtool-verify", "gate": {"passed": True}}, indent=2))
    stop_at_once = ("import os, signal, toolchain.cli as cli; "
                    "cli.main = lambda: os.kill(os.getpid(), signal.SIGTERM); cli.entry()")
    proc = subprocess.run([sys.executable, "-c", stop_at_once, "verify", str(tmp_path / "m.onnx"), "-d", "digits",
                           "--json", str(green)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == "cwtool: interrupted by SIGTERM; temporary files removed"
    assert json.loads(green.read_text())["gate"] == {"passed": False, "error": "interrupted by SIGTERM before a verdict"}


def test_sighup_stops_a_command_as_sigterm_does_unless_the_process_ignores_it(tmp_path, rows):
    """A closed terminal or a dropped ssh connection (SIGHUP) killed a command where it stood, exit 129 with no line and
    its staged files left (a 237 MB calibration set beside its --out): it is a stop like SIGTERM. Under nohup it stays
    ignored: the run goes on, as the user asked."""
    import time

    _endless_onnx(tmp_path / "endless.onnx")
    args = [sys.executable, "-m", "toolchain", "verify", str(tmp_path / "endless.onnx"), "--data", str(rows), "-p", "3",
            "--json", str(tmp_path / "v.json")]
    proc = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True,  # SIGHUP as a shell leaves it (a suite
                            preexec_fn=_signals_as_a_foreground_shell_leaves_them)  # run under nohup ignores it)
    _running_its_runtime(proc)
    assert proc.poll() is None
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 129 and "cwtool: interrupted by SIGHUP; temporary files removed" in err, err
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".cwtool-tmp")]
    ignoring = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # as nohup starts it
    _ignored_then_stopped(ignoring, signal.SIGHUP)


def test_a_file_onnxruntime_refuses_gets_one_line_without_its_own_log(tmp_path):
    """onnxruntime logged its own coloured error lines to the process's stderr before cwtool's one line."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2**31, 2**31])  # declared, never stored
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2**31])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2**31])], initializer=[weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "huge.onnx"))
    proc = subprocess.run([sys.executable, "-m", "toolchain", "verify", str(tmp_path / "huge.onnx"), "-d", "digits", "-p", "3"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("cwtool: error:") and "\x1b" not in proc.stderr, proc.stderr


def test_an_onnx_file_whose_graph_blows_one_image_up_to_gigabytes_is_refused_before_it_runs(tmp_path, capsys):
    """A 3 KB graph Expanded each 8x8 image to 12 million channels: verify ran 246 s at 3.2 GB for 20 rows, exit 0.
    The input's size was checked, the activations' were not."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([1, 12_000_000, 8, 8], dtype=np.int64), "shape"),
             numpy_helper.from_array(np.ones((64, 10), np.float32), "W"), numpy_helper.from_array(np.array([1, 64], np.int64), "flat")]
    nodes = [helper.make_node("Expand", ["x", "shape"], ["big"]), helper.make_node("ReduceMean", ["big"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("Reshape", ["mean", "flat"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "expand.onnx"))
    code, _, err = run_cli(["verify", tmp_path / "expand.onnx", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "GiB for its activations" in err, err


def test_a_stop_is_said_once_even_when_the_exit_after_it_hangs(tmp_path):
    """The main thread printed its 'interrupted' line, then its exit hung in a library's teardown past the grace
    period: the watcher printed a second line."""
    script = textwrap.dedent("""
        import os, signal, threading
        import toolchain.cli as cli
        from toolchain import interrupts
        interrupts.GRACE_SECONDS = 0.5

        def said_then_stuck(argv):
            os.kill(os.getpid(), signal.SIGTERM)
            cli._say_interrupted("SIGTERM", None)  # what _run does with the Interrupted the signal raises
            lock = threading.Lock()
            lock.acquire()
            lock.acquire()  # then the exit hangs in native code

        cli._main = said_then_stuck
        cli.main([])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 143 and len(lines) == 1 and lines[0].startswith("cwtool: interrupted by SIGTERM"), proc.stderr


def test_debug_is_taken_after_the_command_too(capsys, monkeypatch, tmp_path):
    """Every internal error says "rerun with --debug"; typed at the end, as one does, it was "No such option"."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["evaluate", "absent.pt", "-d", "digits", "-p", "3", "--debug"], capsys)
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1] == "cwtool: error: model file 'absent.pt' does not exist", err


@pytest.mark.parametrize("wrapper", ["module.", "_orig_mod."])
def test_a_state_dict_saved_from_ddp_or_compile_loads(wrapper, tmp_path):
    """DistributedDataParallel (and torch.compile) prefix every name: such a file was refused with "missing ..."."""
    from toolchain.errors import UserError
    from toolchain.models import registry
    from toolchain.models.loading import load_model

    torch.manual_seed(0)
    model = registry.create("digits-cnn")
    torch.save({wrapper + k: v for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    loaded = load_model(tmp_path / "w.pt", arch="digits-cnn")
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in model.state_dict().items())
    torch.save({("module." if i % 2 else "") + k: v for i, (k, v) in enumerate(model.state_dict().items())}, tmp_path / "mixed.pt")
    with pytest.raises(UserError, match="do not match"):  # only a prefix on every name is a wrapper's
        load_model(tmp_path / "mixed.pt", arch="digits-cnn")


def test_a_legacy_format_pickle_that_names_code_is_called_so(tmp_path, capsys):
    """The zip form said "names code cwtool does not run (posix.system)"; the legacy form said "not a PyTorch
    checkpoint" and passed on torch's advice to load with weights_only=False."""
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo ran",))

    torch.save({"w": Payload()}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    code, out, err = run_cli(["evaluate", tmp_path / "legacy.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "names code cwtool does not run from a file (posix.system)" in err and "weights_only" not in err, err
    assert "ran" not in out


def test_a_stop_raised_where_python_swallows_exceptions_is_not_lost():
    """The watcher's Interrupted, raised inside a weakref callback (litert-torch's tracing runs them), vanished: the
    run went on and exited 0 after the user pressed Ctrl-C. It now surfaces when the command ends."""
    import time
    import weakref

    from toolchain.errors import Interrupted
    from toolchain.interrupts import Watcher

    class Thing:
        pass

    watcher = Watcher(lambda name, run_dir: f"stopped by {name}")
    previous = signal.signal(signal.SIGINT, lambda signum, frame: watcher.deliver(signum))
    swallowed = []

    def callback(_ref):  # exceptions raised here are printed as "ignored" and dropped by CPython
        signal.pthread_kill(watcher._thread.ident, signal.SIGINT)  # as the watcher takes a process's signal
        deadline = time.monotonic() + 2
        while not watcher.delivered and time.monotonic() < deadline:
            time.sleep(0.01)  # the Interrupted is raised here, ends the callback, and is dropped

    try:
        with pytest.raises(Interrupted, match="SIGINT"):
            with watcher:
                thing = Thing()
                ref = weakref.ref(thing, callback)
                del thing  # the callback runs now, and the signal is delivered inside it
                swallowed.append(watcher.delivered)  # reached: the exception did not come out of the callback
                assert ref() is None
    finally:
        signal.signal(signal.SIGINT, previous)
    assert swallowed == [True]  # it was delivered, and dropped, inside the callback


def test_a_stop_after_the_work_is_done_says_the_output_is_complete(tmp_path):
    """A SIGINT as compress ended, its run directory whole and its summary printed, was said "interrupted; temporary
    files removed" in 2 of 5 tries (it landed between the command's return and the exit)."""
    from toolchain import interrupts
    from toolchain.errors import Interrupted
    from toolchain.interrupts import Watcher

    for done in (False, True):
        watcher = Watcher(lambda name, run_dir: f"stopped by {name}")
        with pytest.raises(Interrupted) as stop:
            with watcher:
                if done:
                    interrupts.work_done(tmp_path)
                watcher.deliver(signal.SIGINT)  # as the handler does, where Python runs next
        assert stop.value.completed is done
        assert getattr(stop.value, "run_dir", None) == (tmp_path if done else None)


def test_a_summary_that_cannot_be_printed_after_a_whole_run_says_the_run_is_complete(tmp_path):
    """`cwtool compress ... >/dev/full`: the run directory was whole and its gate passed, yet the one line said only
    "cannot write a file (or the output): No space left on device", as if the run had failed, and named no stream."""
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import toolchain.cli as cli
        import toolchain.cli.compress as command
        import toolchain.pipeline as pipeline
        from toolchain import interrupts

        run = Path({str(tmp_path / "run")!r})

        def compress(request, config, export=None):
            interrupts.work_done(run)  # as the pipeline says once report.json and report.md are written
            return {{"gate": {{"passed": True}}}}, run

        def summary(report, run_dir):
            from toolchain.report.consoles import print_markdown
            print_markdown("# Summary" + " of a whole run" * 1000)  # more than a buffer: the write happens here

        pipeline.compress = compress
        command.print_summary = summary
        cli.main(["compress", {str(tmp_path / "m.pt")!r}, "--data", "digits", "-p", "3", "--out", str(run)])
    """)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-c", script], stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "cwtool: error: cannot write the standard output: No space left on device: free some space or write elsewhere; "
        f"the run itself is complete in '{tmp_path / 'run'}'"]


@pytest.mark.parametrize("closed", [">&-", "2>&-", "<&-", ">&- 2>&-"])
def test_a_closed_standard_stream_keeps_the_exit_code(tmp_path, closed):
    """`cwtool ... 2>&-` exited 1 (the gate-failed code) whatever happened, and `>&-` printed a traceback: Python sets a
    closed stream to None, and a file cwtool opened took its descriptor."""
    python = shlex.quote(sys.executable)
    script = (f"{python} -m toolchain evaluate {shlex.quote(str(tmp_path / 'missing.pt'))} -d digits -p 3 {closed}; echo bad=$?; "
              f"{python} -m toolchain targets {closed}; echo targets=$?")
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "bad=2" in proc.stdout and "targets=0" in proc.stdout, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr and "internal error" not in proc.stdout + proc.stderr
    if "2>&-" not in closed:  # the one line still reaches the stream that is open
        assert "cwtool: error: model file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args, code", [(["--help"], 0), (["--version"], 0), (["compress", "--help"], 0), ([], 2)])
def test_a_reader_that_leaves_early_takes_no_gate_failed_code_from_help(args, code):
    """`cwtool --help | head -1` exited 1, the gate-failed code (click's answer to a closed pipe)."""
    proc = subprocess.Popen([sys.executable, "-m", "toolchain", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "COLUMNS": "80"})
    proc.stdout.close()  # before a byte is read: the first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == code, err
    assert "Traceback" not in err


def test_output_to_a_full_disk_is_the_environments_error_not_a_bug():
    """stdout on a full disk ended in "internal error: OSError: [Errno 28]", exit 3, then in "cannot write a file (or the
    output)": the standard output is named."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "toolchain", "targets"], stdout=full, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "cwtool: error: cannot write the standard output: No space left on device: free some space or write elsewhere"]


@pytest.mark.parametrize("argv", [["evaluate", "NAME.pt", "--data", "digits", "-p", "3"], ["targets", "NAME.toml"],
                                  ["bench", "NAME.onnx"]])
def test_a_name_too_long_for_the_file_system_is_bad_input_not_a_bug(argv):
    """A path component over 255 bytes ended in "internal error: OSError: [Errno 36] File name too long", exit 3 (an
    adversarial reviewer's finding)."""
    long = "a" * 300
    proc = subprocess.run([sys.executable, "-m", "toolchain", *[a.replace("NAME", long) for a in argv]],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "File name too long: give a shorter name" in proc.stderr


def test_a_file_size_limit_or_a_read_only_file_system_is_the_environment_s_error(monkeypatch, capsys):
    """EFBIG (ulimit -f inside onnx.save) and EROFS (a file system remounted read-only mid-run) were exit 3."""
    import errno

    import toolchain.targets as targets_module
    from toolchain.cli import main

    for code, words in ((errno.EFBIG, "raise the file size limit (ulimit -f)"), (errno.EROFS, "write elsewhere")):
        def failing(*args, _code=code, **kwargs):
            raise OSError(_code, os.strerror(_code), "/tmp/out/model.onnx")

        monkeypatch.setattr(targets_module, "list_targets", failing)
        with pytest.raises(SystemExit) as exc:
            main(["targets"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "cannot write '/tmp/out/model.onnx'" in err and words in err, err


def test_an_output_name_near_the_file_system_s_limit_is_written(tmp_path):
    """A legal 244-character name was refused as 'File name too long': the temporary name staged beside it was longer
    (an adversarial reviewer's finding)."""
    from toolchain.io import atomic_write_text

    target = tmp_path / ("a" * 240 + ".json")
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_checkpoint_of_code_given_another_arch_names_both_ways_out(tmp_path, rows, capsys):
    """"drop --arch" for a checkpoint of a file's class was refused in turn ("pass --arch path/to/my_net.py:MyNet, or
    --trust-model"): two messages that contradicted each other (a new user's finding). One names both."""
    model = tmp_path / "mine.pt"
    torch.save({"format": "cwtool.model/1", "arch": f"{tmp_path}/my_net.py:MyNet", "arch_kwargs": {}, "input_shape": [1, 8, 8],
                "channel_plan": {}, "state_dict": {"w": torch.zeros(1)}, "extra": {}}, model)
    code, _, err = _evaluate(capsys, model, rows, "--arch", "digits-cnn")
    assert code == 2 and "give --arch path/to/my_net.py:MyNet" in err and "drop --arch and pass --trust-model" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_recorded_step_from_a_file_is_said_shortened():
    """A file's preprocessing record with a 5 MiB 'scale' had verify write a 5.2 MB Markdown report of its note."""
    from toolchain.data.identity import step_words

    assert len(step_words("x" * (5 << 20))) <= 80
    assert step_words([]) == "none" and step_words([224]) == "[224]"


def _stopped_after(target: str, module: str, tmp_path, argv: list, sig: str = "SIGTERM", when: str = "True") -> subprocess.CompletedProcess:
    """``argv`` run with ``module.target`` doing its work, then meeting a stop (as a CI job cancelled at that moment), the
    first time ``when`` (Python, of ``args``) holds."""
    script = textwrap.dedent(f"""
        import os, signal, time
        import toolchain.cli as cli
        import {module} as where

        real = where.{target}
        stops = [signal.{sig}]  # one stop, as a CI job sends

        def then_stopped(*args, **kwargs):
            out = real(*args, **kwargs)
            if stops and {when}:
                os.kill(os.getpid(), stops.pop())
                for _ in range(300):  # Python code runs: the stop is raised here
                    time.sleep(0.01)
            return out

        where.{target} = then_stopped
        cli.main({[str(a) for a in argv]!r})
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_stop_once_compress_wrote_its_reports_says_the_run_is_complete(trained_digits, tmp_path):
    """A SIGINT after report.json, .md and .html were written (gate PASSED, every file there) said 'interrupted ... rerun
    with --resume', and the log ended 'interrupted' where the report said finished. The folder a killed session left
    holding its log alone had been refused by the next run ('not a cwtool run directory') and by --resume."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "compress.log").write_text("2026-12-06 09:00:00 +    0.1s cwtool 0.1.0 compress m.pt (run 0123456789ab)\n")
    proc = _stopped_after("RunLog.record", "toolchain.report.consoles", tmp_path, [
        "compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1", "--skip-export",
        "--max-fn-increase", "2", "--confidence", "0.5", "--out", run], when="args[1].startswith('finished:')")
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("cwtool: SIGTERM arrived as the command finished: what it wrote is complete "
                                                    f"(run directory: {run})"), proc.stderr
    log = (run / "compress.log").read_text().splitlines()
    assert "(run 0123456789ab)" in log[0] and " finished: gate " in log[-1], log[-3:]
    assert json.loads((run / "report.json").read_text())["gate"]


def test_a_stop_once_calibrate_replaced_its_out_says_so(tmp_path):
    """calibrate had replaced --out with the new set, then said 'interrupted; temporary files removed'."""
    proc = _stopped_after("calibration_rows_sha256", "toolchain.quantize.calibration", tmp_path,
                          ["calibrate", "--data", "digits", "-p", "3", "--out", tmp_path / "c.npz"])
    assert proc.returncode == 143 and (tmp_path / "c.npz").is_file(), proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "cwtool: SIGTERM arrived as the command finished: what it wrote is complete"


def test_a_stop_while_verify_writes_its_outputs_writes_them_all_and_says_so(tmp_path):
    """A SIGINT once --save-rows was written left it, no JUnit, once a 'passed' Markdown, and said 'temporary files
    removed'. The verdict was made: every output is written, and the stop is said as arriving as it finished."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    outs = {"--save-rows": tmp_path / "rows.npz", "--json": tmp_path / "v.json", "--markdown": tmp_path / "v.md",
            "--junit": tmp_path / "v.xml"}
    proc = _stopped_after("_write_rows", "toolchain.cli.verify", tmp_path,
                          ["verify", tmp_path / "m.onnx", "-d", "digits", "-p", "3", *[v for pair in outs.items() for v in pair]])
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "cwtool: SIGTERM arrived as the command finished: what it wrote is complete"
    assert all(p.is_file() for p in outs.values()) and "gate" in json.loads(outs["--json"].read_text())
    assert "error" not in json.loads(outs["--json"].read_text())


def test_a_full_disk_as_the_report_is_written_says_the_rounds_wait_for_resume(trained_digits, tmp_path, capsys, monkeypatch):
    """A full disk once the rounds were saved said "cannot write report.html ... free some space" and nothing of the
    finished rounds, which --resume finishes without retraining (a resource-limits reviewer's)."""
    import errno

    import toolchain.pipeline as pipeline

    run = tmp_path / "run"

    def full(report, run_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "report.html"))

    monkeypatch.setattr(pipeline, "write_run_report", full)
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1", "--skip-export",
            "--max-fn-increase", "2", "--confidence", "0.5", "--out", run]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"cwtool: error: cannot write '{run / 'report.html'}': No space left on device: free some space or write elsewhere; the "
        f"finished rounds are kept in '{run}': once that is fixed, rerun the same command with --resume to finish the run"), err
    monkeypatch.undo()
    code, _, err = run_cli(args + ["--resume"], capsys)
    assert code in (0, 1) and (run / "report.json").is_file(), err


def test_a_first_session_that_cannot_write_its_manifest_leaves_no_folder(trained_digits, tmp_path):
    """A full disk as the manifest was written left the folder holding compress.log alone, which the next run refused."""
    script = textwrap.dedent(f"""
        import toolchain.cli as cli
        import toolchain.run_session as run_session
        from toolchain.errors import UserError

        def full(path, *args, **kwargs):
            raise UserError(f"cannot write '{{path}}': No space left on device")

        run_session.atomic_write_json = full
        cli.main(["compress", {str(trained_digits[0])!r}, "-d", "digits", "-p", "3", "--out", {str(tmp_path / "new" / "run")!r}])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "No space left on device" in proc.stderr, proc.stderr
    assert not (tmp_path / "new").exists()


def test_a_folder_holding_a_compress_log_of_the_users_own_is_no_run_to_begin(trained_digits, tmp_path, capsys):
    """A folder holding only a compress.log is a new run where cwtool began that log (a session killed before its
    manifest); one of the user's own ('tee R/compress.log') was appended to."""
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "compress.log").write_text("MY OWN NOTES\n")
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--skip-export", "--out", tmp_path / "R"], capsys)
    assert code == 2 and "is not a cwtool run directory" in err, err
    assert (tmp_path / "R" / "compress.log").read_text() == "MY OWN NOTES\n"
