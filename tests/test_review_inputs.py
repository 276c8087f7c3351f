"""Inputs a reviewer used to break cwtool with (each once an exit 3, a forged console line or a replaced file):
every one is now bad input -- one line, exit 2 -- or, for a resumed run, measured again instead of trusted."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clirun import one_line_error, run_cli, trained_briefly

REPO = Path(__file__).resolve().parents[1]

NETS = '''
import torch
from torch import nn


class Base(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def logits(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class TupleOut(Base):
    def forward(self, x):
        return self.logits(x), x


class DictOut(Base):
    def forward(self, x):
        return {"logits": self.logits(x)}


class ComplexOut(Base):
    def forward(self, x):
        return torch.complex(self.logits(x), self.logits(x))


class IntOut(Base):
    def forward(self, x):
        return self.logits(x).round().long()


class Gated(nn.Module):
    """A gated conv: the halves of one conv's channels meet in a product (channel i pairs with i + 16)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Linear(32, num_classes)

    def forward(self, x):
        a, b = self.c1(x).chunk(2, dim=1)
        return self.fc(torch.relu(self.c2(a * torch.sigmoid(b))).mean((2, 3)))


class Shared(nn.Module):
    """Two layers hold one weight Parameter."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.inp, self.a, self.b, self.fc = nn.Linear(64, 48), nn.Linear(48, 48), nn.Linear(48, 48), nn.Linear(48, num_classes)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.fc(torch.relu(self.b(torch.relu(self.a(torch.relu(self.inp(x.flatten(1))))))))


class FrozenBackbone(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.backbone.requires_grad_(False)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x).mean((2, 3)))


class WithAuxHead(Base):
    """An auxiliary head kept from training, unused by forward."""

    def __init__(self, num_classes=10):
        super().__init__(num_classes=num_classes)
        self.aux = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.logits(x)


class TinyViT(nn.Module):
    def __init__(self, dim=32, heads=4, num_classes=10):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.ln = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        h = self.ln(t)
        return self.head((t + self.attn(h, h, h, need_weights=False)[0]).mean(1))


class Sliced(nn.Module):
    """Uses the first half of a conv's channels by a slice the graph does not follow."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x))[:, :8])).mean((2, 3)))


class TinyFlipped(nn.Module):
    """Reverses a conv's channels; logits of about 1e-5."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, num_classes)

    def forward(self, x):
        return 1e-5 * self.fc(torch.relu(self.c2(torch.relu(self.c1(x)).flip(1))).mean((2, 3)))


class BatchStatistics(Base):
    """BatchNorm with track_running_stats=False: normalized with each batch's statistics, in eval mode too."""

    def __init__(self, num_classes=10):
        super().__init__(num_classes=num_classes)
        self.bn = nn.BatchNorm2d(8, track_running_stats=False)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class BatchStatistics1d(Base):
    """The same on feature rows: one row alone cannot be normalized at all."""

    def __init__(self, num_classes=10):
        super().__init__(num_classes=num_classes)
        self.bn = nn.BatchNorm1d(8 * 8 * 8, track_running_stats=False)

    def forward(self, x):
        return self.fc(self.bn(torch.relu(self.conv(x)).flatten(1)))


class MCDropout(Base):
    """Dropout left on at inference."""

    def forward(self, x):
        return self.fc(nn.functional.dropout(torch.relu(self.conv(x)).flatten(1), 0.5, training=True))


class Float64(Base):
    """Weights and arithmetic in float64: runs as given, not in float32."""

    def __init__(self, num_classes=10):
        super().__init__(num_classes=num_classes)
        self.double()

    def forward(self, x):
        return self.logits(x.double()).float()


class DataDependent(Base):
    """Branches on a value of its input: torch.export (hence litert-torch) cannot trace it; ONNX can."""

    def forward(self, x):
        y = self.logits(x)
        if float(x.sum()) > 1e9:
            y = y * 2
        return y
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    (folder / "nets.py").write_text(NETS)
    torch.manual_seed(0)
    from toolchain.models.arch import resolve_arch

    base = resolve_arch(f"{folder / 'nets.py'}:Base")()
    base.forward = base.logits  # the layers every net here shares, trained through the plain path
    torch.save(trained_briefly(base).state_dict(), folder / "weights.pt")
    return folder


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_legacy_pickle_the_safe_reader_lacks_an_opcode_for_keeps_its_trust_route(trained_digits, tmp_path, capsys, protocol):
    """A real state_dict saved in torch's legacy format with pickle protocol 4 or 5 (FRAME, opcode 149) was called
    "no pickle" by the first fix for random bytes; it is a pickle that --trust-model reads."""
    import torch

    state = torch.load(trained_digits[0], weights_only=True)["state_dict"]
    torch.save(state, tmp_path / "old.pt", pickle_protocol=protocol, _use_new_zipfile_serialization=False)
    code, _, err = run_cli(["evaluate", tmp_path / "old.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, "is a pickle that only a full unpickle reads (Unsupported operand 149)", "--trust-model")
    code, _, err = run_cli(["evaluate", tmp_path / "old.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3", "--trust-model"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_are_not_called_a_pickled_model_to_trust(trained_digits, tmp_path, capsys, seed):
    """4 KB of random bytes were "a pickled model: it names code cwtool does not run ... or --trust-model if you trust this
    file": an invitation to unpickle noise. A truncated checkpoint's line ended in torch's advice, cut mid-sentence (or
    in "OSError: [Errno 22] Invalid argument"), an empty file's in "EOFError: "."""
    import numpy as np

    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(seed).bytes(4096))
    (tmp_path / "cut.pt").write_bytes(Path(trained_digits[0]).read_bytes()[:3000])
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, said in (("noise.pt", "not a PyTorch checkpoint (its bytes are no pickle: Unsupported operand"),
                       ("cut.pt", "is a cut-off checkpoint: it starts as torch.save's zip archive but its end is missing"),
                       ("empty.pt", "is an empty file (0 bytes), not a model")):
        code, _, err = run_cli(["evaluate", tmp_path / name, "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
        one_line_error(code, err, said)
        assert "--trust-model" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name, kind", [("TupleOut", "tuple"), ("DictOut", "dict")])
@pytest.mark.parametrize("command", ["evaluate", "compress"])
def test_a_model_returning_more_than_logits_is_bad_input(nets, name, kind, command, tmp_path, capsys):
    extra = ["--epochs", "1", "--out", tmp_path / "run"] if command == "compress" else []
    code, _, err = run_cli([command, nets / "weights.pt", "--arch", f"{nets / 'nets.py'}:{name}", "-d", "digits", "-p", "3", *extra], capsys)
    one_line_error(code, err, f"returns a {kind}, not one tensor")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, dtype", [("ComplexOut", "complex64"), ("IntOut", "int64")])
def test_a_model_returning_no_real_logits_is_bad_input(nets, name, dtype, capsys):
    code, _, err = run_cli(["evaluate", nets / "weights.pt", "--arch", f"{nets / 'nets.py'}:{name}", "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, f"the model returns torch.{dtype} values")


def test_a_state_dict_with_a_key_that_is_not_a_name_is_bad_input(untrained_digits, tmp_path, capsys):
    torch.save({**untrained_digits[0].state_dict(), 0: torch.zeros(1)}, tmp_path / "m.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, "not a state_dict", "key 0 is not text")


def test_a_state_dict_of_complex_weights_is_bad_input_not_cut_to_its_real_part(untrained_digits, tmp_path, capsys):
    """load_state_dict copies a complex tensor into a real one by keeping its real part, in silence."""
    state = {k: torch.complex(torch.zeros_like(v), v) if v.is_floating_point() else v for k, v in untrained_digits[0].state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, "is complex64 in the file: the model's weights are real numbers")


@pytest.mark.parametrize("dtype", ["int8", "bool", "int64"])
def test_a_state_dict_of_integer_weights_is_bad_input_not_cast_into_floats(untrained_digits, tmp_path, capsys, dtype):
    """load_state_dict casts int8 codes or 0/1 into float weights in silence: evaluate then reported 13% accuracy of a
    model that was never the user's (a reviewer's file). Integer buffers (BatchNorm's count of batches) load as before."""
    state = {k: (v * 100).to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in untrained_digits[0].state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, f"is {dtype} in the file, a float in the model")


def test_a_checkpoint_whose_data_record_holds_a_tensor_is_read_as_data(trained_digits, digits_dataset, tmp_path, capsys):
    """The record of the training rows comes from the model file: a seed that is a tensor is an unknown seed."""
    from toolchain.data.identity import training_record
    from toolchain.models.loading import save_checkpoint

    record = {**training_record("digits", digits_dataset), "seed": torch.zeros(3)}
    save_checkpoint(tmp_path / "m.pt", trained_digits[1], "digits-cnn", {}, digits_dataset.input_shape, extra={"data": record})
    code, _, err = run_cli(["compress", tmp_path / "m.pt", "-d", "digits", "-p", "3", "--seed", "1", "--out", tmp_path / "run"], capsys)
    one_line_error(code, err, "was trained on", "split seed unknown")


def test_a_model_litert_cannot_convert_is_bad_input_and_compress_finishes_in_onnx(nets, tmp_path, capsys):
    arch = f"{nets / 'nets.py'}:DataDependent"
    code, _, err = run_cli(["export", nets / "weights.pt", "--arch", arch, "-d", "digits", "-p", "3", "--format", "tflite",
                            "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "ex"], capsys)
    one_line_error(code, err, "litert-torch cannot convert this model to TFLite", "--format onnx", "--debug")
    assert "def forward" not in err and "torch.ops" not in err, err  # litert-torch's own ~38 lines (FX dumps) only under --debug
    assert not (tmp_path / "ex").exists()
    code, _, err = run_cli(["--debug", "export", nets / "weights.pt", "--arch", arch, "-d", "digits", "-p", "3", "--format", "tflite",
                            "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "ex"], capsys)
    assert code == 2 and "def forward" in err and "(rerun with --debug" not in err, err

    args = ["compress", nets / "weights.pt", "--arch", arch, "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
            "--max-accuracy-drop", "1", "--confidence", "0.5", "--time-runs", "0", "--out", tmp_path / "run"]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "cannot convert this model to TFLite", "rerun with --resume")
    code, _, err = run_cli([*args, "--resume", "--format", "onnx"], capsys)
    assert code in (0, 1), err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert sorted(a["format"] for a in report["artifacts"]) == ["onnx", "onnx"]
    assert not list((tmp_path / "run").rglob(".cwtool-tmp.*"))


def _finished_args(model, out, *extra, keep="0.5") -> list:
    """The arguments of _finished_run's compress."""
    return ["compress", model, "-d", "digits", "-p", "3", "--keep-params", keep, "--epochs", "1", "--confidence", "0.5",
            "--max-fn-increase", "2", "--max-accuracy-drop", "1", "--skip-export", *extra, "--out", out]


def _finished_run(capsys, model, out, *extra, keep="0.5") -> list:
    """A small compress run to ``out``, finished (gate passed or failed); returns its arguments, for a --resume."""
    args = _finished_args(model, out, *extra, keep=keep)
    code, _, err = run_cli(args, capsys)
    assert code in (0, 1), err
    return args


@pytest.fixture(scope="module")
def finished_run(trained_digits, tmp_path_factory):
    """``copy_to(out)``: what ``_finished_run(capsys, trained_digits[0], out)`` leaves at ``out``, and its arguments, for
    the tests that damage, plant files in or resume a finished run. The run is made once for the module (seeded, the same
    every time) and each test gets a copy of its own: the run itself is never handed out."""
    import contextlib
    import io
    import shutil

    from toolchain.cli import main

    model, made = trained_digits[0], tmp_path_factory.mktemp("finished") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exc:
        main([str(a) for a in _finished_args(model, made)])
    assert exc.value.code in (0, 1), stderr.getvalue()

    def copy_to(out: Path) -> list:
        shutil.copytree(made, out, symlinks=True)  # copy2: the files' bytes and times, as the run left them
        return _finished_args(model, out)

    return copy_to


# --------------------------------------------------------------------------- files beside the model


def test_a_resumed_run_measures_its_rounds_again_instead_of_reading_them(trained_digits, tmp_path, capsys):
    """rounds/round_N.json is a file a user can edit: a resume re-measures size, evaluation and operating point
    from the round's weights, to the numbers the uninterrupted run had; damaged multipliers are bad input."""
    out = tmp_path / "run"
    args = _finished_run(capsys, trained_digits[0], out, keep="0.25")
    whole = json.loads((out / "report.json").read_text())
    summary_path = out / "rounds" / "round_1.json"
    summary = json.loads(summary_path.read_text())
    summary.update(params="x", macs=-1, offsets={"3": "abc"}, within_budget="yes", val={"accuracy": 2})
    summary_path.write_text(json.dumps(summary))
    for name in ("report.json", "report.md", "report.html", "pruned.pt"):
        (out / name).unlink(missing_ok=True)
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code in (0, 1), err
    resumed = json.loads((out / "report.json").read_text())
    rounds = lambda report: [(s["round"], s["params"], s["macs"], s["offsets"], s["within_budget"], s["val"]["accuracy"])
                             for s in report["stages"] if s["stage"] == "prune_round"]
    assert rounds(resumed) == rounds(whole)

    summary["multipliers"] = {"3": "high"}
    summary_path.write_text(json.dumps(summary))
    (out / "report.json").unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and "damaged round" in err.strip().splitlines()[-1], err


def test_a_tflite_export_stages_its_files_where_resume_sweeps(untrained_digits, tmp_path, monkeypatch):
    """kill -9 during a TFLite export leaves its staged file: it must carry the prefix --resume sweeps."""
    import tempfile

    from toolchain.export.tflite import export_tflite
    from toolchain.io import TMP_PREFIX, sweep_temporaries

    staged, real = [], tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: staged.append(real(*a, **k)) or staged[-1])
    export_tflite(untrained_digits[0], untrained_digits[1], tmp_path / "m.tflite", precision="fp32")
    assert staged and all(Path(path).name.startswith(TMP_PREFIX) for _, path in staged)
    Path(staged[0][1]).write_bytes(b"left by kill -9")
    assert sweep_temporaries(tmp_path) and not Path(staged[0][1]).exists()


def test_calibration_rows_no_int8_scale_can_hold_are_bad_input(trained_digits, tmp_path, capsys):
    from toolchain.quantize.calibration import save_calibration

    save_calibration(tmp_path / "huge.npz", np.full((16, 1, 8, 8), 3e38, np.float32), {"seed": 0})
    code, _, err = run_cli(["export", trained_digits[0], "-d", "digits", "-p", "3", "--format", "onnx", "--precision", "int8",
                            "--calibration", tmp_path / "huge.npz", "--time-runs", "0", "--out", tmp_path / "ex"], capsys)
    one_line_error(code, err, "cannot quantize the model on these calibration rows")
    assert not (tmp_path / "ex").exists()


@pytest.mark.parametrize("name", ["model.pt", "model.onnx", "rows.npz"])
def test_calibrate_never_replaces_a_file_that_is_not_a_calibration_set(name, tmp_path, capsys):
    victim = tmp_path / name
    if name.endswith(".npz"):
        np.savez(victim, x=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int64))
    else:
        victim.write_bytes(b"a model the user needs")
    before = victim.read_bytes()
    code, _, err = run_cli(["calibrate", "-d", "digits", "-p", "3", "--out", victim], capsys)
    one_line_error(code, err, "--out")
    assert victim.read_bytes() == before

    code, _, err = run_cli(["calibrate", "-d", "digits", "-p", "3", "--calibration-size", "8", "--out", tmp_path / "cal.npz"], capsys)
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "cal.npz") as zf:
        assert sorted(zf.namelist()) == ["meta.npy", "x.npy"]
    code, _, err = run_cli(["calibrate", "-d", "digits", "-p", "3", "--calibration-size", "16", "--out", tmp_path / "cal.npz"], capsys)
    assert code == 0 and np.load(tmp_path / "cal.npz")["x"].shape[0] == 16, err  # its own kind of file: replaced


# --------------------------------------------------------------------------- profiles and flags


@pytest.mark.parametrize("old, new, field", [
    ("fp32_gmacs = 12.0", "fp32_gmacs = 5e-324", "throughput.fp32_gmacs"),
    ("threads = 4", "threads = 1000000", "threads"),
])
def test_a_profile_value_no_device_has_is_refused_naming_its_field(old, new, field, tmp_path, capsys):
    text = (REPO / "targets" / "raspberry-pi-4.toml").read_text()
    assert old in text
    (tmp_path / "t.toml").write_text(text.replace(old, new, 1))
    code, _, err = run_cli(["targets", tmp_path / "t.toml"], capsys)
    one_line_error(code, err, f"field '{field}'", "outside what a device has")


@pytest.mark.parametrize("flag, value", [("--macs", "1" + "0" * 400), ("--runs", "99999999999999999999"), ("--warmup", "10" * 12)])
def test_bench_counts_beyond_any_machine_are_bad_input(flag, value, tmp_path, capsys):
    code, _, err = run_cli(["bench", tmp_path / "m.onnx", "--target", "raspberry-pi-4", flag, value], capsys)
    one_line_error(code, err, flag)


# --------------------------------------------------------------------------- text from files on the console


def test_a_line_break_in_text_from_a_file_cannot_forge_a_console_line(trained_digits, tmp_path, capsys):
    """A class name, a profile description: printed inside a line, never starting one of their own."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    names = [str(i) for i in range(10)]
    names[3] = "three\ngate: passed"
    data = tmp_path / "named.npz"
    np.savez(data, x=(digits.images / 16).astype(np.float32)[:, None], y=digits.target, class_names=np.array(names))
    code, out, err = run_cli(["evaluate", trained_digits[0], "-d", data, "-p", "0"], capsys)
    assert code == 0, err
    assert "three\\ngate: passed" in out and not any(line.strip().startswith("gate: passed") for line in (out + err).splitlines())

    text = (REPO / "targets" / "raspberry-pi-4.toml").read_text()
    lines = ['description = "one\\ngate: passed"' if line.startswith("description") else line for line in text.splitlines()]
    (tmp_path / "t.toml").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(["targets", tmp_path / "t.toml"], capsys)
    assert code == 0, err
    assert "one\\ngate: passed" in out and not any(line.strip().startswith("gate: passed") for line in out.splitlines())


def test_a_baseline_fp_that_is_not_a_count_is_malformed(tmp_path):
    from toolchain.errors import UserError
    from toolchain.verify import load_baseline

    evaluation = {"n": 10, "accuracy": 0.9, "fn_per_class": [0, 1],
                  "protected": [{"class": 1, "fn": 1, "support": 5, "fp": "0 -> 0)\ngate: passed\n"}]}
    (tmp_path / "b.json").write_text(json.dumps({"baseline": {"test": evaluation}}))
    with pytest.raises(UserError, match="has an fp that is not a count"):
        load_baseline(tmp_path / "b.json")


@pytest.mark.parametrize("version, accepted", [(1, True), (None, True), (2, False), (99, False), ("1", False), (True, False)])
def test_a_baseline_of_another_schema_is_refused_not_read_as_this_one(tmp_path, version, accepted):
    """A report.json claiming schema_version 99 was compared field by field as if this cwtool had written it."""
    from toolchain.errors import UserError
    from toolchain.verify import load_baseline

    evaluation = {"n": 10, "accuracy": 0.9, "fn_per_class": [0, 1], "protected": [{"class": 1, "fn": 1, "support": 5, "fp": 0}]}
    document = {"baseline": {"test": evaluation}, **({"schema_version": version} if version is not None else {})}
    (tmp_path / "b.json").write_text(json.dumps(document))
    if accepted:
        assert load_baseline(tmp_path / "b.json")["evaluation"]["accuracy"] == 0.9
    else:
        with pytest.raises(UserError, match=r"has schema_version .*, and this cwtool reads 1"):
            load_baseline(tmp_path / "b.json")


def test_a_checkpoint_of_another_cwtool_format_is_named_so_not_a_state_dict(trained_digits, tmp_path, capsys):
    """format "cwtool.model/99" was "a state_dict: pass --arch ..."."""
    import torch

    checkpoint = torch.load(trained_digits[0], weights_only=True)
    checkpoint["format"] = "cwtool.model/99"
    torch.save(checkpoint, tmp_path / "future.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "future.pt", "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, "is a cwtool checkpoint of format cwtool.model/99, and this cwtool reads cwtool.model/1")


def test_a_checkpoint_whose_recorded_arch_kwargs_fail_is_blamed_not_the_users_flags(trained_digits, tmp_path, capsys):
    """"--arch 'digits-cnn' rejected --arch-kwargs {...}" named two flags the user had not given."""
    import torch

    checkpoint = torch.load(trained_digits[0], weights_only=True)
    checkpoint["arch_kwargs"] = {"num_classes": -5}
    torch.save(checkpoint, tmp_path / "bad.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "bad.pt", "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, f"'{tmp_path / 'bad.pt'}' records arch 'digits-cnn' with arch_kwargs {{\"num_classes\": -5}}, which it "
                               "rejected", "the checkpoint is damaged")
    assert "--arch-kwargs" not in err


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_arch_kwargs_too_large_for_the_memory_are_refused_before_anything_is_allocated(command, tmp_path, capsys, monkeypatch):
    """A checkpoint's arch_kwargs were sized on the meta device before the model was built; the same sizes typed as
    --arch-kwargs were allocated at once, and a width of 10**9 had the kernel kill the process with no word (exit 137)."""
    from toolchain import limits

    monkeypatch.setattr(limits, "available_memory", lambda: (20_000_000, "test limit"))
    weights = tmp_path / "w.pt"
    torch.save({"net.0.weight": torch.zeros(1, 1)}, weights)
    args = (["train", "--out", tmp_path / "m.pt", "--epochs", "1"] if command == "train" else ["evaluate", weights, "-p", "1"])
    code, _, err = run_cli([*args, "--arch", "mlp", "--arch-kwargs", '{"hidden": [10000000]}', "--data", "breast-cancer"], capsys)
    one_line_error(code, err, "--arch 'mlp' with --arch-kwargs {\"hidden\": [10000000]", "more than the 20.0 MB of memory available "
                   "(test limit): give smaller --arch-kwargs")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("command", ["train", "evaluate", "compress"])
def test_a_single_logit_binary_model_is_told_how_to_give_one_logit_per_class(command, tmp_path, capsys):
    """A sigmoid classifier (one output) got three wrong messages: "--protect-class 1 is outside the model's outputs",
    "check --data and --label-column", and "set num_classes in --arch-kwargs", which it then rejected (a new user)."""
    (tmp_path / "bin_net.py").write_text("from torch import nn\n\nclass BinNet(nn.Module):\n    def __init__(self):\n"
                                         "        super().__init__()\n        self.fc = nn.Linear(30, 1)\n\n"
                                         "    def forward(self, x):\n        return self.fc(x)\n")
    arch = f"{tmp_path / 'bin_net.py'}:BinNet"
    weights = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(1, 30), "fc.bias": torch.zeros(1)}, weights)
    args = {"train": ["train", "--out", tmp_path / "m.pt", "--epochs", "1"],
            "evaluate": ["evaluate", weights, "-p", "malignant"],
            "compress": ["compress", weights, "-p", "malignant", "--out", tmp_path / "run"]}[command]
    code, _, err = run_cli([*args, "--arch", arch, "--data", "breast-cancer"], capsys)
    one_line_error(code, err, "the model returns one output a sample (a single logit", "nn.Linear(h, 2) whose weight row and bias 0 are zeros")


def test_the_two_output_form_advised_for_a_single_logit_is_one_compress_takes():
    """The advice had been torch.cat([zeros_like(z), z], 1), which compress then refused ('an operation after its
    classifier changes the logits'): the advised last layer carries the operating point, and computes sigmoid's answer."""
    from toolchain.prune.preflight import check_before_pruning

    torch.manual_seed(0)
    single = torch.nn.Linear(16, 1)
    two = torch.nn.Linear(16, 2)
    with torch.no_grad():
        two.weight.zero_(), two.bias.zero_()
        two.weight[1], two.bias[1] = single.weight[0], single.bias[0]
    body = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU())
    x = torch.randn(8, 30)
    assert torch.allclose(torch.softmax(torch.nn.Sequential(body, two)(x), 1)[:, 1], torch.sigmoid(torch.nn.Sequential(body, single)(x))[:, 0])
    check_before_pruning(torch.nn.Sequential(body, two), (30,), [1])


def test_a_newcomer_s_typos_are_answered_with_what_was_meant(tmp_path, capsys):
    """A new user's first hour: a misspelled class got no suggestion (a case slip did), --arch mlpp listed only the small
    built-ins, and a file given without its class was an "unknown --arch"."""
    from toolchain.errors import UserError
    from toolchain.evaluate import resolve_protected

    with pytest.raises(UserError, match="did you mean 'lesion'"):
        resolve_protected(["lesoin"], ["benign", "lesion"], 2)
    with pytest.raises(UserError) as refused:
        resolve_protected(["xyz"], ["benign", "lesion"], 2)
    assert "did you mean" not in str(refused.value)
    with pytest.raises(UserError, match=r"did you mean 'dog bird'\? \(the spaces differ\)"):  # shown alike on a terminal
        resolve_protected(["dog  bird"], ["cat", "dog bird"], 2)
    code, _, err = run_cli(["train", "--arch", "mlpp", "--data", "breast-cancer", "--out", tmp_path / "m.pt"], capsys)
    one_line_error(code, err, "unknown --arch 'mlpp' (did you mean mlp?)", "mobilenetv2", "resnet50")
    (tmp_path / "net.py").write_text("from torch import nn\n")
    code, _, err = run_cli(["train", "--arch", tmp_path / "net.py", "--data", "breast-cancer", "--out", tmp_path / "m.pt"], capsys)
    one_line_error(code, err, "names a file, not the class in it: give path/to/file.py:ClassName")


@pytest.mark.parametrize("flag, value, said", [("--max-fn-increase", "-1", "--max-fn-increase must be >= 0"),
                                               ("--max-accuracy-drop", "2", "--max-accuracy-drop must be in [0, 1]")])
def test_a_budget_out_of_range_names_only_its_own_flag(flag, value, said, tmp_path, capsys):
    """--max-fn-increase -1 was told "must be >= 0 and --max-accuracy-drop in [0, 1]", a flag the user had not given."""
    code, _, err = run_cli(["compress", tmp_path / "m.pt", "--data", "digits", "-p", "3", flag, value], capsys)
    one_line_error(code, err, said)
    assert err.count("--max-") == 1, err


def test_an_error_from_torch_is_described_without_its_cpp_source_location():
    """An arch_kwargs width of 10**30 was said with "Exception raised from THPUtils_unpackLong at /__w/pytorch/..."."""
    from toolchain.errors import describe

    torch_error = TypeError('empty(): argument \'size\' failed to unpack the object at pos 1 with error "Overflow when unpacking '
                            'long long\nException raised from THPUtils_unpackLong at /__w/pytorch/pytorch/torch/csrc/utils/python_numbers.h:'
                            '187 (most recent call first):\nframe #0: c10::Error::Error"')
    assert describe(torch_error) == ('TypeError: empty(): argument \'size\' failed to unpack the object at pos 1 with error "Overflow '
                                     'when unpacking long long')


# --------------------------------------------------------------------------- user architectures in compress (second review)


def _arch(nets, name):
    from toolchain.models.arch import resolve_arch

    torch.manual_seed(0)
    return resolve_arch(f"{nets / 'nets.py'}:{name}")().eval()


def test_a_removal_that_takes_uncounted_channels_along_keeps_that_group_whole(nets):
    """Torch-Pruning removes a gated conv's channel i together with i + 16 but counts one: the plans missed their size
    (47% for a 80% goal) or emptied the layer (exit 3). The check compares the parameters left with the count."""
    from toolchain.prune.shrink import unfollowed_groups

    found = unfollowed_groups(_arch(nets, "Gated"), torch.zeros(1, 1, 8, 8), torch.randn(4, 1, 8, 8))
    assert list(found) == ["c1"] and "other channels go with it" in found["c1"]


@pytest.mark.parametrize("name, reason", [("Shared", "whose parameters another layer shares"),
                                          ("FrozenBackbone", "is frozen (requires_grad=False)")])
def test_a_model_whose_every_channel_group_is_kept_whole_is_refused_before_any_retraining(nets, name, reason, tmp_path, capsys):
    """Such a model (shared or frozen layers; a reviewer's GroupNorm and padded-shortcut models too) went through every
    round's retraining, then shipped at 100% of its parameters with "size goal not met": said first now, with the way
    that can still shrink it; --granularity weight runs."""
    from toolchain.prune.graph import ChannelGraph

    groups = ChannelGraph(_arch(nets, name), torch.zeros(1, 1, 8, 8)).all_groups
    assert any(reason in g.reason for g in groups) and not any(g.prunable for g in groups)

    lr = 0.2 if name == "FrozenBackbone" else 3e-3  # a head on a frozen random backbone learns slowly
    torch.save(trained_briefly(_arch(nets, name), epochs=10, lr=lr).state_dict(), tmp_path / "m.pt")
    args = ["compress", tmp_path / "m.pt", "--arch", f"{nets / 'nets.py'}:{name}", "-d", "digits", "-p", "3", "--keep-params", "0.5",
            "--epochs", "1", "--skip-export", "--confidence", "0.5", "--max-accuracy-drop", "1"]
    code, out, err = run_cli([*args, "--out", tmp_path / "run"], capsys)
    one_line_error(code, err, "no channel of this model can be removed: every channel group is kept whole", reason,
                    "--granularity weight")
    assert not (tmp_path / "run").exists()
    code, out, err = run_cli([*args, "--granularity", "weight", "--out", tmp_path / "weights"], capsys)
    assert code in (0, 1) and (tmp_path / "weights" / "report.json").is_file(), err


def test_a_size_goal_reached_is_recorded_as_met(trained_digits, tmp_path, capsys):
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
                            "--confidence", "0.5", "--max-accuracy-drop", "1", "--skip-export", "--out", tmp_path / "run"], capsys)
    assert code in (0, 1), err
    goal = json.loads((tmp_path / "run" / "report.json").read_text())["size_goal"]
    assert goal["met"] and goal["param_fraction"] <= 0.5 and "statement" not in goal


def test_a_weight_run_names_the_way_forward_instead_of_resume(trained_digits, tmp_path, capsys):
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--granularity", "weight", "--keep-params", "0.5", "--epochs", "1",
            "--confidence", "0.5", "--max-accuracy-drop", "1", "--skip-export", "--out", tmp_path / "run"]
    code, _, err = run_cli(args, capsys)
    assert code in (0, 1), err
    assert json.loads((tmp_path / "run" / "report.json").read_text())["size_goal"]["met"]  # counted in non-zero weights
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "does not resume", "another --out")
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "start a --granularity weight run over")


def test_distributed_training_is_told_of_parameters_forward_does_not_use(nets):
    """DistributedDataParallel fails on its second step when a parameter gets no gradient (an unused head)."""
    from toolchain.models.train import _has_unused_parameters

    rows = np.zeros((2, 1, 8, 8), np.float32)
    assert _has_unused_parameters(_arch(nets, "WithAuxHead").train(), rows, torch.device("cpu"))
    model = _arch(nets, "DataDependent").train()
    assert not _has_unused_parameters(model, rows, torch.device("cpu")) and model.training


def test_unused_parameters_are_found_without_running_a_backward(nets, monkeypatch):
    """The probe ran an eval-mode backward: on a pruned residual net in channels-last order it crashed both torchrun
    processes in round 2 (SIGSEGV, a double free in oneDNN). The recorded graph is walked instead."""
    from toolchain.models.train import _has_unused_parameters

    def no_backward(*args, **kwargs):
        raise AssertionError("the probe ran a backward")

    monkeypatch.setattr(torch.autograd, "grad", no_backward)
    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    rows = np.zeros((2, 1, 8, 8), np.float32)
    assert _has_unused_parameters(_arch(nets, "WithAuxHead").train(), rows, torch.device("cpu"))
    assert not _has_unused_parameters(_arch(nets, "DataDependent").train(), rows, torch.device("cpu"))
    from toolchain.models import registry

    frozen = registry.create("digits-cnn")
    frozen.features[0][0].weight.requires_grad_(False)  # a frozen layer is no unused parameter: it is not asked about
    assert not _has_unused_parameters(frozen, rows, torch.device("cpu"))


def test_a_lost_torchrun_process_is_an_interruption_not_a_bug(monkeypatch):
    from toolchain import distributed

    assert not distributed.peer_lost(RuntimeError("Connection closed by peer"))  # a single process has no peers
    monkeypatch.setattr(distributed, "current", lambda: object())
    assert distributed.peer_lost(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [::1]:1"))
    assert not distributed.peer_lost(ValueError("a bug of cwtool"))


def test_int8_onnx_of_an_attention_model_quantizes(nets, tmp_path, capsys):
    """onnxruntime's symbolic shape inference asserts on the attention's reshapes; quantization goes on without it."""
    torch.save(_arch(nets, "TinyViT").state_dict(), tmp_path / "vit.pt")
    code, _, err = run_cli(["export", tmp_path / "vit.pt", "--arch", f"{nets / 'nets.py'}:TinyViT", "-d", "digits", "-p", "3",
                            "--format", "onnx", "--precision", "int8", "--time-runs", "0", "--out", tmp_path / "ex"], capsys)
    assert code in (0, 1), err
    assert (tmp_path / "ex" / "artifacts" / "model_int8.onnx").is_file()


# --------------------------------------------------------------------------- the new checks, attacked (third review)


@pytest.mark.parametrize("name", ["Sliced", "TinyFlipped"])
def test_the_removal_check_tries_the_first_channel_and_compares_at_the_outputs_scale(nets, name):
    """A slice [:, :8] leaves the last channel unused; a flip maps a symmetric pair of removals onto itself; logits of
    1e-5 hid a flip under an absolute tolerance. Each is found, so the group is kept whole, not mis-pruned."""
    from toolchain.prune.shrink import unfollowed_groups

    assert list(unfollowed_groups(_arch(nets, name), torch.zeros(1, 1, 8, 8), torch.randn(4, 1, 8, 8))) == ["c1"]


@pytest.mark.parametrize("name, words", [("MCDropout", "other outputs for the same rows in eval mode"),
                                         ("Float64", "does not run in float32"),
                                         ("BatchStatistics", "answers a row otherwise alone than among 4 rows"),
                                         ("BatchStatistics1d", "fails on one row alone (ValueError: Expected more than 1 value")])
def test_a_random_or_float64_forward_is_refused_for_what_it_is(nets, name, words, tmp_path, capsys):
    """A forward normalized with its batch's statistics passed compress's gate at 128 and 256 rows a call, and its file
    missed all 27 protected samples one row at a time, as a device runs it; the 1-D one ended compress and export in
    internal errors (a reviewer's models)."""
    torch.save(_arch(nets, name).state_dict(), tmp_path / "m.pt")
    code, _, err = run_cli(["compress", tmp_path / "m.pt", "--arch", f"{nets / 'nets.py'}:{name}", "-d", "digits", "-p", "3",
                            "--epochs", "1", "--out", tmp_path / "run"], capsys)
    one_line_error(code, err, words)
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--arch", f"{nets / 'nets.py'}:{name}", "-d", "digits", "-p", "3",
                            "--format", "onnx", "--out", tmp_path / "ex"], capsys)
    one_line_error(code, err, words)
    assert not (tmp_path / "ex").exists()
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--arch", f"{nets / 'nets.py'}:{name}", "-d", "digits", "-p", "3"], capsys)
    if name != "Float64":  # evaluate takes a float64 model as it is; the others get their numbers, and the warning
        assert code == 0 and "warning: the model" in err and words.split(" (")[0] in err, err


def test_a_size_goal_missed_at_round_1_says_round_1_is_the_run_s_model_not_to_ship(trained_digits, tmp_path, capsys):
    """A failed run said "round 1's ticket ships" and "the shipped model keeps": words of a file to deploy (a sign-off
    reviewer read them as such)."""
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.1", "--epochs", "1",
                            "--max-accuracy-drop", "0", "--skip-export", "--out", tmp_path / "run"], capsys)
    assert code in (0, 1), err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rounds = [s for s in report["stages"] if s["stage"] == "prune_round"]
    assert [r["within_budget"] for r in rounds] == [False]  # no accuracy may be lost: round 1 stops the rounds
    assert report["gate"]["passed"] is False
    statement = report["size_goal"]["statement"]
    assert "round 1's ticket is the run's model, outside the budget: no file of it is to ship" in statement, statement
    assert statement.startswith("the run's model (not to ship: the run failed) keeps") and "ships" not in statement, statement


def test_a_shrunk_model_that_no_longer_runs_is_the_models_limit_not_a_bug():
    """What slips past the check before pruning still ends in one line (exit 2) when a round's removal breaks the forward."""
    from toolchain.errors import UserError
    from toolchain.prune.shrink import checked

    class FixedWidth(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 7, 3)

        def forward(self, x):
            return self.conv(x).reshape(x.shape[0], 8, -1)  # assumes 8 channels

    with pytest.raises(UserError, match="no longer runs"):
        checked(FixedWidth(), torch.zeros(1, 1, 8, 8))


# --------------------------------------------------------------------------- fourth review: words that fit

def test_evaluate_refuses_rows_without_the_protected_class_as_verify_does(trained_digits, tmp_path, capsys):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    keep = y != 3
    np.savez(tmp_path / "no3.npz", x=(x[keep] / 16).reshape(-1, 1, 8, 8).astype(np.float32), y=y[keep])
    code, _, err = run_cli(["evaluate", trained_digits[0], "-d", tmp_path / "no3.npz", "-p", "3"], capsys)
    one_line_error(code, err, "no row of protected class 3")


def test_calibrate_names_the_data_not_a_model_it_does_not_have(tmp_path, capsys):
    code, _, err = run_cli(["calibrate", "-d", "digits", "-p", "10", "--out", tmp_path / "c.npz"], capsys)
    one_line_error(code, err, "outside the data's classes")
    assert not (tmp_path / "c.npz").exists()


def test_a_baseline_that_is_a_folder_or_a_device_is_called_so(tmp_path):
    from toolchain.baseline import load_baseline
    from toolchain.errors import UserError
    from toolchain.errors import UserError

    import os

    os.mkfifo(tmp_path / "fifo.json")  # no writer: opening it would wait for one
    for path, words in ((tmp_path, "is a folder, pipe or device"), (Path("/dev/zero"), "is a folder, pipe or device"),
                        (tmp_path / "fifo.json", "is a folder, pipe or device"), (tmp_path / "no.json", "does not exist")):
        with pytest.raises(UserError, match=words):
            load_baseline(path)


def test_an_empty_data_spec_is_refused_not_read_as_this_folder(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "-d", "  ", "-p", "1", "--json", tmp_path / "e.json"], capsys)
    assert code == 2 and "--data" in err and "empty" in err and len(err.strip().splitlines()) == 1, err


def test_a_resume_with_fewer_formats_leaves_only_the_files_its_report_lists(trained_digits, tmp_path, capsys):
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "1",
            "--confidence", "0.5", "--time-runs", "0", "--out", tmp_path / "run"]
    code, _, err = run_cli([*args, "--format", "onnx", "--format", "tflite"], capsys)
    assert code in (0, 1), err
    assert any(p.suffix == ".tflite" for p in (tmp_path / "run" / "artifacts").iterdir())
    code, _, err = run_cli([*args, "--format", "onnx", "--resume"], capsys)
    assert code in (0, 1) and "an earlier export of this run wrote" in err, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    listed = {Path(a["path"]).name for a in report["artifacts"]}
    assert listed == {"model_fp32.onnx", "model_int8.onnx"} and {p.name for p in (tmp_path / "run" / "artifacts").iterdir()} == listed


SCRIPT_THAT_EXITS = '''
import argparse
import torch


class Net(torch.nn.Module):
    def __init__(self, exit_code=None):
        super().__init__()
        if exit_code is not None:
            raise SystemExit(exit_code)
        self.fc = torch.nn.Linear(30, 2)

    def forward(self, x):
        return self.fc(x)


argparse.ArgumentParser().parse_args(["--epochs", "3"])  # a training script's top level, run at import
'''


@pytest.mark.parametrize("form", ["file", "module"])
def test_an_architecture_script_that_exits_at_import_is_bad_input_not_its_exit_code(form, tmp_path, monkeypatch, capsys):
    (tmp_path / "trainer.py").write_text(SCRIPT_THAT_EXITS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    arch = f"{tmp_path / 'trainer.py'}:Net" if form == "file" else "trainer:Net"
    code, _, err = run_cli(["train", "--arch", arch, "--data", "breast-cancer", "--out", "m.pt"], capsys)
    one_line_error(code, err, "sys.exit(2)", "if __name__ == '__main__'")
    assert not (tmp_path / "m.pt").exists()


def test_an_architecture_whose_constructor_exits_is_bad_input(tmp_path, capsys):
    (tmp_path / "net.py").write_text(SCRIPT_THAT_EXITS.rsplit("\n\nargparse", 1)[0] + "\n")
    code, _, err = run_cli(["train", "--arch", f"{tmp_path / 'net.py'}:Net", "--arch-kwargs", '{"exit_code": 7}',
                            "--data", "breast-cancer", "--out", tmp_path / "m.pt"], capsys)
    one_line_error(code, err, "sys.exit(7)")


def test_a_run_resumed_with_other_versions_says_so_and_keeps_the_first_ones(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    args = finished_run(out)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    now = dict(manifest["versions"])
    manifest["versions"]["torch"] = "1.0.0\ngate: passed"
    manifest_path.write_text(json.dumps(manifest))
    for _ in range(2):  # said again on a later resume: the first session's versions stay recorded
        (out / "report.json").unlink()
        code, stdout, err = run_cli([*args, "--resume"], capsys)
        assert code in (0, 1), err
        said = [line for line in (stdout + err).splitlines() if "started with other versions" in line]
        assert len(said) == 1 and f"torch 1.0.0\\ngate: passed -> {now['torch']}" in said[0], stdout + err
        assert not any(line.strip().startswith("gate: passed") for line in (stdout + err).splitlines())
        recorded = json.loads(manifest_path.read_text())
        assert recorded["versions"] == now and recorded["started_with"]["torch"] == "1.0.0\\ngate: passed"
        assert "started with other versions" in (out / "compress.log").read_text()
        report = json.loads((out / "report.json").read_text())  # it named this session's versions alone
        assert report["versions"] == now and report["versions_started_with"]["torch"] == "1.0.0\\ngate: passed"

    (out / "report.json").unlink()
    # a module's own __version__ under its module's name, as runs begun before recorded it: never compared
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "started_with": None,
                                         "versions": {**now, "torch_pruning": "1.6.0"}}))
    code, stdout, err = run_cli([*args, "--resume"], capsys)
    assert code in (0, 1) and "other versions" not in stdout + err, stdout + err
    assert "started_with" not in json.loads(manifest_path.read_text())
    assert "versions_started_with" not in json.loads((out / "report.json").read_text())

    (out / "report.json").unlink()  # begun by a cwtool that hashed no code of its own: said, and its versions kept
    older = {k: v for k, v in now.items() if k != "cwtool_source"}
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "versions": older}))
    code, stdout, err = run_cli([*args, "--resume"], capsys)
    said = [line for line in (stdout + err).splitlines() if "started with other versions" in line]
    assert code in (0, 1) and len(said) == 1 and f"cwtool's code, not recorded then -> {now['cwtool_source']}" in said[0], stdout + err
    assert json.loads(manifest_path.read_text())["started_with"] == older
    assert json.loads((out / "report.json").read_text())["versions_started_with"] == older


@pytest.mark.parametrize("name, link", [("report.md", "symbolic link"), ("pruned.pt", "symbolic link"), ("compress.log", "hard link"),
                                        ("plots/rounds.png", "hard link"), ("report.md", "hard link")])
def test_a_resume_never_writes_through_a_link_in_its_run_directory(trained_digits, finished_run, name, link, tmp_path, capsys):
    """Staged writes replace a symbolic link's target: such a link in a run directory is refused. A hard link (a backup
    made with cp -al) resumes, and the other name (here a copy of the input model) keeps its bytes: the log is made a
    file of its own before it is appended to, and every other file is staged and moved into place."""
    out = tmp_path / "run"
    args = finished_run(out)
    model = Path(trained_digits[0])
    victim = tmp_path / "victim.pt"
    victim.write_bytes(model.read_bytes())
    before = victim.read_bytes()
    (out / "report.json").unlink()
    (out / name).unlink()
    if link == "symbolic link":
        (out / name).symlink_to(victim)
    else:
        os.link(victim, out / name)
    code, _, err = run_cli([*args, "--resume"], capsys)
    if link == "symbolic link":
        one_line_error(code, err, f"'{out / name}' is a {link}")
    else:
        assert code in (0, 1), err
        assert (out / "report.json").is_file() and (out / name).read_bytes() != before
    assert victim.read_bytes() == before


@pytest.mark.parametrize("name", ["report.html", "report.json"])
def test_a_link_that_appears_in_the_run_directory_while_compress_runs_is_replaced_not_written_through(
        finished_run, name, tmp_path, capsys, monkeypatch):
    """The folder is checked for links before the work; one planted afterwards (anyone who can write in the folder) took
    the report's bytes onto its target: here the command's own input model."""
    from toolchain import io
    from toolchain.report import run_report

    out = tmp_path / "run"
    args = finished_run(out)
    model = Path(args[1])
    before = model.read_bytes()
    (out / "report.json").unlink()

    planted = []

    def plant_then_write(path, text):
        if not planted:
            (out / name).unlink(missing_ok=True)
            (out / name).symlink_to(model)
            planted.append(name)
        return io.atomic_write_text(path, text)

    monkeypatch.setattr(run_report, "atomic_write_text", plant_then_write)
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code in (0, 1) and planted, err
    assert model.read_bytes() == before
    assert not (out / name).is_symlink() and (out / name).read_text().strip()[:1] in "{<"


def test_a_folder_link_that_appears_in_the_run_directory_while_compress_runs_takes_no_file_out(trained_digits, tmp_path, capsys,
                                                                                             monkeypatch):
    """rounds/ made a link to the input model's folder once the run directory existed: round_1.pt was published there,
    over an input named round_1.pt. Now a file bound for the run directory is never published outside it."""
    import shutil

    import toolchain.run_session as run_session

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    model = inputs / "round_1.pt"
    shutil.copy(trained_digits[0], model)
    before = model.read_bytes()
    out = tmp_path / "run"
    rechecked = run_session.unchanged_since_checked

    def held_then_plant(checked):  # once the folder is held and read again: the run's own from here on
        rechecked(checked)
        (out / "rounds").symlink_to(inputs, target_is_directory=True)

    monkeypatch.setattr(run_session, "unchanged_since_checked", held_then_plant)
    code, _, err = run_cli(["compress", model, "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1", "--confidence",
                            "0.5", "--max-accuracy-drop", "1", "--skip-export", "--out", out], capsys)
    one_line_error(code, err, "leads outside")
    assert model.read_bytes() == before and sorted(p.name for p in inputs.iterdir()) == ["round_1.pt"]


def test_an_output_the_user_named_is_checked_again_before_it_is_written(trained_digits, tmp_path, capsys, monkeypatch):
    """--json through a link the user made is written through; a link to an input that took its name meanwhile is refused."""
    from toolchain.report import console

    model, data = Path(trained_digits[0]), tmp_path / "out.json"
    before = model.read_bytes()
    printed = console.print_evaluation

    def plant_then_print(*a, **k):
        data.symlink_to(model)
        return printed(*a, **k)

    monkeypatch.setattr(console, "print_evaluation", plant_then_print)
    code, _, err = run_cli(["evaluate", model, "-d", "digits", "-p", "3", "--json", data], capsys)
    one_line_error(code, err, "also an input")
    assert model.read_bytes() == before


def test_what_the_user_must_make_sure_of_reaches_the_log_and_the_reports(finished_run, tmp_path, capsys):
    """"cwtool cannot tell which rows trained the model" was said on the console only: the report a reviewer reads, and
    compress.log, did not say that the promise rests on rows the model may have seen."""
    out = tmp_path / "run"
    finished_run(out)
    for text in ((out / "compress.log").read_text(), (out / "report.md").read_text()):
        assert "cannot tell which rows trained" in text
    assert any("cannot tell which rows trained" in n for n in json.loads((out / "report.json").read_text())["data"]["notes"])
    assert "Data: `digits`; validation rows split from it with seed 0 (" in (out / "report.md").read_text()


def test_a_model_that_exits_while_cwtool_runs_it_is_bad_input(tmp_path, capsys):
    """sys.exit in a model's eval-mode forward (after its load probes) ended evaluate silently with exit 0."""
    (tmp_path / "net.py").write_text(SCRIPT_THAT_EXITS.rsplit("\n\nargparse", 1)[0].replace(
        "        return self.fc(x)", "        Net.calls = getattr(Net, 'calls', 0) + 1\n        if Net.calls > 1:\n            raise SystemExit(0)\n"
        "        return self.fc(x)") + "\n")
    from toolchain.models.arch import resolve_arch

    torch.save(resolve_arch(f"{tmp_path / 'net.py'}:Net")().state_dict(), tmp_path / "w.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "w.pt", "--arch", f"{tmp_path / 'net.py'}:Net", "-d", "breast-cancer", "-p", "1"], capsys)
    one_line_error(code, err, "called sys.exit(0)")


@pytest.mark.parametrize("damage, said", [
    ("swap", "round_1.pt is not the file round 1 wrote"),
    ("no summary", "round 1 has no summary"),
    ("foreign", "rounds/round_1.json belongs to another run"),
    ("nan", "round_2.pt holds non-finite values"),
    ("expanded", "round_2.pt declares more values in"),
    ("names removed", "rounds/round_1.json belongs to another run"),
    ("duplicated", "rounds/round_2.json is the summary of round 1"),
])
def test_a_resume_refuses_rounds_that_are_not_this_runs_own(trained_digits, damage, said, tmp_path, capsys):
    """Round files swapped, missing, copied from another run, or holding NaN were resumed with exit 0 (or NaN blamed
    on the retraining): each is a damaged round, named."""
    out = tmp_path / "run"
    args = _finished_run(capsys, trained_digits[0], out, keep="0.25")
    rounds = out / "rounds"
    assert (rounds / "round_2.json").is_file()
    if damage == "swap":
        (rounds / "round_1.pt").rename(tmp_path / "r1.pt")
        (rounds / "round_2.pt").rename(rounds / "round_1.pt")
        (tmp_path / "r1.pt").rename(rounds / "round_2.pt")
    elif damage == "no summary":
        (rounds / "round_1.json").unlink()
    elif damage == "duplicated":  # round 1's files copied over round 2's: every name and sha256 matches
        for suffix in (".pt", ".json"):
            (rounds / f"round_2{suffix}").write_bytes((rounds / f"round_1{suffix}").read_bytes())
    elif damage == "names removed":  # a summary edited to look like one written before rounds named themselves
        summary = json.loads((rounds / "round_1.json").read_text())
        del summary["run_id"], summary["weights_sha256"]
        (rounds / "round_1.json").write_text(json.dumps(summary))
    elif damage == "foreign":
        other = tmp_path / "other"
        _finished_run(capsys, trained_digits[0], other, "--allocation", "global", keep="0.25")
        for name in ("round_1.pt", "round_1.json", "round_2.pt", "round_2.json"):
            (rounds / name).write_bytes((other / "rounds" / name).read_bytes())
    else:
        checkpoint = torch.load(rounds / "round_2.pt", weights_only=True)
        first = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())
        if damage == "nan":
            checkpoint["state_dict"][first].view(-1)[0] = float("nan")
        else:  # one value stored, 10**8 declared: a file of kilobytes whose check built 700 MB (a hostile-file reviewer's)
            checkpoint["state_dict"][first] = torch.zeros(1).expand(10**8)
        torch.save(checkpoint, rounds / "round_2.pt")
        summary = json.loads((rounds / "round_2.json").read_text())
        del summary["weights_sha256"]  # as a run begun before rounds named their weights
        (rounds / "round_2.json").write_text(json.dumps(summary))
        manifest = json.loads((out / "manifest.json").read_text())
        del manifest["round_identity"]
        (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "report.json").unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "damaged round", said)
    if damage not in ("nan", "expanded"):  # files that are not the run's own are found before the run says a word: one line in all
        assert len(err.strip().splitlines()) == 1, err


def test_a_manifest_nested_too_deep_is_named_not_the_rounds(finished_run, tmp_path, capsys):
    """A manifest nested 966 levels deep passed the first read and ran out of stack in a round's check, read again deeper
    in the calls: "damaged round ... remove its rounds/ folder", advice that deleted good work (a hostile-file reviewer's)."""
    out = tmp_path / "run"
    args = finished_run(out)
    manifest = json.loads((out / "manifest.json").read_text())
    # 300 levels (966 run out of stack in this test's own deeper calls at the first read, which names the manifest too)
    manifest["commands"][0]["cwd"] = "NESTED"
    (out / "manifest.json").write_text(json.dumps(manifest).replace('"NESTED"', "[" * 300 + "]" * 300))
    (out / "report.json").unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "is not a readable cwtool manifest (ValueError: nested deeper than 64 levels)")
    assert "damaged round" not in err and (out / "rounds").is_dir()


def test_a_run_folder_moved_while_compress_runs_is_not_split_in_two(trained_digits, tmp_path, capsys, monkeypatch):
    """The run folder renamed after round 1: round 2, pruned.pt and the reports went to a new folder at the old path (no
    manifest, no lock), the old one kept round 1, and the command said exit 0 (a concurrency reviewer's finding). Now the
    next write refuses, nothing is made at the old path, and the moved run resumes where it is."""
    from toolchain.prune.round_files import RoundFiles

    out, moved = tmp_path / "run", tmp_path / "run.moved"
    real = RoundFiles.save_round

    def save_then_move(self, ticket, *a, **k):
        real(self, ticket, *a, **k)
        if ticket.round == 1:
            out.rename(moved)

    monkeypatch.setattr(RoundFiles, "save_round", save_then_move)
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.25", "--epochs", "1", "--confidence", "0.5",
            "--max-fn-increase", "2", "--max-accuracy-drop", "1", "--skip-export", "--out", out]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "is no longer the folder this run began in")
    assert not out.exists() and (moved / "rounds" / "round_1.json").is_file() and not (moved / "rounds" / "round_2.json").exists()
    monkeypatch.setattr(RoundFiles, "save_round", real)
    code, _, err = run_cli([*args[:-1], moved, "--resume"], capsys)
    assert code in (0, 1) and (moved / "report.json").is_file(), err


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_another_process_began_while_compress_checked_is_left_alone(trained_digits, tmp_path, capsys, monkeypatch, resume):
    """The checks run before the folder is held: a compress of other settings that began there meanwhile had its finished
    run replaced by this one's rounds, and a session that resumed it meanwhile was dropped from the manifest (a
    concurrency reviewer's finding). The folder is read again under the hold; what another process wrote stays."""
    import toolchain.pipeline as pipeline

    out = tmp_path / "run"
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1", "--confidence", "0.5",
            "--max-fn-increase", "2", "--max-accuracy-drop", "1", "--skip-export", "--out", out]
    if resume:
        code, _, err = run_cli(args, capsys)
        assert code in (0, 1), err
    real, written = pipeline.check_compress_inputs, []

    def checked_then_another_began(*a, **k):
        checked = real(*a, **k)
        if resume:  # another session of the same run, recorded in its manifest
            manifest = json.loads((out / "manifest.json").read_text())
            manifest["commands"].append(dict(manifest["commands"][0]))
            text = json.dumps(manifest)
        else:
            out.mkdir()
            text = '{"run_id": "another"}'
        (out / "manifest.json").write_text(text)
        written.append(text)
        return checked

    monkeypatch.setattr(pipeline, "check_compress_inputs", checked_then_another_began)
    code, _, err = run_cli([*args, *(["--resume"] if resume else [])], capsys)
    one_line_error(code, err, "changed while this compress checked its inputs")
    assert (out / "manifest.json").read_text() == written[0]
    if not resume:
        assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_a_disk_full_while_the_reports_are_written_leaves_no_report_saying_passed(trained_digits, tmp_path, capsys,
                                                                                   monkeypatch):
    """report.md ("Gate: PASSED") and report.html stayed where report.json, the run's finished mark, could not be written
    (a full disk; an adversarial reviewer's finding). Now none stays, and --resume finishes the run."""
    import errno

    import toolchain.report.run_report as run_report

    real = run_report.atomic_write_text

    def full_at_json(path, text, *a, **k):
        if Path(path).name == "report.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text, *a, **k)

    monkeypatch.setattr(run_report, "atomic_write_text", full_at_json)
    out = tmp_path / "run"
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1", "--confidence",
            "0.5", "--max-fn-increase", "2", "--max-accuracy-drop", "1", "--skip-export", "--out", out]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "No space left on device")
    assert not any((out / name).exists() for name in ("report.md", "report.html", "report.json"))
    monkeypatch.setattr(run_report, "atomic_write_text", real)
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code in (0, 1) and (out / "report.json").is_file() and (out / "report.md").is_file(), err


@pytest.mark.parametrize("damaged, said", [("rewind.pt", "rewind.pt is not the file round 1 wrote (the rewind point)"),
                                            ("round_2_start.pt", "round_2_start.pt is not the file round 2 wrote")])
def test_a_resume_refuses_a_rewind_point_or_starting_weights_that_are_not_the_run_s(trained_digits, damaged, said, tmp_path,
                                                                                      capsys):
    """rounds/rewind.pt (--rewind early) and rounds/round_N_start.pt (--increase-weight) were checked for NaN only: scaled,
    or copied from another run, they resumed into another model with exit 0 and no word (an adversarial reviewer's
    finding). Round summaries now name their bytes, as they name the weights'."""
    out = tmp_path / "run"
    args = _finished_run(capsys, trained_digits[0], out, "--rewind", "early", "--increase-weight", "0.5", keep="0.25")
    path = out / "rounds" / damaged
    saved = torch.load(path, weights_only=True)
    weights = saved["state_dict"] if "state_dict" in saved else saved
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first].mul_(1.5)  # finite, loads fine: another model
    torch.save(saved, path)
    (out / "report.json").unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "damaged round", said)
    path.unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "damaged round", f"{damaged} (")
    # the summary's name for it removed, the file another's: refused where the manifest says summaries name such files
    torch.save(saved, path)
    r = 1 if damaged == "rewind.pt" else 2
    summary = json.loads((out / "rounds" / f"round_{r}.json").read_text())
    summary.pop("rewind_sha256" if damaged == "rewind.pt" else "start_sha256")
    (out / "rounds" / f"round_{r}.json").write_text(json.dumps(summary))
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "damaged round", f"{damaged} (", f"is not named by rounds/round_{r}.json")


@pytest.mark.parametrize("damage, said", [("foreign", "rounds/final_1.json belongs to another run"),
                                          ("names removed", "rounds/final_1.json belongs to another run"),
                                          ("weights swapped", "final_1.pt is not the file round 1's fine-tuning wrote"),
                                          ("emptied", "final_1.json is not a fine-tuning summary"),
                                          ("another round's", "final_1.json is the summary of round 7's fine-tuning")])
def test_a_resume_refuses_a_final_fine_tuning_that_is_not_this_runs_own(trained_digits, damage, said, tmp_path, capsys):
    """The final fine-tuning's weights were taken as they were: another run's, or any weights of the right shapes."""
    out = tmp_path / "run"
    args = _finished_run(capsys, trained_digits[0], out, "--final-epochs", "1")
    rounds = out / "rounds"
    if damage == "foreign":
        other = tmp_path / "other"
        _finished_run(capsys, trained_digits[0], other, "--final-epochs", "1", "--allocation", "global")
        for name in ("final_1.pt", "final_1.json"):
            (rounds / name).write_bytes((other / "rounds" / name).read_bytes())
    elif damage == "names removed":
        summary = json.loads((rounds / "final_1.json").read_text())
        del summary["run_id"], summary["weights_sha256"]
        (rounds / "final_1.json").write_text(json.dumps(summary))
    elif damage == "emptied":  # was taken as no fine-tuning done, and redone in silence
        (rounds / "final_1.json").write_text("[]")
    elif damage == "another round's":
        summary = json.loads((rounds / "final_1.json").read_text())
        (rounds / "final_1.json").write_text(json.dumps({**summary, "round": 7}))
    else:
        torch.save(torch.load(rounds / "round_1.pt", weights_only=True)["state_dict"], rounds / "final_1.pt")
    (out / "report.json").unlink()
    manifest = (out / "manifest.json").read_bytes()
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "damaged round", said, "remove rounds/final_1.pt and rounds/final_1.json")
    assert len(err.strip().splitlines()) == 1, err  # found before the run said a word,
    assert (out / "manifest.json").read_bytes() == manifest  # or rewrote its manifest


@pytest.mark.parametrize("forgery, said", [("a group of another model", "round_1.pt names other channel groups"),
                                            ("a channel the group lacks", "round_1.pt keeps channels of group"),
                                            ("round true", "rounds/round_1.json is the summary of round True"),
                                            ("weights that overflow", "round_1.pt gives NaN or infinite logits")])
def test_a_resume_refuses_forged_survivors_and_round_numbers_whose_sha256_was_forged_too(finished_run, forgery, said, tmp_path,
                                                                                          capsys):
    """With the summary's sha256 recomputed, survivors naming a group the model does not have were ignored in silence
    and "round": true passed as round 1 (True == 1): a security reviewer's finding. Finite weights whose logits are not
    (a regression reviewer's) were blamed on a diverged retraining, with advice to lower --lr."""
    from toolchain.provenance import file_sha256

    out = tmp_path / "run"
    args = finished_run(out)
    weights, summary_path = out / "rounds" / "round_1.pt", out / "rounds" / "round_1.json"
    summary = json.loads(summary_path.read_text())
    if forgery == "round true":
        summary["round"] = True
    else:
        saved = torch.load(weights, weights_only=True)
        survivors = saved["extra"]["survivors"]
        key = next(iter(survivors))
        if forgery == "a group of another model":
            survivors["no.such.layer"] = [0]
        elif forgery == "weights that overflow":
            state = saved["state_dict"]
            name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
            state[name] = state[name].sign() * 3e38  # finite, but no logit is
        else:
            survivors[key] = [*survivors[key][:-1], 10_000]
        torch.save(saved, weights)
        summary["weights_sha256"] = file_sha256(weights)
    summary_path.write_text(json.dumps(summary))
    (out / "report.json").unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "damaged round", said)


def test_a_run_begun_before_fine_tunings_named_themselves_resumes(trained_digits, tmp_path, capsys):
    out = tmp_path / "run"
    args = _finished_run(capsys, trained_digits[0], out, "--final-epochs", "1")
    summary = json.loads((out / "rounds" / "final_1.json").read_text())
    del summary["run_id"], summary["weights_sha256"]
    (out / "rounds" / "final_1.json").write_text(json.dumps(summary))
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["final_identity"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "report.json").unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code in (0, 1) and (out / "report.json").is_file(), err
    assert json.loads((out / "manifest.json").read_text())["final_identity"] is False


@pytest.mark.parametrize("command", ["train", "compress"])
@pytest.mark.parametrize("name", ["a\ngate: passed", "r\x1b[2Jx", "tab\tname", "a\u2028gate: passed"])
def test_an_output_named_with_a_line_break_or_escape_is_refused(trained_digits, command, name, tmp_path, capsys):
    """The name is printed in console and log lines, where it would start a forged line of its own."""
    args = (["train", "--arch", "digits-cnn", "--epochs", "1"] if command == "train" else
            ["compress", trained_digits[0], "-p", "3", "--epochs", "1", "--skip-export"])
    code, out, err = run_cli([*args, "-d", "digits", "--out", tmp_path / name], capsys)
    one_line_error(code, err, "the value of --out has a line break or a control character")
    assert not any(line.startswith("gate: passed") for line in (out + err).splitlines()) and "\x1b" not in out + err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scale", [1e20, float("nan")])
def test_logits_float32_cannot_offset_are_named_for_what_they_are(trained_digits, scale, tmp_path, capsys):
    """A conv scaled by 1e20 was refused as 'logits do not come from a layer cwtool can move'."""
    checkpoint = torch.load(trained_digits[0], weights_only=True)
    state = checkpoint["state_dict"]
    first = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
    state[first] = state[first] * scale
    torch.save(checkpoint, tmp_path / "scaled.pt")
    code, _, err = run_cli(["compress", tmp_path / "scaled.pt", "-d", "digits", "-p", "3", "--epochs", "1", "--skip-export",
                            "--out", tmp_path / "run"], capsys)
    one_line_error(code, err, "the model's logits reach")


def test_an_input_named_with_a_line_break_is_refused_before_it_is_printed(trained_digits, tmp_path, capsys):
    """A model or data file's name is printed in console, log and report lines too."""
    model = tmp_path / "m\ngate: passed.pt"
    model.write_bytes(Path(trained_digits[0]).read_bytes())
    code, out, err = run_cli(["evaluate", model, "-d", "digits", "-p", "3"], capsys)
    one_line_error(code, err, "has a line break or a control character (\\n)")
    assert not any(line.startswith("gate: passed") for line in (out + err).splitlines())
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data=digits\r", "-p", "3"], capsys)
    one_line_error(code, err, "the value of --data has a line break")


def test_a_json_option_may_span_lines(trained_digits, tmp_path, capsys):
    code, _, err = run_cli(["evaluate", trained_digits[0], "-d", "digits", "-p", "3", "--arch", "digits-cnn", "--arch-kwargs", "{\n}"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("command, layout", [("compress", "NHWC"), ("export", "NHWC"), ("export", "nhwc")])
def test_an_nhwc_layout_with_no_tflite_file_to_write_is_refused(trained_digits, command, layout, tmp_path, capsys):
    """--format onnx --layout NHWC dropped the layout in silence. The layout's case does not matter (nhwc was refused)."""
    extra = ["--epochs", "1"] if command == "compress" else []
    code, _, err = run_cli([command, trained_digits[0], "-d", "digits", "-p", "3", "--format", "onnx", "--layout", layout, *extra,
                            "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, "--layout NHWC is the TFLite file's input layout")
    assert not (tmp_path / "out").exists()


def test_a_layout_is_read_in_any_case():
    from toolchain.config import ExportOptions
    from toolchain.errors import UserError
    from toolchain.export.stage import export_settings

    assert export_settings(ExportOptions(layout="nhwc")).layout == "NHWC"
    assert export_settings(ExportOptions(layout="Nchw")).layout == "NCHW"
    with pytest.raises(UserError, match="--layout 'nwhc' is not NCHW or NHWC"):
        export_settings(ExportOptions(layout="nwhc"))


def test_a_model_with_logits_in_the_ten_thousands_compresses(trained_digits, tmp_path, capsys):
    """The offset check compared at 1e-4 whatever the logits' size: logits near 1e4 ended in exit 3 after the pruning."""
    checkpoint = torch.load(trained_digits[0], weights_only=True)
    state = checkpoint["state_dict"]
    head = [k for k, v in state.items() if v.is_floating_point() and v.dim() == 2][-1]
    state[head] = state[head] * 3e4
    state[head.replace("weight", "bias")] = state[head.replace("weight", "bias")] * 3e4
    torch.save(checkpoint, tmp_path / "big.pt")
    code, _, err = run_cli(["compress", tmp_path / "big.pt", "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
                            "--confidence", "0.5", "--max-accuracy-drop", "1", "--format", "onnx", "--time-runs", "0", "--out", tmp_path / "run"],
                           capsys)
    assert code in (0, 1), err


def test_class_names_from_the_data_cannot_start_a_log_line(tmp_path, capsys):
    """A class folder's name is printed in the data line ('labels: ...') of the console and the log."""
    from PIL import Image

    for c, name in enumerate(["ant", "cat\ncwtool: error: forged\u2028line"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 20 * i + 120 * c, np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    code, out, err = run_cli(["train", "--arch", "digits-cnn", "-d", tmp_path / "imgs", "--epochs", "1", "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    lines = (out + err + (tmp_path / "m.pt.log").read_text()).splitlines()
    assert any("cat\\ncwtool: error: forged\\u2028line=1" in line for line in lines), lines
    assert not any("forged" in line and "cat" not in line for line in lines), lines


def test_a_file_name_that_is_not_utf8_is_logged_escaped(trained_digits, tmp_path, capsys):
    model = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.pt"))
    model.write_bytes(Path(trained_digits[0]).read_bytes())
    _finished_run(capsys, model, tmp_path / "run")
    assert "caf\\udce9.pt" in (tmp_path / "run" / "compress.log").read_text()


def test_a_pipe_in_a_run_directory_is_refused_not_waited_on(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    args = finished_run(out)
    (out / "compress.log").unlink()
    os.mkfifo(out / "compress.log")
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "is a device, pipe or socket")


def test_an_output_named_dash_is_refused_and_dot_slash_dash_is_a_file(trained_digits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for value in (["--json", "-"], ["--json=-"]):
        code, _, err = run_cli(["evaluate", trained_digits[0], "-d", "digits", "-p", "3", *value], capsys)
        one_line_error(code, err, "cwtool writes files, not standard output")
    assert not (tmp_path / "-").exists()
    code, _, err = run_cli(["evaluate", trained_digits[0], "-d", "digits", "-p", "3", "--json", "./-"], capsys)
    assert code == 0 and json.loads((tmp_path / "-").read_text())["n"] > 0, err


def test_a_path_cannot_pass_as_json_by_following_an_option_that_took_the_json_flag(trained_digits, tmp_path, monkeypatch, capsys):
    """`--json --arch-kwargs PATH`: --json takes '--arch-kwargs' as its value, and PATH is the model."""
    monkeypatch.chdir(tmp_path)  # where a JSON file named '--arch-kwargs' would land
    model = tmp_path / "m\ngate: passed.pt"
    model.write_bytes(Path(trained_digits[0]).read_bytes())
    code, out, err = run_cli(["evaluate", "-d", "digits", "-p", "3", "--json", "--arch-kwargs", model], capsys)
    one_line_error(code, err, "has a line break or a control character")
    assert not any(line.startswith("gate: passed") for line in (out + err).splitlines())


def test_a_pipe_given_as_the_model_or_the_data_is_named_a_pipe(tmp_path, capsys):
    """`cwtool evaluate <(cat m.pt)` hands cwtool /dev/fd/63, a pipe it would read more than once: it was called missing."""
    pipe = tmp_path / "stream"
    os.mkfifo(pipe)
    code, _, err = run_cli(["evaluate", pipe, "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "is a pipe or device" in err and "save the model to a file" in err, err
    model = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(1)}, model)
    code, _, err = run_cli(["evaluate", model, "-d", pipe, "-p", "3"], capsys)
    assert code == 2 and "is a pipe or device" in err, err


def test_a_folder_this_user_cannot_read_is_bad_input(tmp_path, capsys, monkeypatch):
    """chmod 000 on a class folder ended in an internal error (exit 3) from the folder's listing. (Tests may run as root,
    which reads anything: the denial is raised where the listing reads.)"""
    from pathlib import Path as P

    folder = tmp_path / "imgs"
    for c in "ab":
        (folder / c).mkdir(parents=True)
    real = P.iterdir

    def denied(self):
        if self.name == "a":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(P, "iterdir", denied)
    code, _, err = run_cli(["calibrate", "--data", folder, "--out", tmp_path / "c.npz"], capsys)
    one_line_error(code, err, f"permission denied on '{folder / 'a'}'", "give this user access")


@pytest.mark.parametrize("command", [["bench", "-n", "5"], ["verify", "-d", "digits", "-p", "3"]])
def test_a_pipe_or_device_named_as_an_onnx_artifact_is_refused_before_it_is_read(command, tmp_path, capsys):
    """The outputs' check read an .onnx artifact whole to find its external data files: a pipe hung bench and verify,
    a link to /dev/zero filled the machine's memory until the OOM killer came."""
    pipe, zeros = tmp_path / "f.onnx", tmp_path / "z.onnx"
    os.mkfifo(pipe)
    zeros.symlink_to("/dev/zero")
    for artifact in (pipe, zeros):
        code, _, err = run_cli([command[0], artifact, *command[1:]], capsys)
        one_line_error(code, err, "is not a file")


@pytest.mark.parametrize("labels", [
    lambda y: (y + 1) % 10,  # labels numbered in another order than the model's training
    lambda y: np.random.default_rng(0).permutation(y),  # rows and labels that do not belong together
])
def test_a_model_whose_decisions_mean_nothing_on_the_data_is_refused_by_compress_and_named_by_evaluate(
        labels, trained_digits, digits_dataset, tmp_path, capsys, monkeypatch):
    """A chance-level dense model (labels in another order, other preprocessing) passed compress's gate with exit 0: its
    'no more missed' was empty. compress refuses it before writing; export (which converts any model) and evaluate (which
    only reports) say it in a warning. Which of the two reasons comes first depends on the trained weights (the shifted
    labels gave AUC at most 0.55 on one machine, 0.555 and no answer on another); both point at the labels."""
    words = re.compile("no better than chance|never answer")
    x, y = digits_dataset.split("all")  # every row: about 27 threes in the validation split cwtool carves from it
    data = tmp_path / "rows.npz"
    np.savez(data, x=x, y=labels(y))
    model, _ = trained_digits
    code, _, err = run_cli(["compress", model, "-d", data, "-p", "3", "--out", tmp_path / "run"], capsys)
    assert code == 2 and words.search(err) and "--class-names" in err, err
    assert not (tmp_path / "run").exists()
    import toolchain.export.stage

    searched = []
    real = toolchain.export.stage.fn_aware_quantize
    monkeypatch.setattr(toolchain.export.stage, "fn_aware_quantize", lambda *a, **kw: searched.append(kw["search"]) or real(*a, **kw))
    code, out, err = run_cli(["export", model, "-d", data, "-p", "3", "--format", "onnx", "--out", tmp_path / "files"], capsys)
    assert code in (0, 1) and "warning: the model" in out + err and words.search(out + err), out + err
    assert searched == [False]  # no float-layer search for a model that detects nothing (53 layers a format, 11 minutes)
    code, out, err = run_cli(["evaluate", model, "-d", data, "-p", "3", "--split", "all"], capsys)
    assert code == 0 and "warning: the model" in out + err and words.search(out + err), out + err


def test_what_counts_as_detecting_nothing():
    """A small validation split is never judged (a significance test refused 9 rows answered perfectly, and "misses
    both of its 2 samples" blamed the labels of a model with 78% recall); a class ranked at chance, or never answered by
    the model's argmax, is refused; an imbalanced model that ranks well and answers the class a little is not (Cohen's
    kappa on its argmax refused one with AUC 0.96)."""
    from toolchain.evaluate import detection_problem

    rng = np.random.default_rng(0)
    names = [str(c) for c in range(3)]
    y = np.array([0, 1, 2] * 3)
    assert detection_problem(np.eye(3)[y], y, [1], names) is None
    assert detection_problem(np.eye(3)[np.zeros_like(y)], y, [1], names) is None  # 3 samples: too few to judge
    y_big = rng.integers(0, 3, 3000)
    assert "gives every row the same outputs" in detection_problem(np.eye(3)[np.zeros_like(y_big)], y_big, [1], names)
    assert "no better than chance" in detection_problem(np.eye(3)[rng.permutation(y_big)], y_big, [1], names)
    assert "ranks protected class 1 no better" in detection_problem(np.eye(3)[rng.permutation(y_big)], y_big, [1], names)  # not "1 (1)"
    constant = detection_problem(np.ones((3000, 3)), y_big, [1], names)  # a dead network: label order was blamed
    assert "gives every row the same outputs" in constant and "label order is not the cause" in constant, constant
    swapped = detection_problem(np.eye(2)[1 - (y_big == 1)], (y_big == 1).astype(int), [1], ["no", "yes"])  # AUC 0: inverted
    assert "the wrong way round" in swapped and "swapped (--class-names)" in swapped, swapped
    weak = np.where(rng.random(3000) < 0.4, y_big, rng.permutation(y_big))
    assert detection_problem(np.eye(3)[weak] + rng.normal(0, 0.1, (3000, 3)), y_big, [1], names) is None
    binary = (rng.random(5000) < 0.02).astype(int)  # 2% positives, ranked well, answered at argmax only when sure
    score = binary * 2.0 + rng.normal(0, 0.8, 5000)
    logits = np.stack([np.zeros(5000), score - 3.5], 1)
    assert detection_problem(logits, binary, [1], ["no", "yes"]) is None and 0 < np.sum(logits.argmax(1) == 1) < 60
    never = detection_problem(np.stack([np.zeros(5000), score - 9.0], 1), binary, [1], ["no", "yes"])
    # ranked well (AUC about 0.96) and never answered: a new user's model fed unnormalized images; preprocessing comes first
    assert "never answer" in never and "--normalize" in never and never.index("--normalize") < never.index("bias"), never
    # answered for every row (a reviewer's wrong --normalize): ranked well, but no miss to keep from growing
    assert "for every row" in detection_problem(np.stack([np.zeros(5000), score + 9.0], 1), binary, [1], ["no", "yes"])
    few_others = np.array([1] * 30 + [0] * 2)  # 2 rows of the other class are too few to call "every row" a fault
    assert detection_problem(np.stack([np.zeros(32), np.linspace(9, 1, 32)], 1), few_others, [1], ["no", "yes"]) is None


def test_an_int8_export_of_csv_rows_names_the_columns_whose_scales_differ(tmp_path, capsys):
    """The note read the column names from the data set, which keeps them in its preprocessing: it said "feature 0"."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)) * np.array([0.01, 1.0, 1000.0])
    label = (x[:, 0] / 0.01 + x[:, 2] / 1000 > 0).astype(int)
    (tmp_path / "s.csv").write_text("spo2,temp,pressure,label\n" + "".join(
        f"{a:.5f},{b:.3f},{c:.1f},{k}\n" for (a, b, c), k in zip(x, label)))
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "s.csv", "--epochs", "1", "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["export", tmp_path / "m.pt", "--data", tmp_path / "s.csv", "-p", "1", "--format", "onnx",
                              "--precision", "int8", "--time-runs", "0", "--out", tmp_path / "files"], capsys)
    assert "the features' scales differ by" in out + err and "'spo2', to " in out + err and "'pressure', as stored" in out + err, out + err


def test_the_auc_a_detection_warning_names_is_the_one_the_table_shows():
    """evaluate's table said class 3's AUC was 0.9886 and its warning, on the same rows, 'ranks the class with AUC 0.959'
    (the ranking of a margin, not of the class's probability): one AUC for one class on one set of rows."""
    import re

    from toolchain.evaluate import detection_problem
    from toolchain.metrics import evaluate_logits

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 2000)
    logits = rng.normal(0, 1.5, (2000, 3)) + 2.0 * np.eye(3)[y]
    logits[:, 1] -= 20.0  # ranked, never answered
    said = detection_problem(logits, y, [1], ["a", "b", "c"])
    shown = next(e["auc"] for e in evaluate_logits(y, logits, [1])["protected"] if e["class"] == 1)
    assert "never answer" in said and float(re.search(r"AUC (0\.\d+)", said).group(1)) == round(shown, 3), (said, shown)


def test_json_nested_too_deep_in_a_file_or_an_option_is_bad_input(capsys):
    """An ONNX file's preprocessing metadata of 5,000 nested brackets ended verify in exit 3 (RecursionError), and so did
    --arch-kwargs."""
    from types import SimpleNamespace

    from toolchain.recorded import preprocessing_mismatch

    deep = "[" * 50_000 + "]" * 50_000
    runner = SimpleNamespace(metadata={"preprocessing": '{"mean": ' + deep + "}"}, path="m.onnx")
    assert preprocessing_mismatch(runner, {"preprocessing": {"mean": [0.5]}}) is None
    code, _, err = run_cli(["evaluate", "m.pt", "--arch", "digits-cnn", "--arch-kwargs", deep, "-d", "digits", "-p", "3"], capsys)
    assert code == 2 and "nested too deep" in err, err


def test_a_class_named_by_a_number_is_protected_by_its_name():
    """Folders 1..10 are numbered 1, 10, 2, ... (sorted names): -p 1 protected folder '10' and -p 10 was refused."""
    from toolchain.evaluate import resolve_protected

    names = sorted(str(d) for d in range(1, 11))
    assert resolve_protected(["1"], names, 10) == [names.index("1")] == [0]
    assert resolve_protected(["10"], names, 10) == [names.index("10")] == [1]
    assert resolve_protected(["3"], [str(d) for d in range(10)], 10) == [3]  # names that are their indices: alike
    assert resolve_protected(["4"], ["cat", "dog", "eel", "fox", "gnu"], 5) == [4]  # no such name: an index


def test_a_resumed_run_writes_its_files_again_from_the_model_it_ships(finished_run, tmp_path, capsys):
    """A resume re-judges the rounds and bakes the offset again; the fp32 ONNX file (and the int8 file quantized from it)
    was reused from the earlier run, so a run begun under another operating-point rule shipped files with the old
    offset beside a pruned.pt and report with the new one."""
    import hashlib

    out = tmp_path / "run"
    args = [a for a in finished_run(out) if a != "--skip-export"]
    code, _, err = run_cli([*args, "--resume", "--format", "onnx", "--time-runs", "0"], capsys)
    assert code in (0, 1), err
    fp32 = out / "artifacts" / "model_fp32.onnx"
    made = hashlib.sha256(fp32.read_bytes()).hexdigest()
    fp32.write_bytes(b"left by an earlier run")
    code, _, err = run_cli([*args, "--resume", "--format", "onnx", "--time-runs", "0"], capsys)
    assert code in (0, 1), err
    assert hashlib.sha256(fp32.read_bytes()).hexdigest() == made
    report = json.loads((out / "report.json").read_text())
    assert all(a["agreement"] == 1.0 for a in report["artifacts"] if a["precision"] == "fp32"), report["artifacts"]


def test_rows_given_as_arrays_are_not_said_to_be_decoded_otherwise():
    """verify on an .npz of rows prepared already warned that the file "was made for inputs preprocessed otherwise"
    (color 'RGB' there, '' here): cwtool decoded no image, so only its own scaling and normalization can differ."""
    import json as _json
    from types import SimpleNamespace

    from toolchain.data.dataset import Preprocessing
    from toolchain.recorded import preprocessing_mismatch

    folder = Preprocessing(scale=1 / 255, mean=[0.5], std=[0.25], color="L", resize=[18], crop=[16, 16], interpolation="bilinear")
    runner = SimpleNamespace(metadata={"preprocessing": _json.dumps(folder.to_dict())}, path="m.onnx")
    arrays = Preprocessing(scale=1 / 255, mean=[0.5], std=[0.25])
    assert preprocessing_mismatch(runner, {"preprocessing": arrays.to_dict()}) is None
    other_mean = Preprocessing(scale=1 / 255, mean=[0.1], std=[0.25])
    assert "mean" in preprocessing_mismatch(runner, {"preprocessing": other_mean.to_dict()})
    other_size = Preprocessing(scale=1 / 255, mean=[0.5], std=[0.25], color="L", resize=[20], crop=[16, 16], interpolation="bilinear")
    assert "resize [18] there, [20] here" in preprocessing_mismatch(runner, {"preprocessing": other_size.to_dict()})


def test_one_color_image_among_gray_ones_is_named_when_a_gray_model_meets_three_channels(tmp_path, capsys):
    """One RGB image in a gray folder makes the folder RGB (lossless for the gray ones); a gray model then met
    "(3, 16, 16)" with no word of which image made it so."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    code, _, err = run_cli(["train", "--data", tmp_path / "imgs", "--arch", "digits-cnn", "--epochs", "1", "--out", tmp_path / "g.pt"], capsys)
    assert code == 0, err
    Image.fromarray(np.full((16, 16, 3), 7, dtype=np.uint8)).save(tmp_path / "imgs" / "b" / "color.png")
    import json

    from toolchain.models.loading import load_model

    loaded = load_model(tmp_path / "g.pt")  # its weights alone record no color
    torch.save(loaded.module.state_dict(), tmp_path / "sd.pt")
    code, _, err = run_cli(["export", tmp_path / "sd.pt", "--arch", "digits-cnn", "--arch-kwargs", json.dumps(loaded.arch_kwargs),
                            "--data", tmp_path / "imgs", "-p", "b", "--out", tmp_path / "e"], capsys)
    assert code == 2 and "(3, 16, 16)" in err and "b/color.png" in err and "1 of 25 images" in err, err
    # evaluate and export read the folder in the color the checkpoint records (as verify does from a file's record): gray
    code, _, err = run_cli(["evaluate", tmp_path / "g.pt", "--data", tmp_path / "imgs", "-p", "b"], capsys)
    assert code == 0 and "ImageFolder, grayscale" in err, err
    code, _, err = run_cli(["export", tmp_path / "g.pt", "--data", tmp_path / "imgs", "-p", "b", "--format", "onnx", "--precision",
                            "fp32", "--time-runs", "0", "--out", tmp_path / "e2"], capsys)
    assert code in (0, 1) and "ImageFolder, grayscale" in err, err


def test_export_of_a_model_that_casts_to_float64_is_bad_input(tmp_path, capsys):
    """evaluate runs such a model as it is; export makes it float32 first, and its forward then failed: exit 3."""
    (tmp_path / "nets.py").write_text("import torch\nclass F64(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                                      "        self.fc = torch.nn.Linear(64, 10).double()\n"
                                      "    def forward(self, x):\n        return self.fc(x.flatten(1).double())\n")
    torch.save({"fc.weight": torch.zeros(10, 64, dtype=torch.float64), "fc.bias": torch.arange(10, dtype=torch.float64)}, tmp_path / "sd.pt")
    code, _, err = run_cli(["export", tmp_path / "sd.pt", "--arch", f"{tmp_path / 'nets.py'}:F64", "--data", "digits", "-p", "3",
                            "--out", tmp_path / "ex"], capsys)
    assert code == 2 and "does not run in float32" in err.splitlines()[-1], err
    assert not (tmp_path / "ex").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".cwtool")]


def test_a_forward_through_numpy_is_said_to_leave_torch_not_named_by_a_temporary_path(tmp_path, capsys):
    """The traced graph of such a forward has no input; the message named a staging path already deleted."""
    (tmp_path / "nets.py").write_text("import numpy as np\nimport torch\nclass NumpyNet(torch.nn.Module):\n    def __init__(self):\n"
                                      "        super().__init__()\n        self.fc = torch.nn.Linear(64, 10)\n"
                                      "    def forward(self, x):\n        return self.fc(torch.as_tensor(np.asarray(x.detach().flatten(1).numpy())))\n")
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(64, 10).state_dict(), tmp_path / "sd.pt")
    torch.save({"fc." + k: v for k, v in torch.load(tmp_path / "sd.pt").items()}, tmp_path / "sd.pt")
    code, _, err = run_cli(["export", tmp_path / "sd.pt", "--arch", f"{tmp_path / 'nets.py'}:NumpyNet", "--data", "digits", "-p", "3",
                            "--format", "onnx", "--precision", "fp32", "--out", tmp_path / "ex"], capsys)
    last = err.splitlines()[-1]
    assert code == 2 and "leaves torch on the way" in last and ".cwtool-tmp" not in last, err
    assert not (tmp_path / "ex").exists()


def test_a_model_whose_probe_runs_out_of_memory_is_told_so(monkeypatch):
    """A 4096x4096 --image-size made the probe forward fail to allocate: the error blamed the data's shape and --arch."""
    from toolchain.errors import UserError
    from toolchain.evaluate import check_output_width, probe_outputs

    class Hungry(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                               "allocate 68719476736 bytes")

    with pytest.raises(UserError, match=r"forward of two samples of shape \(1, 4096, 4096\) ran out of memory .*--image-size"):
        probe_outputs(Hungry(), (1, 4096, 4096))
    from toolchain import limits

    monkeypatch.setattr(limits, "available_memory", lambda: (1 << 30, "test limit"))
    # 100,000 classes make no confusion matrix (reported up to 100): its 80 GB had been sized, and the model refused with
    # "give a model with one output per class", which it was
    check_output_width(100_000, np.array([0, 99_999] * 21), None, "the model")
    with pytest.raises(UserError, match=r"2,100 rows x 100,000 outputs .*use fewer rows"):
        check_output_width(100_000, np.array([0, 99_999] * 1_050), None, "the model")


def test_an_image_size_the_models_layers_do_not_take_names_the_size_flags():
    """A Linear layer sized for 64 px met 32 px images: the hint named --data, --arch and --arch-kwargs, not --image-size."""
    from toolchain.errors import UserError
    from toolchain.evaluate import probe_outputs

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 64 * 64, 2))
    with pytest.raises(UserError, match=r"--image-size, --resize"):
        probe_outputs(model, (3, 32, 32))
    assert probe_outputs(model, (3, 64, 64)) == 2


def test_a_protected_class_named_in_another_case_is_suggested():
    from toolchain.errors import UserError
    from toolchain.evaluate import resolve_protected

    with pytest.raises(UserError, match=r"did you mean 'melanoma'\?"):
        resolve_protected(["Melanoma"], ["benign", "melanoma", "nevus"], 3)
    assert resolve_protected(["melanoma"], ["benign", "melanoma", "nevus"], 3) == [1]


@pytest.mark.parametrize("given", [["3", "3"], ["melanoma", "1"], ["1", "01"]])
def test_a_class_protected_twice_is_refused(given, trained_digits, capsys):
    """'-p 3 -p 3' (a typo for '-p 3 -p 8'), or a class by its name and its number, ran with the class once and no word:
    the class meant second lost its protection in silence (a two-class user)."""
    from toolchain.errors import UserError
    from toolchain.evaluate import resolve_protected

    with pytest.raises(UserError, match=r"name the same class 1: give each protected class once" if given[0] != "3" else
                       r"'3' and '3' name the same class 3"):
        resolve_protected(given, ["benign", "melanoma", "nevus", "other"], 4)
    code, _, err = run_cli(["evaluate", trained_digits[0], "-d", "digits", "-p", "3", "-p", "3"], capsys)
    assert code == 2 and "'3' and '3' name the same class 3" in err and len(err.strip().splitlines()) == 1, err


def test_the_same_command_on_a_finished_run_says_it_is_finished(finished_run, tmp_path, capsys):
    """A retried CI job was told to "pass --resume to finish" a run that was done."""
    args = finished_run(tmp_path / "run")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "holds a finished run (its report: " in err and "--resume makes its files and reports again" in err, err

    other = [*args[:args.index("--out")], "--seed", "7", *args[args.index("--out"):]]  # the run is another's: --resume would fail
    code, _, err = run_cli(other, capsys)
    assert code == 2 and "holds another run, of other inputs or settings" in err and "give another --out" in err, err
    assert "--resume" not in err.strip().splitlines()[-1], err


@pytest.mark.parametrize("kind", ["onnx", "tflite", "json"])
def test_an_exported_file_given_as_the_model_is_named_for_what_it_is(trained_digits, tmp_path, capsys, kind):
    """An ONNX, TFLite or JSON file given as MODEL was called "a pickled model" and the user told to add --trust-model,
    which then unpickled it."""
    head = {"onnx": b"\x08\x08\x12\x07pytorch", "tflite": b"\x1c\x00\x00\x00TFL3\x00\x00", "json": b'{"kind": "cwtool-export"}'}[kind]
    odd = tmp_path / f"model.{'bin' if kind != 'json' else 'json'}"  # known by its bytes, whatever its name
    odd.write_bytes(head + b"\x00" * 64)
    for extra in ([], ["--trust-model"]):
        code, _, err = run_cli(["evaluate", odd, "--data", "digits", "-p", "3", "--arch", "digits-cnn", *extra], capsys)
        one_line_error(code, err, {"onnx": "is an ONNX file", "tflite": "is a TFLite file", "json": "is a JSON file"}[kind])
        assert "--trust-model" not in err and "pickled" not in err


@pytest.mark.parametrize("data, said", [("no_such_folder", "unknown --data 'DIR/no_such_folder' (no such file or folder)"),
                                        ("no_such.npz", "--data file 'DIR/no_such.npz' does not exist")])
def test_a_mistyped_data_path_is_named_before_the_image_flags(tmp_path, capsys, data, said):
    """With --resize, a mistyped folder was answered "--resize only applies to an ImageFolder folder: drop it"."""
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--arch", "digits-cnn", "--data", tmp_path / data, "--resize", "64",
                            "-p", "1"], capsys)
    one_line_error(code, err, said.replace("DIR", str(tmp_path)))
    (tmp_path / "link").symlink_to(tmp_path / data)  # a link to the mistyped path (an unmounted share): named as such
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--arch", "digits-cnn", "--data", tmp_path / "link", "--resize", "64",
                            "-p", "1"], capsys)
    one_line_error(code, err, f"--data '{tmp_path / 'link'}' is a link to nothing ('{tmp_path / data}')")


def test_the_report_names_the_data_as_given_and_where_its_splits_come_from():
    """--data images/train read "Data: `train`", and an .npz with its own x_val and x_test read "validation rows split
    from it" (a new user's findings)."""
    from toolchain.report.markdown import _data_line

    sizes = {"train": 700, "val": 359, "test": 360}
    own = _data_line({"name": "split", "spec": "data/split.npz", "given_splits": True, "seed": 0, "sizes": sizes})
    assert own == "`data/split.npz`; validation rows from it (359 rows), test rows from it (360 rows)", own
    pool = _data_line({"name": "train", "spec": "images/train", "given_splits": False, "seed": 3, "sizes": sizes})
    assert pool.startswith("`images/train`; validation rows split from it with seed 3 (359 rows)"), pool
    held = _data_line({"name": "train", "spec": "images/train", "given_splits": False, "seed": 3, "sizes": sizes,
                       "held_out_from": {"val": "images/val", "test": "images/test"}})
    assert held == "`images/train`; validation rows from `images/val` (359 rows), test rows from `images/test` (360 rows)", held
    assert _data_line({"name": "digits", "sizes": sizes}).startswith("`digits`; validation rows from it")  # an older report


def test_a_bare_state_dict_is_told_every_built_in_architecture(tmp_path):
    """The list named the small built-ins only, not the mobile architectures the README lists (a new user's finding)."""
    from toolchain.errors import UserError
    from toolchain.models import registry
    from toolchain.models.loading import load_model

    torch.save({"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)}, tmp_path / "sd.pt")
    with pytest.raises(UserError, match="is a state_dict: pass --arch") as caught:
        load_model(tmp_path / "sd.pt")
    assert all(name in str(caught.value) for name in registry.names(mobile=True)) and "mobilenetv2" in str(caught.value)


def test_the_report_says_validation_was_carved_from_a_sources_train_split(tmp_path):
    """An idx folder (Fashion-MNIST) or an .npz with x_train and x_test keeps its test split and cwtool carves validation
    from its train split with the seed: report.md said "validation rows from it", as if the source had defined them (a
    reviewer's finding). --test beside a pool: validation is still cwtool's split of the pool."""
    from tests.test_data import make_idx_folder
    from toolchain.data import load_data
    from toolchain.data.given import with_given_rows
    from toolchain.report.markdown import _data_line

    make_idx_folder(tmp_path / "idx", n_train=100)
    line = _data_line(load_data(str(tmp_path / "idx"), seed=4, val_fraction=0.2).describe())
    assert "validation rows carved from its train split with seed 4 (20 rows), test rows from its own test split (20 rows)" in line, line
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 5)).astype(np.float32), np.arange(90) % 3
    np.savez(tmp_path / "carve.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    line = _data_line(load_data(str(tmp_path / "carve.npz"), seed=2).describe())
    assert "validation rows carved from its train split with seed 2 (9 rows), test rows from its own test split (30 rows)" in line, line
    np.savez(tmp_path / "val.npz", x=x[:12] + 50, y=y[:12])  # --val in place of the carved rows: the test split is still its own
    line = _data_line(with_given_rows(load_data(str(tmp_path / "carve.npz"), seed=2), val=str(tmp_path / "val.npz")).describe())
    assert f"validation rows from `{tmp_path / 'val.npz'}` (12 rows), test rows from its own test split (30 rows)" in line, line
    given = with_given_rows(load_data(str(tmp_path / "carve.npz"), seed=2), val=str(tmp_path / "val.npz"))
    assert "carved" not in given.preprocessing.note and "held-out rows from --val" in given.preprocessing.note, given.preprocessing.note
    np.savez(tmp_path / "own.npz", x_train=x[:50], y_train=y[:50], x_val=x[50:70], y_val=y[50:70], x_test=x[70:], y_test=y[70:])
    line = _data_line(load_data(str(tmp_path / "own.npz"), seed=2).describe())
    assert line.endswith("validation rows from its own validation split (20 rows), test rows from its own test split (20 rows)"), line
    np.savez(tmp_path / "pool.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x[:30] + 10, y=y[:30])
    pool = load_data(str(tmp_path / "pool.npz"), seed=5)
    line = _data_line(with_given_rows(pool, test=str(tmp_path / "test.npz")).describe())
    assert "validation rows split from it with seed 5 (" in line and f"test rows from `{tmp_path / 'test.npz'}` (30 rows)" in line, line


def test_a_dense_model_that_catches_few_of_a_protected_class_and_a_validation_split_without_a_class_are_noted():
    """A model fed images resized otherwise than in training missed 55 of 60 melanomas on validation (AUC 0.84) and the run
    passed its gate without a word; a --val folder without one class's folder was judged silently (a new user's findings)."""
    from toolchain.evaluate import weak_detection_notes

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    logits = rng.normal(size=(180, 3))
    logits[np.arange(180), y] += 3.0  # a good model
    names = ["benign", "melanoma", "nevus"]
    assert weak_detection_notes(logits, y, [1], names, y) == []
    weak = logits.copy()
    weak[(y == 1) & (np.arange(180) % 12 != 0), 1] -= 10.0  # catches 5 of 60
    (note,) = weak_detection_notes(weak, y, [1], names, y)
    assert note.startswith("note: the dense model catches 5 of the 60 validation samples of protected class 1 (melanoma), 8%"), note
    assert "--normalize, --resize" in note
    (flat,) = weak_detection_notes(weak, y, [1], names, y, flat=True)  # CSV rows: --normalize is for images
    assert "scaled as in its training (a standardization belongs in the model's forward: docs/DATA.md)" in flat and "--resize" not in flat
    no_nevus = y != 2
    (note,) = weak_detection_notes(logits[no_nevus], y[no_nevus], [1], names, y)
    assert note.startswith("note: the validation split holds no sample of class 2 (nevus)"), note
    assert note.endswith("judged without it"), note
    (note,) = weak_detection_notes(logits[y == 0], y[y == 0], [0], names, y)
    assert "no sample of class 1 (melanoma), 2 (nevus): " in note and note.endswith("judged without them"), note


def test_features_of_very_different_scales_are_named_for_int8():
    """A CSV of sensors from 0.01 to 1,000 made an int8 TFLite file whose input scale erased the small features (a new
    user's finding): the spread is said before the int8 files are made, and beside a file its runtime cannot run."""
    from toolchain.export.calibration_rows import feature_scale_spread

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)) * np.array([0.01, 1.0, 10.0, 1000.0])
    said = feature_scale_spread(x)
    assert said is not None and said.startswith("the features' scales differ by ") and "x (standard deviations 0.00" in said, said
    assert "feature 0, to " in said and "feature 3, as stored" in said, said  # DATA.md says they are named
    named = feature_scale_spread(x, ["spo2", "temp", "hr", "pressure"])
    assert "'spo2', to " in named and "'pressure', as stored" in named, named
    assert feature_scale_spread(rng.normal(size=(200, 4))) is None  # standardized
    assert feature_scale_spread(rng.normal(size=(20, 1, 8, 8))) is None  # images: one scale per pixel by construction
    assert feature_scale_spread(np.c_[np.zeros(50), rng.normal(size=50)]) is None  # a constant column is no scale


def test_a_file_its_own_runtime_cannot_run_is_said_as_such_and_not_left(trained_digits, tmp_path, capsys, monkeypatch):
    """XNNPACK refused to prepare an int8 TFLite file compress had just made: "the file is corrupt or unsupported: re-export
    it" (exit 2, as if the user's), and the file stayed in artifacts/ (a new user's finding)."""
    import toolchain.runtimes as runtimes
    from toolchain.runtimes.base import runtime_failure

    real = runtimes.load_runner

    def refusing(path, *args, **kwargs):
        if str(path).endswith("int8.onnx"):
            raise runtime_failure(path, "prepare", RuntimeError("XNNPACK delegate failed to prepare"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runtimes, "load_runner", refusing)
    out = tmp_path / "run"
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
                            "--max-fn-increase", "2", "--confidence", "0.8", "--max-accuracy-drop", "0.5", "--format", "onnx",
                            "--time-runs", "0", "--out", out], capsys)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("cwtool: error: the onnx int8 file made from this model does not run in its runtime "
                                         "(failed to prepare"), err
    assert "XNNPACK delegate failed to prepare" in line and "leave it out (--format, --precision)" in line, line
    assert "corrupt" not in line and "--resume" in line, line
    assert not list((out / "artifacts").glob("model_int8*")), list((out / "artifacts").iterdir())


def test_a_csv_s_missing_or_infinite_value_is_named_where_it_is(tmp_path):
    """An empty cell read "holds '', not a number ... encode or drop that column", and a NaN "contains 1 NaN or inf value"
    with no row or column (a new user's findings). Places are the file's lines, as an editor numbers them: blank lines count."""
    from toolchain.data import load_data
    from toolchain.errors import UserError

    rows = ["a,b,label"] + [f"{i},{i % 7},{'ok' if i % 3 else 'fault'}" for i in range(60)]
    (tmp_path / "empty.csv").write_text("\n".join(rows[:5] + ["4,,ok"] + rows[6:]) + "\n")
    with pytest.raises(UserError, match=r"line 6 of .*, column 'b' holds '', not a number: a missing value: impute it or drop the row"):
        load_data(str(tmp_path / "empty.csv"), seed=0)
    (tmp_path / "nan.csv").write_text("\n".join(rows[:3] + ["", ""] + rows[3:8] + ["7,nan,ok"] + rows[9:]) + "\n")
    with pytest.raises(UserError, match=r"contain 1 NaN or infinite value, the first at line 11, column 'b' \(as float32"):
        load_data(str(tmp_path / "nan.csv"), seed=0)
    # Excel's "#N/A", and a number with thousands separators, were told to "encode or drop that column"
    (tmp_path / "excel.csv").write_text("\n".join(rows[:5] + ["4,#N/A,ok"] + rows[6:]) + "\n")
    with pytest.raises(UserError, match=r"column 'b' holds '#N/A', not a number: a missing value: impute it or drop the row$"):
        load_data(str(tmp_path / "excel.csv"), seed=0)
    for cell in ("4,399.004", "1.234,56", "0,500", "12 345"):  # 0,500 is a decimal comma: not "save it without them"
        (tmp_path / "grouped.csv").write_text("\n".join(rows[:5] + [f'4,"{cell}",ok'] + rows[6:]) + "\n")
        with pytest.raises(UserError, match=f"holds '{cell}', not a number: a number written with thousands separators or a "
                                            r"decimal comma: save the file with plain numbers and a point as the decimal mark"):
            load_data(str(tmp_path / "grouped.csv"), seed=0)
    for cell in ("#DIV/0!", "#VALUE!"):  # a cell's error, not a column to drop or to take as the labels
        (tmp_path / "error.csv").write_text("\n".join(rows[:5] + [f"4,{cell},ok"] + rows[6:]) + "\n")
        with pytest.raises(UserError, match=r"not a number: a spreadsheet's error value: fix or impute it, or drop the row$"):
            load_data(str(tmp_path / "error.csv"), seed=0)


def test_a_csv_with_its_columns_in_another_order_is_named(tmp_path, capsys):
    """Features are read by position: a CSV with the same header names in reversed order scored 63% without a word, and
    verify explained its refusal by row order and 8-bit pixels (a new user's finding). The checkpoint and the files
    record the columns; evaluate warns, compress and export refuse, verify notes and names it as the cause."""
    from toolchain.data import load_data
    from toolchain.data.identity import check_preprocessing, column_differences

    rng = np.random.default_rng(0)
    names = ["temp", "press", "flow", "label"]
    rows = [",".join(names)] + [f"{a:.3f},{b:.3f},{c:.3f},{'fault' if a > 1 else 'ok'}"
                                for a, b, c in rng.normal(size=(120, 3))]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    flipped = [",".join(["flow", "press", "temp", "label"])] + [",".join([r.split(",")[2], r.split(",")[1], r.split(",")[0],
                                                                          r.split(",")[3]]) for r in rows[1:]]
    (tmp_path / "flipped.csv").write_text("\n".join(flipped) + "\n")
    here = load_data(str(tmp_path / "s.csv"), seed=0).preprocessing.to_dict()
    there = load_data(str(tmp_path / "flipped.csv"), seed=0).preprocessing.to_dict()
    assert here["columns"] == ["temp", "press", "flow"]
    said = column_differences(here, there)
    assert said == "the same 3 columns in another order: column 1 is 'temp' there, 'flow' here", said
    assert column_differences(here, {**there, "columns": ["temp", "press", "speed"]}) == "missing here: 'flow'; new here: 'speed'"
    assert column_differences(here, {"columns": []}) is None and column_differences({"columns": [1, 2]}, here) is None
    problem = check_preprocessing({"preprocessing": here}, there, "m.pt")
    assert problem.startswith("'m.pt' was trained on rows of other feature columns (the same 3 columns in another order"), problem
    code, _, err = run_cli(["train", "--data", tmp_path / "s.csv", "--arch", "mlp", "--epochs", "2", "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", tmp_path / "flipped.csv", "-p", "fault"], capsys)
    assert code == 0 and "other feature columns (the same 3 columns in another order" in out + err, out + err


def test_a_runs_notes_follow_its_header(trained_digits, tmp_path, capsys):
    """"note: cwtool cannot tell which rows trained ..." printed before the "cwtool ... compress" line that opens the run
    (a new user's finding); in compress.log it follows it too."""
    import torch

    torch.save(trained_digits[1].state_dict(), tmp_path / "bare.pt")
    out = tmp_path / "run"
    code, _, err = run_cli(["compress", tmp_path / "bare.pt", "--arch", "digits-cnn", "-d", "digits", "-p", "3", "--keep-params",
                            "0.5", "--epochs", "1", "--max-fn-increase", "2", "--confidence", "0.8", "--max-accuracy-drop", "0.5",
                            "--skip-export", "--out", out], capsys)
    assert code in (0, 1), err
    header, note = err.index(" compress "), err.index("note: cwtool cannot tell which rows trained")
    assert header < note, err[:2000]
    log = (out / "compress.log").read_text()
    assert log.index(" compress ") < log.index("note: cwtool cannot tell which rows trained"), log[:2000]


def test_a_csv_whose_labels_are_not_last_is_told_the_flag(tmp_path):
    """A CSV with its label column first read "column 'label' holds 'ok', not a number ... encode or drop that column"
    (a new user's finding): cwtool takes the last column unless told, and says the flag."""
    from toolchain.data import load_data
    from toolchain.errors import UserError

    rows = ["label,a,b"] + [f"{'ok' if i % 3 else 'fault'},{i},{i % 7}" for i in range(60)]
    (tmp_path / "first.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"column 'label' holds 'fault', not a number: .*; if it holds the labels, give --label-column label$"):
        load_data(str(tmp_path / "first.csv"), seed=0)
    assert load_data(str(tmp_path / "first.csv"), seed=0, label_column="label").class_names == ["fault", "ok"]


def test_a_folder_or_a_pipe_where_a_file_is_expected_is_named_as_such(tmp_path):
    """A FIFO as --calibration read 'does not exist', a folder as --arch FILE.py 'does not exist', a folder as a target
    'unknown target' (an adversarial reviewer's findings)."""
    import os

    from toolchain.errors import UserError
    from toolchain.models.arch import resolve_arch
    from toolchain.quantize.calibration import resolve_calibration
    from toolchain.targets import load_target

    os.mkfifo(tmp_path / "f.npz")
    (tmp_path / "d.py").mkdir()
    (tmp_path / "imgs").mkdir()
    with pytest.raises(UserError, match="is a pipe or device, not a file"):
        resolve_calibration(str(tmp_path / "f.npz"))
    with pytest.raises(UserError, match="is a folder, not a Python file"):
        resolve_arch(f"{tmp_path / 'd.py'}:Net")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(UserError, match="target 'imgs' is a folder"):
            load_target("imgs")
    finally:
        os.chdir(cwd)


def test_a_resume_with_an_edited_device_profile_is_another_run(trained_digits, tmp_path, capsys):
    """The profile a run was made for is an input: edited between an interrupted run and its --resume, its new limits
    were used in silence (a targets reviewer's finding). The manifest records its sha256; a resume names the change."""
    from toolchain.targets import target_dirs

    profile = tmp_path / "board.toml"
    text = (next(d for d in target_dirs() if (d / "x86-edge.toml").is_file()) / "x86-edge.toml").read_text()
    profile.write_text(text.replace('name = "x86-edge"', 'name = "board"'))
    out = tmp_path / "run"
    args = _finished_run(capsys, trained_digits[0], out, "--target", str(profile), "--time-runs", "0")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["target"]["name"] == "board" and len(manifest["inputs"]["target"]["sha256"]) == 64
    profile.write_text(profile.read_text().replace("max_model_bytes = ", "max_model_bytes = 1"))
    (out / "report.json").unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "target differs")


def test_a_huge_manifest_is_refused_from_its_size_not_read(trained_digits, tmp_path, capsys):
    """A 6 GB (sparse) manifest.json was read whole: MemoryError, exit 3, or the kernel's OOM killer first."""
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "manifest.json", "wb") as f:
        f.truncate(64 * 2**20)
    code, _, err = run_cli(["compress", trained_digits[0], "--data", "digits", "--protect-class", "3", "--out", out, "--resume"], capsys)
    one_line_error(code, err, "manifest.json", "more than")


@pytest.mark.parametrize("left", ["artifacts/mine.onnx", "artifacts/notes.txt", "plots/myexport/export.json"])
def test_a_resume_removes_nothing_it_did_not_write(left, finished_run, tmp_path, capsys):
    """--resume removed a user's copy of an artifact and notes from artifacts/ ("removed 2 file(s) an earlier export of
    this run wrote": it wrote neither), and a whole export made inside plots/ (a trust reviewer's findings)."""
    out = tmp_path / "run"
    args = finished_run(out)
    (out / left).parent.mkdir(parents=True, exist_ok=True)
    (out / left).write_text("mine")
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, "not cwtool's", left.split("/")[1])
    assert (out / left).read_text() == "mine"


def test_a_resume_that_draws_no_calibration_rows_leaves_no_earlier_ones(finished_run, tmp_path, capsys):
    """--resume --skip-export of a run exported before removed its artifacts but left calibration.npz beside a report
    saying "calibration": null (a trust reviewer's finding)."""
    out = tmp_path / "run"
    args = finished_run(out)
    np.savez(out / "calibration.npz", x=np.zeros((2, 1, 8, 8), np.float32))  # as an earlier session's int8 export left it
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code in (0, 1), err
    assert not (out / "calibration.npz").exists()
    assert json.loads((out / "report.json").read_text())["calibration"] is None


def test_a_weak_model_whose_record_matches_the_data_is_called_weak_not_fed_otherwise():
    """A model cwtool trained on these very folders ranked the class no better than chance, and the refusal said to
    check the label numbering and the preprocessing, which its checkpoint records alike (a new user's finding)."""
    from toolchain.evaluate import detection_problem
    from toolchain.model_on_data import recorded_alike

    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    logits = rng.standard_normal((300, 3))  # no better than chance
    names = ["crack", "ok", "stain"]
    blind = detection_problem(logits, y, [0], names)
    weak = detection_problem(logits, y, [0], names, recorded_alike=True)
    assert "--class-names" in blind and "--normalize" in blind
    assert "no better than chance" in weak and "has not learnt the class" in weak and "--class-names" not in weak, weak
    from toolchain.data.identity import scale_mismatch

    record = {"class_names": names, "preprocessing": {"color": "RGB"}}
    x = rng.random((10, 3, 8, 8)).astype(np.float32)
    assert recorded_alike(record, scale_mismatch(record, x, "m.pt")) and not recorded_alike({"class_names": names}, None)
    scaled = {**record, "largest_value": 255.0}
    assert not recorded_alike(scaled, scale_mismatch(scaled, x, "m.pt"))  # scaled otherwise: it may be fed otherwise


@pytest.mark.parametrize("litter", ["artifacts/.DS_Store", "plots/Thumbs.db", "artifacts/._model_int8.onnx", "plots/desktop.ini"])
def test_what_a_file_browser_leaves_in_a_run_does_not_stop_its_resume(litter, finished_run, tmp_path, capsys):
    """Finder's .DS_Store and Explorer's Thumbs.db in artifacts/ or plots/ were refused as files not cwtool's (a
    regression reviewer's find): they are swept with the folder's files, as before."""
    out = tmp_path / "run"
    args = finished_run(out)
    (out / litter).parent.mkdir(parents=True, exist_ok=True)
    (out / litter).write_bytes(b"\0")
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code in (0, 1) and "not cwtool's" not in err, err


def test_a_new_out_folder_that_a_file_browser_opened_is_a_new_run(trained_digits, tmp_path, capsys):
    """A new --out opened in Finder holds a .DS_Store: compress refused it as "not a cwtool run directory" (a regression
    reviewer's find); the demo refused its own folder so too."""
    from toolchain.output_paths import holds_anything

    out = tmp_path / "run"
    out.mkdir()
    (out / ".DS_Store").write_bytes(b"\0")
    assert not holds_anything(out)
    _finished_run(capsys, trained_digits[0], out)
    assert (out / "report.json").is_file() and (out / ".DS_Store").is_file()
    (out / "notes.txt").write_text("mine")
    assert holds_anything(tmp_path / "run")


def test_a_forward_that_squeezes_a_single_row_is_said_with_the_shape_it_gives():
    """The shape said was '()' where one row gives (10,): the outputs were joined before their shape was read."""
    from toolchain.prune.preflight import evaluate_warnings

    class Squeezer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)).squeeze()

    said = evaluate_warnings(Squeezer().eval(), (1, 8, 8))
    assert len(said) == 1 and "outputs of shape (10,) where 4 rows get (4, 10)" in said[0], said


def test_evaluate_says_when_a_model_outputs_probabilities(tmp_path, capsys):
    """A softmax at the end of the forward: evaluate read the probabilities as logits without a word (its AUC ranks their
    log-softmax: 0.9974 against 0.9989 from the probabilities on a reviewer's model), where compress refuses the model."""
    (tmp_path / "soft.py").write_text("import torch\nfrom torch import nn\n\n\nclass Soft(nn.Module):\n    def __init__(self):\n"
                                      "        super().__init__()\n        self.fc = nn.Linear(64, 10)\n\n"
                                      "    def forward(self, x):\n        return torch.softmax(self.fc(x.flatten(1)), 1)\n")
    torch.manual_seed(0)
    torch.save({"fc.weight": torch.randn(10, 64), "fc.bias": torch.zeros(10)}, tmp_path / "w.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "w.pt", "--arch", f"{tmp_path / 'soft.py'}:Soft", "-d", "digits", "-p", "3"], capsys)
    assert code == 0 and "warning: the model's outputs are probabilities summing to 1" in err, err
    code, _, err = run_cli(["compress", tmp_path / "w.pt", "--arch", f"{tmp_path / 'soft.py'}:Soft", "-d", "digits", "-p", "3",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and "probabilities summing to 1" in err, err
    # export converts any model, and its files give what the model gives: said, not refused (it said nothing)
    code, _, err = run_cli(["export", tmp_path / "w.pt", "--arch", f"{tmp_path / 'soft.py'}:Soft", "-d", "digits", "-p", "3",
                            "--format", "onnx", "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "ex"], capsys)
    assert code in (0, 1) and "warning: the model's outputs are probabilities summing to 1" in err, err
    assert "warning: the model's outputs are probabilities" in (tmp_path / "ex" / "export.log").read_text()


@pytest.mark.parametrize("name, argv", [
    ("loop", ["calibrate", "-d", "digits", "-p", "3", "--val", "{loop}", "--out", "{tmp}/c.npz"]),
    ("loop", ["train", "--arch", "digits-cnn", "-d", "digits", "--epochs", "1", "--test", "{loop}", "--out", "{tmp}/m.pt"]),
    ("loop.pt", ["evaluate", "{loop}", "-d", "digits", "-p", "3"]),
    ("loop.onnx", ["verify", "{loop}", "-d", "digits", "-p", "3"]),
    ("loop.toml", ["targets", "{loop}"]),
])
def test_a_loop_of_links_given_as_an_input_is_bad_input_said_as_such(name, argv, tmp_path, capsys):
    """--val or --test at a loop of links ended in exit 3 (its path resolved to compare with --data's); a model, an
    artifact or a profile there was said not to exist, as a typo is."""
    loop = tmp_path / name
    loop.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(loop)
    code, _, err = run_cli([a.format(loop=loop, tmp=tmp_path) for a in argv], capsys)
    one_line_error(code, err, f"{loop}", "is a link to nothing (or a loop of links)")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "other"])


@pytest.mark.parametrize("command", ["verify", "bench"])
@pytest.mark.parametrize("artifact", ["", ".", "/"])
def test_an_artifact_argument_that_names_no_file_is_bad_input(command, artifact, capsys):
    """`cwtool verify "$ARTIFACT"` with the variable unset ended in exit 3 (a path with no name has no sidecar name)."""
    argv = [command, artifact, *(["-d", "digits", "-p", "3"] if command == "verify" else ["--runs", "3"])]
    code, _, err = run_cli(argv, capsys)
    one_line_error(code, err, "names no file", *(["unset variable"] if artifact != "/" else []))


def test_a_round_file_this_user_cannot_read_is_not_called_damaged(tmp_path):
    """A round made unreadable (chmod a-r, another user's umask) was "a damaged round ...: remove its rounds/ folder",
    advice that deleted whole rounds (a concurrency reviewer's finding)."""
    from toolchain.errors import UserError
    from toolchain.prune.round_files import RoundFiles
    from toolchain.rundir import RunDir

    rounds = RoundFiles(RunDir(tmp_path), "digits-cnn", {}, (1, 8, 8), {})
    locked = tmp_path / "rounds" / "round_1.pt"

    def load():
        raise PermissionError(13, "Permission denied", str(locked))

    with pytest.raises(UserError) as exc:
        rounds.read(load)
    assert f"cannot read '{locked}' (permission denied)" in str(exc.value) and "damaged" not in str(exc.value)


def test_a_resumed_run_writes_its_rounds_byte_for_byte_as_an_uninterrupted_one(trained_digits, tmp_path, capsys, monkeypatch):
    """After a resume, round_2.pt held the same tensors in other bytes (the survivors' key strings shared in one run and
    not in the other: pickle's memo), and round_2.json named another sha256 (a concurrency reviewer's finding)."""
    from toolchain.errors import Interrupted
    from toolchain.prune.round_files import RoundFiles

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    args = ["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.25", "--epochs", "1", "--confidence", "0.5",
            "--max-fn-increase", "2", "--max-accuracy-drop", "1", "--skip-export"]
    code, _, err = run_cli([*args, "--out", whole], capsys)
    assert code in (0, 1) and (whole / "rounds" / "round_2.pt").is_file(), err
    real = RoundFiles.save_round

    def save_then_stop(self, ticket, *a, **k):
        real(self, ticket, *a, **k)
        if ticket.round == 1:
            raise Interrupted("SIGTERM")

    monkeypatch.setattr(RoundFiles, "save_round", save_then_stop)
    code, _, err = run_cli([*args, "--out", stopped], capsys)
    assert code == 143 and not (stopped / "rounds" / "round_2.pt").exists(), err
    monkeypatch.setattr(RoundFiles, "save_round", real)
    code, _, err = run_cli([*args, "--out", stopped, "--resume"], capsys)
    assert code in (0, 1), err
    for name in ("round_1.pt", "round_2.pt", "final_2.pt"):
        if (whole / "rounds" / name).exists():
            assert (stopped / "rounds" / name).read_bytes() == (whole / "rounds" / name).read_bytes(), name
    assert (stopped / "pruned.pt").read_bytes() == (whole / "pruned.pt").read_bytes()


def test_a_manifest_this_user_cannot_read_is_not_called_unreadable_as_damage(finished_run, tmp_path, capsys, monkeypatch):
    """chmod 000 manifest.json: "is not a readable cwtool manifest (PermissionError ...): use another --out", advice that
    abandoned a whole run (a regression reviewer's finding)."""
    import toolchain.run_identity as run_identity

    out = tmp_path / "run"
    args = finished_run(out)
    real = run_identity.read_record

    def locked(path, hint):
        if Path(path).name == "manifest.json":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, hint)

    monkeypatch.setattr(run_identity, "read_record", locked)
    code, _, err = run_cli([*args, "--resume"], capsys)
    one_line_error(code, err, f"cannot read '{out / 'manifest.json'}' (permission denied)")
    assert "another --out" not in err


def test_the_wrong_file_or_name_is_told_what_to_give(trained_digits, tmp_path, capsys):
    """A reviewer read the messages as a user: "(KeyError: 101)" for a text file, importlib's TypeError for --arch '.:Net',
    no class named for a misspelt one, no way out for a list or dict saved as a model, "built with --arch-kwargs {}",
    a codec's error for a model given as --baseline, and an incomplete list of the baselines verify takes."""
    (tmp_path / "model.txt").write_text("epochs: 3\n")
    torch.save([1, 2], tmp_path / "list.pt")
    (tmp_path / "net.py").write_text("import torch\nclass Net(torch.nn.Module):\n    pass\nclass Other(Net):\n    pass\n")
    evaluate = ["-d", "digits", "-p", "3"]
    # a module whose contents raise when looked at (a regression reviewer's: the class listing ended in exit 3)
    (tmp_path / "odd.py").write_text("class Liar:\n    @property\n    def __class__(self):\n        raise RuntimeError('boom')\n"
                                     "thing = Liar()\n" + "".join(f"class C{i}:\n    pass\n" for i in (1, 2, 10, 3) * 1))
    code, _, err = run_cli(["evaluate", trained_digits[0], "--arch", f"{tmp_path / 'odd.py'}:Nte", *evaluate], capsys)
    one_line_error(code, err, "has no attribute 'Nte'")
    (tmp_path / "many.py").write_text("".join(f"class C{i}:\n    pass\n" for i in range(20)))
    code, _, err = run_cli(["evaluate", trained_digits[0], "--arch", f"{tmp_path / 'many.py'}:Cx", *evaluate], capsys)
    one_line_error(code, err, "it defines C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11 and 8 more")
    for args, said in (([tmp_path / "model.txt", "--arch", "digits-cnn"], "not a PyTorch checkpoint (neither the zip torch.save writes nor a pickle)"),
                       ([trained_digits[0], "--arch", ".:Net"], "'.' is no module name: give module:Class"),
                       ([trained_digits[0], "--arch", f"{tmp_path / 'net.py'}:Nett"], "has no attribute 'Nett' (did you mean Net?): it defines Net, Other"),
                       ([tmp_path / "list.pt"], "holds a list, not a model or state_dict: give a model saved with torch.save(model)"),
                       ([trained_digits[0], "--arch-kwargs", '{"width": 4}'], "records the --arch-kwargs it was built with (")):
        code, _, err = run_cli(["evaluate", *args, *evaluate], capsys)
        one_line_error(code, err, said)
        assert "Error:" not in err and "{})" not in err, err
    from toolchain.baseline import load_baseline
    from toolchain.errors import UserError

    give = "give a compress run's report.json, an export folder's export.json, a verify JSON or an evaluate JSON"
    (tmp_path / "other.json").write_text('{"targets": []}')
    for path, said in ((trained_digits[0], "is not a JSON file (not text)"), (tmp_path / "other.json", "is none of the files a baseline is"),
                       (tmp_path / "none.json", "does not exist")):
        with pytest.raises(UserError) as info:
            load_baseline(path)
        assert said in str(info.value) and str(info.value).endswith(give) and "codec" not in str(info.value), str(info.value)
