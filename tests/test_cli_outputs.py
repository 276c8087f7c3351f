"""Output paths and flags the commands cannot honour: exit 2 with one line, before any work starts,
and nothing written or deleted."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from clirun import run_cli


class WorkStarted(Exception):
    pass


def _forbid(monkeypatch, target: str) -> None:
    """Make the command's first piece of real work fail loudly: the check must come before it. The commands' modules
    are imported first: one imported while the patch is on (``from toolchain.export.stage import export_all``) would
    keep the refusal after the test, and a later test in this process would end in it."""
    import importlib

    for module in ("toolchain.bench", "toolchain.cli.targets", "toolchain.export.standalone", "toolchain.pipeline", "toolchain.verify"):
        importlib.import_module(module)

    def refuse(*args, **kwargs):
        raise WorkStarted(target)

    monkeypatch.setattr(target, refuse)


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    (tmp_path / "model.onnx").write_bytes(b"not read: the checks come first")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "run")
    for name in ("m.pt", "data.npz", "net.py", "base.json", "model.tflite", "model.tflite.json", "model.onnx.data", "calib.npz"):
        (tmp_path / name).write_bytes(b"an input: never replaced")
    (tmp_path / "folder" / "img.png").write_bytes(b"an input inside a data folder")
    for name in ("elsewhere", "other"):  # read through links inside the data folder: inputs too
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"an input the data folder links to")
    (tmp_path / "folder" / "link.png").symlink_to(tmp_path / "elsewhere" / "a.png")
    (tmp_path / "folder" / "linked").symlink_to(tmp_path / "other")
    os.link(tmp_path / "m.pt", tmp_path / "alias.pt")
    (tmp_path / "report.json").write_text('{\n  "schema_version": 1,\n  "tool": {\n    "name": "cwtool",\n    "version": "0.1.0"\n  },\n  "run_id": "137a17f68967"\n}\n')
    (tmp_path / "export.json").write_text('{\n  "schema_version": 1,\n  "kind": "cwtool-export"\n}\n')
    (tmp_path / "manifest.json").write_text('{\n  "run_id": "137a17f68967",\n  "inputs": {}\n}\n')
    (tmp_path / "report.md").write_text("# cwtool compress report\n\n**Gate: PASSED**\n")
    (tmp_path / "pi.toml").write_text((Path(__file__).resolve().parents[1] / "targets" / "raspberry-pi-4.toml").read_text())
    return tmp_path


# (args, what the command must not reach, a word the message must carry)
def _cases(p):
    onnx, folder, under_file = p / "model.onnx", p / "folder", p / "notes.csv" / "out.json"
    return {
        "evaluate --json is a folder": (["evaluate", p / "m.pt", "-d", "digits", "-p", "3", "--json", folder], "toolchain.data.load_data", "is a folder"),
        "evaluate --json under a file": (["evaluate", p / "m.pt", "-d", "digits", "-p", "3", "--json", under_file], "toolchain.data.load_data", "notes.csv"),
        "verify --junit is a folder": (["verify", onnx, "-d", "digits", "-p", "3", "--json", p / "ok.json", "--junit", folder], "toolchain.verify.run_verify", "--junit"),
        "verify --markdown under a file": (["verify", onnx, "-d", "digits", "-p", "3", "--markdown", under_file], "toolchain.verify.run_verify", "--markdown"),
        "verify two outputs, one file": (["verify", onnx, "-d", "digits", "-p", "3", "--json", p / "a.x", "--junit", p / "a.x"], "toolchain.verify.run_verify", "different files"),
        "bench --json is a folder": (["bench", onnx, "--json", folder], "toolchain.bench.bench_many", "--json"),
        "bench --macs without --target": (["bench", onnx, "--macs", "1000"], "toolchain.bench.bench_many", "--target"),
        "targets --json under a file": (["targets", "raspberry-pi-4", "--json", under_file], "toolchain.cli.targets.out_console", "notes.csv"),
        "train --out is a folder": (["train", "--arch", "mlp", "-d", "digits", "--out", folder], "toolchain.data.load_data", "is a folder"),
        "train --out under a file": (["train", "--arch", "mlp", "-d", "digits", "--out", p / "notes.csv" / "m.pt"], "toolchain.data.load_data", "notes.csv"),
        "train --out is someone's file": (["train", "--arch", "mlp", "-d", "digits", "--out", p / "notes.csv"], "toolchain.data.load_data", "not a cwtool checkpoint"),
        "train --epochs 0": (["train", "--arch", "mlp", "-d", "digits", "--out", p / "m.pt", "--epochs", "0"], "toolchain.data.load_data", "--epochs"),
        "train --batch-size 0": (["train", "--arch", "mlp", "-d", "digits", "--out", p / "m.pt", "--batch-size", "0"], "toolchain.data.load_data", "--batch-size"),
        "train --lr 0": (["train", "--arch", "mlp", "-d", "digits", "--out", p / "m.pt", "--lr", "0"], "toolchain.data.load_data", "--lr"),
        "compress --out is a file": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--out", p / "notes.csv"], "toolchain.pipeline.compress", "is a file"),
        "compress --out under a file": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--out", p / "notes.csv" / "run"], "toolchain.pipeline.compress", "notes.csv"),
        "compress --keep-params named as a flag": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--keep-params", "2"], "toolchain.pipeline.compress", "--keep-params"),
        "compress --rate named as a flag": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--rate", "1"], "toolchain.pipeline.compress", "--rate"),
        "compress --layout against --target": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--target", "raspberry-pi-4", "--layout", "NCHW"], "toolchain.pipeline.compress", "--layout"),
        "evaluate --json is the model": (["evaluate", p / "m.pt", "-d", "digits", "-p", "3", "--json", p / "m.pt"], "toolchain.data.load_data", "also an input"),
        "verify --markdown is the artifact": (["verify", onnx, "-d", "digits", "-p", "3", "--markdown", onnx], "toolchain.verify.run_verify", "also an input"),
        "bench --json is the artifact": (["bench", onnx, "--json", onnx], "toolchain.bench.bench_many", "also an input"),
        "targets --json is a device": (["targets", "raspberry-pi-4", "--json", "/dev/null"], "toolchain.cli.targets.out_console", "device, pipe or socket"),
        "compress --out is a dangling link": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--out", p / "dangling"], "toolchain.pipeline.compress", "dangling link"),
        "compress --device keeps the user's words": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--device", "my rate"], "toolchain.pipeline.compress", "--device must be auto, cpu or cuda[:N], not 'my rate'"),
        "compress --calibration with --skip-export": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--calibration", p / "calib.npz", "--skip-export"], "toolchain.pipeline.compress", "--skip-export writes none"),
        "export --calibration without int8": (["export", p / "m.pt", "-d", "digits", "-p", "3", "--out", p / "e", "--calibration", p / "calib.npz", "--precision", "fp32"], "toolchain.export.stage.export_all", "writes onnx fp32, tflite fp32"),
        "compress --calibration-size with --calibration": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--calibration", p / "calib.npz", "--calibration-size", "10"], "toolchain.pipeline.compress", "--calibration-size is the size of the set drawn"),
        "compress --format with --skip-export": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--format", "onnx", "--skip-export"], "toolchain.pipeline.compress", "--skip-export writes none"),
        "compress --format the --target does not run": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--format", "onnx", "--target", "raspberry-pi-4"], "toolchain.pipeline.compress", "--target raspberry-pi-4 runs tflite files, and this run writes onnx fp32, onnx int8"),
        "export --format the --target does not run": (["export", p / "m.pt", "-d", "digits", "-p", "3", "--out", p / "e", "--format", "onnx", "--target", "raspberry-pi-4"], "toolchain.export.stage.export_all", "runs tflite files"),
        "compress --round-to on weight tickets": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--granularity", "weight", "--round-to", "8"], "toolchain.pipeline.compress", "--round-to is for channel pruning"),
        "compress --calibration is a folder": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--calibration", folder], "toolchain.pipeline.compress", "is a folder"),
        # an output never replaces an input, nor writes into an input folder
        "evaluate --json is the data": (["evaluate", p / "m.pt", "-d", p / "data.npz", "-p", "3", "--json", p / "data.npz"], "toolchain.data.load_data", "also an input"),
        "evaluate --json is the model (another file)": (["evaluate", p / "data.npz", "-d", "digits", "-p", "3", "--json", p / "data.npz"], "toolchain.data.load_data", "also an input"),
        "evaluate --json is the arch file": (["evaluate", p / "m.pt", "-d", "digits", "-p", "3", "--arch", f"{p / 'net.py'}:Net", "--json", p / "net.py"], "toolchain.data.load_data", "also an input"),
        "evaluate --json inside the data folder": (["evaluate", p / "m.pt", "-d", folder, "-p", "3", "--json", folder / "e.json"], "toolchain.data.load_data", "inside the input folder"),
        "verify --json is the data": (["verify", onnx, "-d", p / "data.npz", "-p", "3", "--json", p / "data.npz"], "toolchain.verify.run_verify", "also an input"),
        "verify --markdown is a sidecar": (["verify", p / "model.tflite", "-d", "digits", "-p", "3", "--markdown", p / "model.tflite.json"], "toolchain.verify.run_verify", "also an input"),
        "verify --junit is the baseline": (["verify", onnx, "-d", "digits", "-p", "3", "--baseline", p / "base.json", "--junit", p / "base.json"], "toolchain.verify.run_verify", "also an input"),
        "verify --json is the external data": (["verify", onnx, "-d", "digits", "-p", "3", "--json", p / "model.onnx.data"], "toolchain.verify.run_verify", "also an input"),
        "verify --json is the artifact": (["verify", onnx, "-d", "digits", "-p", "3", "--json", onnx], "toolchain.verify.run_verify", "also an input"),
        "bench --json is a sidecar": (["bench", p / "model.tflite", "--json", p / "model.tflite.json"], "toolchain.bench.bench_many", "also an input"),
        "bench --json is the target file": (["bench", onnx, "--target", p / "pi.toml", "--json", p / "pi.toml"], "toolchain.bench.bench_many", "also an input"),
        "targets --json is the target file": (["targets", p / "pi.toml", "--json", p / "pi.toml"], "toolchain.cli.targets.out_console", "also an input"),
        "train --out is the data": (["train", "--arch", "mlp", "-d", p / "data.npz", "--out", p / "data.npz"], "toolchain.data.load_data", "also an input"),
        "train --out is the arch file": (["train", "--arch", f"{p / 'net.py'}:Net", "-d", "digits", "--out", p / "net.py"], "toolchain.data.load_data", "also an input"),
        "compress --out holds the model": (["compress", p / "m.pt", "-d", "digits", "-p", "3", "--out", p], "toolchain.pipeline.compress", "an input of this command"),
        "compress --out holds the calibration": (["compress", folder / "img.png", "-d", "digits", "-p", "3", "--out", p, "--calibration", p / "calib.npz"], "toolchain.pipeline.compress", "an input of this command"),
        "compress --out inside the data folder": (["compress", p / "m.pt", "-d", folder, "-p", "3", "--out", folder / "run"], "toolchain.pipeline.compress", "inside the input folder"),
        "evaluate --json is where a linked image points": (["evaluate", p / "m.pt", "-d", folder, "-p", "3", "--json", p / "elsewhere" / "a.png"], "toolchain.data.load_data", "also an input"),
        "verify --markdown in a linked class folder": (["verify", onnx, "-d", folder, "-p", "3", "--markdown", folder / "linked" / "a.png"], "toolchain.verify.run_verify", "inside the input folder"),
        "verify --markdown where a linked class folder points": (["verify", onnx, "-d", folder, "-p", "3", "--markdown", p / "other" / "v.md"], "toolchain.verify.run_verify", "inside the input folder"),
        # nor a run's record, which verify's baselines and --resume rest on (a report.json given by mistake)
        "evaluate --json is a run's report.json": (["evaluate", p / "m.pt", "-d", "digits", "-p", "3", "--json", p / "report.json"], "toolchain.data.load_data", "a compress run's report.json"),
        "verify --json is a run's report.json": (["verify", onnx, "-d", "digits", "-p", "3", "--json", p / "report.json"], "toolchain.verify.run_verify", "a compress run's report.json"),
        "bench --json is an export.json": (["bench", onnx, "--json", p / "export.json"], "toolchain.bench.bench_many", "an export's export.json"),
        "evaluate --json is a run's manifest.json": (["evaluate", p / "m.pt", "-d", "digits", "-p", "3", "--json", p / "manifest.json"], "toolchain.data.load_data", "a compress run's manifest.json"),
        "verify --markdown is a run's report.md": (["verify", onnx, "-d", "digits", "-p", "3", "--markdown", p / "report.md"], "toolchain.verify.run_verify", "a compress run's report.md"),
        "targets --json is a run's report.json": (["targets", "raspberry-pi-4", "--json", p / "report.json"], "toolchain.cli.targets.out_console", "report.json"),
        "evaluate --json is a hard link to the model": (["evaluate", p / "m.pt", "-d", "digits", "-p", "3", "--json", p / "alias.pt"], "toolchain.data.load_data", "also an input"),
    }


CASES = list(_cases(__import__("pathlib").Path("/")))


@pytest.mark.parametrize("case", CASES)
def test_refused_before_any_work(case, paths, monkeypatch, capsys):
    args, first_work, word = _cases(paths)[case]
    _forbid(monkeypatch, first_work)
    before = sorted(p.relative_to(paths) for p in paths.rglob("*"))
    onnx_before = (paths / "model.onnx").read_bytes()
    csv_before = (paths / "notes.csv").read_text()
    code, _, err = run_cli(args, capsys)
    assert code == 2, f"{case}: exit {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cwtool: error: "), err
    assert word in lines[0], lines[0]
    assert sorted(p.relative_to(paths) for p in paths.rglob("*")) == before  # nothing written, no probe left
    assert (paths / "notes.csv").read_text() == csv_before
    assert (paths / "model.onnx").read_bytes() == onnx_before
    assert Path("/dev/null").is_char_device()


def test_a_cwtool_checkpoint_names_its_own_arch(trained_digits, capsys):
    path, _ = trained_digits
    code, _, err = run_cli(["evaluate", path, "-d", "digits", "-p", "3", "--arch", "mlp"], capsys)
    assert code == 2 and "digits-cnn" in err and "drop --arch" in err, err
    code, _, err = run_cli(["evaluate", path, "-d", "digits", "-p", "3", "--arch", "digits-cnn"], capsys)
    assert code == 0, err  # naming the same arch is harmless


def test_a_folder_is_not_a_model(paths, capsys):
    code, _, err = run_cli(["evaluate", paths / "folder", "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "is a folder" in err, err


def test_train_may_replace_its_own_checkpoint(trained_digits, tmp_path, capsys):
    path, _ = trained_digits
    out = tmp_path / "again.pt"
    out.write_bytes(path.read_bytes())
    code, _, err = run_cli(["train", "--arch", "mlp", "-d", "breast-cancer", "--epochs", "1", "--device", "cpu", "--out", out], capsys)
    assert code == 0, err
    from toolchain.models.loading import load_model

    assert load_model(out).arch == "mlp"


def _demo_run_folder(root):
    demo = root / "cwtool-demo"
    demo.mkdir()
    (demo / "manifest.json").write_text(json.dumps({"earlier": "run", "inputs": {"data": {"spec": "digits"}}}))
    return demo


def test_demo_checks_the_class_before_deleting_the_last_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    demo = _demo_run_folder(tmp_path)
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    code, _, err = run_cli(["demo", "-p", "99"], capsys)
    assert code == 2 and "--protect-class 99" in err and len(err.strip().splitlines()) == 1, err
    assert json.loads((demo / "manifest.json").read_text())["earlier"] == "run"


def test_demo_leaves_a_folder_that_is_not_a_demo_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwtool-demo").mkdir()
    (tmp_path / "cwtool-demo" / "thesis.tex").write_text("mine")
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    code, _, err = run_cli(["demo"], capsys)
    assert code == 2 and "not a demo run" in err and "--resume" not in err, err
    assert (tmp_path / "cwtool-demo" / "thesis.tex").read_text() == "mine"


@pytest.mark.parametrize("manifest, extra, words", [
    ({"inputs": {"data": {"spec": "digits"}}}, "thesis.tex", "thesis.tex"),  # a manifest.json by name is not a demo run
    ({"inputs": {"data": {"spec": "mine.npz"}}}, None, "not a compress run on digits"),  # the user's own run there
    ("not json", None, "no readable manifest.json")])
def test_demo_replaces_only_a_demo_run(tmp_path, monkeypatch, capsys, manifest, extra, words):
    monkeypatch.chdir(tmp_path)
    demo = tmp_path / "cwtool-demo"
    demo.mkdir()
    (demo / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    if extra:
        (demo / extra).write_text("mine")
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    code, _, err = run_cli(["demo"], capsys)
    assert code == 2 and "not a demo run" in err and words in err, err
    assert (demo / "manifest.json").is_file() and (not extra or (demo / extra).read_text() == "mine")


def test_demo_leaves_a_demo_run_that_another_process_is_making(tmp_path, monkeypatch, capsys):
    """A second `cwtool demo` removed the folder the first was compressing into."""
    from toolchain.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    demo = _demo_run_folder(tmp_path)
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    held = RunDir(demo).hold()
    try:
        code, _, err = run_cli(["demo"], capsys)
    finally:
        RunDir.release(held)
    assert code == 2 and "is in use: another cwtool process runs the demo in it now" in err, err
    assert (demo / "manifest.json").is_file()


def test_a_second_demo_in_a_folder_waits_for_none_and_touches_nothing(tmp_path, monkeypatch, capsys):
    """The first demo held the run folder only while it looked: a second demo's --retrain trained meanwhile, then deleted
    the folder under the first one's compress, whose report listed four artifacts in an empty artifacts/ (exit 0; a
    concurrency reviewer's finding). A demo holds its folder's parent from its first check to its report."""
    from toolchain.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    demo = _demo_run_folder(tmp_path)
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    held = RunDir(tmp_path).hold()  # a demo running here
    try:
        code, _, err = run_cli(["demo", "--retrain"], capsys)
    finally:
        RunDir.release(held)
    assert code == 2 and "is in use: another cwtool process runs the demo in it now" in err, err
    assert (demo / "manifest.json").is_file()


def test_a_demo_in_a_folder_it_may_write_in_but_not_list_still_runs(tmp_path, monkeypatch):
    """Holding the demo's folder (opened read-only) refused a folder of mode 333, where the demo had run before (a
    regression reviewer's finding): there the run folder alone is held, as before."""
    import toolchain.demo as demo
    from toolchain.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    real = RunDir.hold

    def unlistable(self, *a, **k):
        if Path(self.root) == tmp_path:
            raise PermissionError(13, "Permission denied", str(tmp_path))
        return real(self, *a, **k)

    monkeypatch.setattr(RunDir, "hold", unlistable)
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    with pytest.raises(WorkStarted):  # past the hold, at the first piece of work
        demo.run_demo(["3"])


def test_demo_will_not_replace_a_file_of_that_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwtool-demo").write_text("mine")
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    code, _, err = run_cli(["demo"], capsys)
    assert code == 2 and "is a file" in err and "another folder" in err, err
    assert (tmp_path / "cwtool-demo").read_text() == "mine"


def test_the_default_run_folder_is_checked_too(trained_digits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwtool-runs").write_text("a file where compress puts its runs")
    _forbid(monkeypatch, "toolchain.prune.lottery.LotteryPruner")
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--skip-export"], capsys)
    assert code == 2 and "cwtool-runs" in err and len(err.strip().splitlines()) == 1, err


def test_demo_will_not_follow_a_link(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    real = _demo_run_folder(tmp_path / "elsewhere")
    (tmp_path / "cwtool-demo").symlink_to(real)
    _forbid(monkeypatch, "toolchain.demo.ensure_demo_model")
    code, _, err = run_cli(["demo"], capsys)
    assert code == 2 and "is a link" in err, err
    assert (real / "manifest.json").is_file()


@pytest.mark.parametrize("args, words", [
    (["compress"], ["cwtool: error:", "Missing argument", "cwtool compress --help"]),
    (["compress", "m.pt", "-d", "digits"], ["--protect-class"]),
    (["train", "--epochs", "abc"], ["cwtool: error:", "--epochs", "cwtool train --help"]),
    (["frobnicate"], ["cwtool: error:", "frobnicate"]),
])
def test_usage_errors_are_one_line(args, words, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), err
    assert lines[0].startswith("cwtool: error: "), err  # one prefix for every bad input, usage or not


def test_compress_help_shows_every_flag_whole_in_a_pipe_at_80_columns():
    """Every option of compress -- the config dataclasses' fields included -- by its full name, grouped."""
    import dataclasses
    import os
    import subprocess
    import sys

    from toolchain.config import ExportOptions, PruneConfig

    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "toolchain", "compress", "--help"], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    flags = [f"--{f.name.replace('_', '-')}" for cls in (PruneConfig, ExportOptions) for f in dataclasses.fields(cls) if "flag" in f.metadata]
    flags += ["--data", "--protect-class", "--arch-kwargs", "--trust-model", "--out", "--resume", "--class-names", "--val", "--test"]
    words = set(out.replace("│", " ").split())
    assert [f for f in flags if f not in words] == []
    for group in ("Goals", "Method", "Export", "Run", "Inputs"):
        assert f"─ {group} " in out


@pytest.mark.parametrize("command", ["evaluate", "train", "calibrate", "compress", "export", "demo", "verify", "targets", "bench"])
def test_no_help_cuts_a_word_in_a_pipe_at_80_columns(command):
    """rich cuts what does not fit a column with '…': a flag name (--max-fn-incre…) or a path in the help."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "toolchain", command, "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "80"}, cwd=Path(__file__).resolve().parents[1]).stdout
    assert "Usage: cwtool" in out and max(len(line) for line in out.splitlines()) <= 80
    assert [line for line in out.splitlines() if "…" in line] == []
    # a flag shown with a type ("--resume <bool>") reads as one that takes a value; `--resume true` is then refused
    assert [line for line in out.splitlines() if "<bool>" in line] == []


def test_demo_checks_its_model_cache_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("CWTOOL_CACHE", str(tmp_path / "cache"))
    _forbid(monkeypatch, "toolchain.models.train.train")
    code, _, err = run_cli(["demo", "--retrain"], capsys)
    assert code == 2 and "CWTOOL_CACHE" in err and len(err.strip().splitlines()) == 1, err


def test_the_demo_cache_error_names_the_variable_the_user_set(tmp_path, monkeypatch, capsys):
    """XDG_CACHE_HOME set to a file was said as "(CWTOOL_CACHE)", a variable the user never set; CWTOOL_CACHE=" " made a
    folder named " " where the demo ran."""
    from toolchain.demo import cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CWTOOL_CACHE", raising=False)
    (tmp_path / "xdg").write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _forbid(monkeypatch, "toolchain.models.train.train")
    code, _, err = run_cli(["demo", "--retrain"], capsys)
    assert code == 2 and "(XDG_CACHE_HOME)" in err and "CWTOOL_CACHE" not in err, err
    monkeypatch.setenv("CWTOOL_CACHE", " ")
    assert cache_dir() == tmp_path / "xdg" / "cwtool"


def test_a_home_this_user_may_not_enter_is_said_as_the_demo_cache(tmp_path, monkeypatch, capsys):
    """HOME=/nonexistent for nobody: the cached model's is_file() raised PermissionError, said as a bare "permission denied
    ... give another path", though demo takes no path and CWTOOL_CACHE moves the cache (a resource-limits reviewer's)."""
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CWTOOL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    (tmp_path / "home").write_text("a file where a home should be")  # the cache's folder cannot be made
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    real = Path.is_file

    def no_entry(self):
        if str(self).startswith(str(tmp_path / "home")):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", no_entry)
    _forbid(monkeypatch, "toolchain.models.train.train")
    code, _, err = run_cli(["demo"], capsys)
    assert code == 2 and "the demo model cache (~/.cache; CWTOOL_CACHE moves it)" in err and len(err.strip().splitlines()) == 1, err


def test_a_closed_pipe_is_no_error_of_the_users_model():
    """`cwtool compress --help | head -1`: rich exits 1 on the closed pipe; that exit was blamed on a model."""
    import subprocess
    import sys

    cli = subprocess.Popen([sys.executable, "-m", "toolchain", "compress", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, "COLUMNS": "80"}, cwd=Path(__file__).resolve().parents[1])
    cli.stdout.read(10)
    cli.stdout.close()
    err = cli.stderr.read().decode()
    assert cli.wait(timeout=60) in (0, 1) and "cwtool: error" not in err, err


@pytest.mark.parametrize("threads, passed_on", [("", False), ("two", False), ("0", False), ("1", True), ("4,2", True)])
def test_an_openmp_thread_count_openmp_cannot_read_adds_no_line_to_a_bad_input(trained_digits, tmp_path, monkeypatch, threads, passed_on):
    """``export OMP_NUM_THREADS=`` in a script: OpenMP (loaded with torch) ignored it but printed "libgomp: Invalid value
    for environment variable OMP_NUM_THREADS" twice before cwtool's one line. A value it reads reaches torch unchanged."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": threads}
    bad = subprocess.run([sys.executable, "-m", "toolchain", "compress", str(trained_digits[0]), "--data", "digits", "-p", "99",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["cwtool: error: --protect-class 99 is outside the model's outputs (classes 0..9)"]
    from toolchain.cli.process import unreadable_thread_count_unset

    monkeypatch.setenv("OMP_NUM_THREADS", threads)  # the suite's own setting comes back after
    unreadable_thread_count_unset()
    assert os.environ.get("OMP_NUM_THREADS") == (threads if passed_on else None)


def test_cwtool_alone_prints_its_help_and_a_line_that_says_something(capsys):
    """`cwtool` with no command printed the help, then 'cwtool: error:  (see 'cwtool --help')', an empty line."""
    code, out, err = run_cli([], capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "compress" in out + err and line.startswith("cwtool: error: ") and "no arguments given" in line, line
    assert "error:  " not in line


@pytest.mark.parametrize("command", ["evaluate", "targets", "targets-one"])
def test_a_json_report_replaces_only_its_own_command_s_json(command, trained_digits, tmp_path, capsys):
    """evaluate, bench and targets --json replaced any file not among the command's inputs: a trained checkpoint, an exported
    TFLite file, its sidecar, a calibration set (verify's reports already replaced only verify's)."""
    argv = {"evaluate": ["evaluate", trained_digits[0], "-d", "digits", "-p", "3"], "targets": ["targets"],
            "targets-one": ["targets", "x86-edge"]}[command]
    precious = tmp_path / "model.pt"
    precious.write_bytes(Path(trained_digits[0]).read_bytes())
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    for path in (precious, notes):
        before = path.read_bytes()
        code, _, err = run_cli([*argv, "--json", path], capsys)
        assert code == 2 and "holds a file" in err and "did not write" in err and path.read_bytes() == before, err
    own = tmp_path / "own.json"
    for _ in range(2):  # written, then replaced by the same command (a CI workspace)
        code, _, err = run_cli([*argv, "--json", own], capsys)
        assert code == 0 and own.stat().st_size > 0, err
    empty = tmp_path / "empty.json"
    empty.touch()
    code, _, err = run_cli([*argv, "--json", empty], capsys)
    assert code == 0 and empty.stat().st_size > 0, err


def test_bench_knows_its_own_json():
    import re

    from toolchain.io import json_text
    from toolchain.output_paths import OWN_JSON

    assert re.match(OWN_JSON["bench"], json_text({"schema_version": 1, "results": []}))
    assert not re.match(OWN_JSON["bench"], json_text({"schema_version": 1, "n": 3}))


def test_an_output_named_by_spaces_alone_and_a_value_given_whole_are_one_short_line(tmp_path, capsys, monkeypatch):
    """`--json " "` wrote a file named by one space (an unset variable in CI, as `--target " "` is refused); a bad value
    echoed whole made a 100 KB error line."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["targets", "--json", " "], capsys)
    assert code == 2 and "is a name of spaces alone (an unset variable?)" in err and not list(tmp_path.iterdir()), err
    code, _, err = run_cli(["verify", "m.onnx", "-d", "digits", "-p", "3", "--gate", "x" * 100_000], capsys)
    from toolchain.cli import MAX_LINE

    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("cwtool: error: ") and len(line) < MAX_LINE + 100, len(line)
    assert re.search(r"\.\.\. \(cut: the line is 100,\d{3} characters\)$", line), line[-80:]


def test_a_remedy_the_user_copies_is_never_cut(capsys):
    """Every class name of a --class-names remedy (150 plankton species: 3,391 characters) was cut mid-value."""
    from toolchain.cli import MAX_LINE, _say_once_a_machine

    remedy = "cwtool: error: give --class-names " + ",".join(f"plankton_species_{i:03d}" for i in range(600))
    assert len(remedy) > MAX_LINE
    _say_once_a_machine(remedy, whole=True)
    assert capsys.readouterr().err.strip() == remedy
    _say_once_a_machine(remedy)
    assert "(cut: the line is" in capsys.readouterr().err


def test_targets_knows_its_own_json_of_a_profile_whose_name_holds_a_quote(tmp_path, capsys):
    toml = tmp_path / "pi.toml"
    text = (Path(__file__).resolve().parents[1] / "targets" / "raspberry-pi-4.toml").read_text()
    toml.write_text(re.sub(r'^name = .*$', 'name = "lab \\"pi\\" 4"', text, count=1, flags=re.M))
    out = tmp_path / "t.json"
    for _ in range(2):  # the second run refused its own output: the name's escaped quote ended the pattern
        code, _, err = run_cli(["targets", toml, "--json", out], capsys)
        assert code == 0, err
    assert json.loads(out.read_text())["name"] == 'lab "pi" 4'


@pytest.mark.parametrize("args", [
    ["evaluate", "model.pt", "--data", "digits", "--json", "res/"],
    ["verify", "model.onnx", "--data", "digits", "--junit=res/"],
    ["verify", "model.onnx", "--data", "digits", "--save-rows", "res/"],
    ["train", "--data", "digits", "--out", "res/"],
    ["targets", "--json", "res/"],
])
def test_a_file_output_that_names_a_folder_is_refused(args, tmp_path, monkeypatch, capsys):
    """`--json res/` meant "put it in res": the parser dropped the '/', and a file called 'res' was written."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "ends in '/', which names a folder" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []
    if args[0] == "verify":  # a report an earlier run left is replaced, as after any other usage error
        (tmp_path / "v.json").write_text('{"schema_version": 1, "kind": "cwtool-verify", "artifacts": [], "gate": {"passed": true}}')
        code, _, err = run_cli([*args, "--json", "v.json"], capsys)
        assert code == 2 and json.loads((tmp_path / "v.json").read_text())["gate"]["passed"] is False, err


@pytest.mark.parametrize("kwargs", ['{"cfg": ' + "[" * 9 + "]" * 9 + "}", '{"width": NaN}'])
def test_arch_kwargs_a_checkpoint_cannot_record_are_refused_at_once(kwargs, tmp_path, capsys):
    """--arch-kwargs nested 9 levels made a checkpoint that compress then called damaged, and a run whose manifest held
    them deeper was refused on --resume (a regression reviewer's finding)."""
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", kwargs, "-d", "digits", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "--arch-kwargs nests deeper than 8 levels" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_demo_says_to_run_the_demo_again_not_to_resume(tmp_path, monkeypatch):
    """A stopped demo said "rerun the same command with --resume", a flag the demo does not take (a concurrency reviewer's
    finding): it starts over."""
    from toolchain.cli.stops import interrupted_line

    line = interrupted_line("SIGTERM", tmp_path / "cwtool-demo", "demo")
    assert "run cwtool demo again to start over" in line and "--resume" not in line
    assert "rerun the same command with --resume" in interrupted_line("SIGTERM", tmp_path / "run", "compress")


def test_version_and_help_read_as_a_user_types(capsys):
    """No --version; help showed `<list[str]>` for -p and `<list[Path]>` for the files, `{artifacts}` in the usage line, and
    no word that demo replaces ./cwtool-demo/ (a reviewer's reading of --help)."""
    from toolchain import __version__

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"cwtool {__version__}"
    for command in ("evaluate", "compress", "export", "verify", "bench", "calibrate", "demo", "targets"):
        code, out, _ = run_cli([command, "--help"], capsys)
        assert code == 0 and "list[" not in out and "{artifacts}" not in out and "{model}" not in out, (command, out)
    _, out, _ = run_cli(["verify", "--help"], capsys)
    assert "{ARTIFACT}..." in out and "CLASS" in out
    _, out, _ = run_cli(["demo", "--help"], capsys)
    assert "replacing an earlier demo's" in " ".join(out.replace("│", " ").split())


def test_a_bug_says_to_report_it_and_small_slips_are_named(capsys, monkeypatch, tmp_path):
    """The exit-3 line said "rerun with --debug" but not that it is a bug to report (as the README promises); --data
    digitz had no "did you mean", where --arch and -p have one; --max-fnr 2 was told "(0.02 = 2 points)", accuracy's words."""
    def broken(*args, **kwargs):
        raise ZeroDivisionError("made up")

    monkeypatch.setattr("toolchain.input_paths.input_paths", broken)
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "-d", "digits", "-p", "3"], capsys)
    assert code == 3 and err.strip().endswith("(a bug in cwtool: rerun with --debug for the traceback and report it)"), err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "-d", "digitz", "-p", "3"], capsys)
    assert code == 2 and "unknown --data 'digitz' (did you mean digits?)" in err, err
    code, _, err = run_cli(["verify", tmp_path / "m.onnx", "-d", "digits", "-p", "3", "--max-fnr", "2"], capsys)
    assert code == 2 and "--max-fnr 2.0 is out of range" in err and "points" not in err and "of the class's samples" in err, err
