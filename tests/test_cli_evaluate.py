"""`cwtool evaluate`: a user's own model and data, the JSON contract, and every bad input -> exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from toolchain.cli import main
from clirun import run_cli

USER_ARCH = textwrap.dedent(
    """
    import torch
    from torch import nn

    class TheirNet(nn.Module):
        def __init__(self, hidden=48):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.fc1 = nn.Linear(8 * 8 * 8, hidden)
            self.fc2 = nn.Linear(hidden, 10)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))
    """
)


@pytest.fixture(scope="module")
def user_setup(tmp_path_factory):
    """A user's model file, trained briefly on digits, saved as a state_dict, plus a split .npz."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("user")
    (root / "their_net.py").write_text(USER_ARCH)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(y))
    tr, va, te = order[:1200], order[1200:1450], order[1450:]
    npz = root / "split.npz"
    np.savez(npz, x_train=x[tr], y_train=y[tr], x_val=x[va], y_val=y[va], x_test=x[te], y_test=y[te])

    sys.path.insert(0, str(root))
    try:
        import their_net  # noqa: F401  (the user's own module, as they would import it)
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    model = their_net.TheirNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
    for _ in range(3):  # a few epochs: enough to leave a handful of mistakes per class
        for i in range(0, len(xt), 64):
            loss = torch.nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    torch.save(model.state_dict(), root / "weights.pt")
    with torch.no_grad():
        pred = model(torch.from_numpy(x[te])).argmax(1).numpy()
    expected_fn = [int(np.sum((y[te] == k) & (pred != k))) for k in range(10)]
    return {"root": root, "npz": npz, "model": model, "expected_fn": expected_fn, "module": their_net}


def test_user_state_dict_matches_independent_fn(user_setup, capsys, tmp_path):
    root = user_setup["root"]
    out_json = tmp_path / "out.json"
    code, stdout, _ = run_cli(
        ["evaluate", root / "weights.pt", "--arch", f"{root / 'their_net.py'}:TheirNet", "--data", user_setup["npz"],
         "--split", "test", "--protect-class", "3", "--json", out_json],
        capsys,
    )
    assert code == 0
    report = json.loads(out_json.read_text())
    assert report["schema_version"] == 1
    assert report["n"] == 347
    assert report["fn_per_class"] == user_setup["expected_fn"]
    assert sum(user_setup["expected_fn"]) > 0, "the fixture model should make some mistakes"
    prot = report["protected"][0]
    assert prot["class"] == 3 and prot["fn"] == user_setup["expected_fn"][3]
    assert 0.0 <= prot["fnr_ci95"][0] <= prot["fnr"] <= prot["fnr_ci95"][1] <= 1.0
    assert str(prot["fn"]) in stdout


def test_console_script_runs_as_a_subprocess(user_setup, tmp_path):
    root = user_setup["root"]
    out_json = tmp_path / "o.json"
    proc = subprocess.run(
        [sys.executable, "-m", "toolchain", "evaluate", str(root / "weights.pt"), "--arch", f"{root / 'their_net.py'}:TheirNet",
         "--arch-kwargs", '{"hidden": 48}', "--data", str(user_setup["npz"]), "-p", "3", "-p", "8", "--json", str(out_json)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert [p["class"] for p in json.loads(out_json.read_text())["protected"]] == [3, 8]


def test_pickled_module_needs_arch_or_trust(user_setup, capsys, tmp_path):
    root = user_setup["root"]
    pickled = tmp_path / "whole.pt"
    torch.save(user_setup["model"], pickled)
    code, _, err = run_cli(["evaluate", pickled, "--data", user_setup["npz"], "-p", "3"], capsys)
    assert code == 2 and "--trust-model" in err and len(err.strip().splitlines()) == 1
    # Allow-listed through --arch: loads with weights_only, no code from the file runs.
    code, _, err = run_cli(["evaluate", pickled, "--arch", f"{root / 'their_net.py'}:TheirNet", "--data", user_setup["npz"], "-p", "3",
                            "--json", tmp_path / "a.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "a.json").read_text())["fn_per_class"] == user_setup["expected_fn"]


def test_torchscript_archive_evaluates_only_when_trusted(user_setup, capsys, tmp_path):
    scripted = tmp_path / "net.ts"
    torch.jit.save(torch.jit.trace(user_setup["model"], torch.zeros(1, 1, 8, 8)), scripted)
    code, _, err = run_cli(["evaluate", scripted, "--data", user_setup["npz"], "-p", "3", "--json", tmp_path / "t.json"], capsys)
    assert code == 2 and "--trust-model" in err and not (tmp_path / "t.json").exists()  # it carries its own program
    code, _, err = run_cli(["evaluate", scripted, "--trust-model", "--data", user_setup["npz"], "-p", "3", "--json", tmp_path / "t.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "t.json").read_text())["fn_per_class"] == user_setup["expected_fn"]


def test_protect_class_by_name(user_setup, capsys, tmp_path):
    root = user_setup["root"]
    code, _, err = run_cli(["evaluate", root / "weights.pt", "--arch", f"{root / 'their_net.py'}:TheirNet", "--data", "digits",
                            "-p", "7", "--json", tmp_path / "d.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "d.json").read_text())["protected"][0]["class"] == 7


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

def _bad_cases(root: Path, npz: Path, tmp: Path):
    arch = f"{root / 'their_net.py'}:TheirNet"
    weights = root / "weights.pt"
    (tmp / "corrupt.pt").write_bytes(b"\x00\x01not a checkpoint" * 10)
    (tmp / "broken_arch.py").write_text("import torch\nclass Net(torch.nn.Module:\n")
    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp / "labels11.npz", x=x, y=np.arange(40) % 12)
    x_nan = x.copy()
    x_nan[3, 0, 2, 2] = np.nan
    np.savez(tmp / "nan.npz", x=x_nan, y=np.arange(40) % 10)
    np.savez(tmp / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    np.savez(tmp / "shape.npz", x=np.random.default_rng(0).random((40, 30)).astype(np.float32), y=np.arange(40) % 10)
    return {
        "missing model": ["evaluate", tmp / "nope.pt", "--arch", arch, "--data", npz, "-p", "3"],
        "corrupt model": ["evaluate", tmp / "corrupt.pt", "--arch", arch, "--data", npz, "-p", "3"],
        "state_dict without arch": ["evaluate", weights, "--data", npz, "-p", "3"],
        "arch file does not import": ["evaluate", weights, "--arch", f"{tmp / 'broken_arch.py'}:Net", "--data", npz, "-p", "3"],
        "arch module missing": ["evaluate", weights, "--arch", "no_such_module_xyz:Net", "--data", npz, "-p", "3"],
        "arch class missing": ["evaluate", weights, "--arch", f"{root / 'their_net.py'}:Nope", "--data", npz, "-p", "3"],
        "arch does not match weights": ["evaluate", weights, "--arch", arch, "--arch-kwargs", '{"hidden": 20}', "--data", npz, "-p", "3"],
        "bad arch kwargs json": ["evaluate", weights, "--arch", arch, "--arch-kwargs", "{hidden", "--data", npz, "-p", "3"],
        "protected class outside outputs": ["evaluate", weights, "--arch", arch, "--data", npz, "-p", "12"],
        "protected class unknown name": ["evaluate", weights, "--arch", arch, "--data", npz, "-p", "cat"],
        "labels outside outputs": ["evaluate", weights, "--arch", arch, "--data", tmp / "labels11.npz", "--split", "all", "-p", "3"],
        "nan data": ["evaluate", weights, "--arch", arch, "--data", tmp / "nan.npz", "-p", "3"],
        "empty data": ["evaluate", weights, "--arch", arch, "--data", tmp / "empty.npz", "-p", "3"],
        "input shape mismatch": ["evaluate", weights, "--arch", arch, "--data", tmp / "shape.npz", "-p", "3"],
        "unknown data": ["evaluate", weights, "--arch", arch, "--data", "imagenet-please", "-p", "3"],
        "bad split": ["evaluate", weights, "--arch", arch, "--data", npz, "--split", "holdout", "-p", "3"],
    }


CASES = [
    "missing model", "corrupt model", "state_dict without arch", "arch file does not import", "arch module missing",
    "arch class missing", "arch does not match weights", "bad arch kwargs json", "protected class outside outputs",
    "protected class unknown name", "labels outside outputs", "nan data", "empty data", "input shape mismatch",
    "unknown data", "bad split",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(case, user_setup, capsys, tmp_path):
    args = _bad_cases(user_setup["root"], user_setup["npz"], tmp_path)[case]
    out_json = tmp_path / "never.json"
    code, _, err = run_cli(args + ["--json", out_json], capsys)
    assert code == 2, f"{case}: exit {code}, stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cwtool: error: "), f"{case}: {err!r}"
    assert "Traceback" not in err
    assert not out_json.exists()


def test_debug_shows_the_traceback_and_keeps_the_exit_code(user_setup, capsys, tmp_path):
    """--debug adds the traceback; bad input still exits 2 (exit 1 would read as "gate failed")."""
    with pytest.raises(SystemExit) as exc:
        main(["--debug", "evaluate", str(tmp_path / "nope.pt"), "--data", "digits", "-p", "3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("cwtool: error: ")
    assert "does not exist" in err


def test_flat_rows_feed_an_image_model_with_input_shape(trained_digits, digits_dataset, tmp_path, capsys):
    """A CSV of 64 pixel columns and an 8x8 image model: the error says which --input-shape, and with it
    the numbers are the image data's own."""
    x, y = digits_dataset.split("test")
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=x.reshape(len(x), -1), y=y)
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", flat, "-p", "3"], capsys)
    assert code == 2 and "--input-shape 1,8,8" in err, err
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", flat, "-p", "3", "--input-shape", "1x8x8", "--json", tmp_path / "f.json"], capsys)
    assert code == 0, err
    images = tmp_path / "img.npz"
    np.savez(images, x=x, y=y)
    run_cli(["evaluate", trained_digits[0], "--data", images, "-p", "3", "--json", tmp_path / "i.json"], capsys)
    flat_ev, image_ev = (json.loads((tmp_path / name).read_text()) for name in ("f.json", "i.json"))
    assert flat_ev["fn_per_class"] == image_ev["fn_per_class"] and flat_ev["rows_sha256"] == image_ev["rows_sha256"]
    pred = np.asarray(image_ev["predictions"])  # a baseline verify pairs with: its FN are these rows' own
    assert len(pred) == len(y) and np.bincount(y[pred != y], minlength=10).tolist() == image_ev["fn_per_class"]
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", flat, "-p", "3", "--input-shape", "1,9,9"], capsys)
    assert code == 2 and "81" in err and "64" in err, err


def test_a_long_evaluation_says_its_pace(trained_digits, capsys, monkeypatch):
    """20,000 images of 224 px through a ResNet on a CPU took many minutes with nothing on the console."""
    import re

    from toolchain.report import pace

    monkeypatch.setattr(pace, "PACE_SECONDS", 0.0)  # every batch is "long"
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", "digits", "-p", "3", "--split", "all"], capsys)
    assert code == 0 and re.search(r"^the torch model: 128 of 1,797 rows \([\d.]+ s, about [\d.]+ s to go\)$", err, re.M), err
    monkeypatch.setattr(pace, "PACE_SECONDS", 30.0)
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", "digits", "-p", "3", "--split", "all"], capsys)
    assert code == 0 and " rows (" not in err, err  # a second's work says nothing


def test_a_home_path_the_shell_left_is_one_path_for_every_reader(trained_digits, tmp_path, monkeypatch, capsys):
    """`--data=~/x` (the shell expands no ~ there) was expanded by the loader and not by the reader of the judged rows:
    verify judged other rows than the baseline's and refused it, and --val refused a folder --data read (a new user's
    finding). Every path option's ~ is expanded once, as the shell would have."""
    from toolchain.cli.arguments import home_expanded as _home_expanded

    monkeypatch.setenv("HOME", str(tmp_path))
    assert _home_expanded(["verify", "~/m.onnx", "--data=~/d", "--val", "~/v", "-d", "~/x", "--class-names", "~a,b",
                           "--json=~/r.json"]) == ["verify", f"{tmp_path}/m.onnx", f"--data={tmp_path}/d", "--val", f"{tmp_path}/v",
                                                   "-d", f"{tmp_path}/x", "--class-names", "~a,b", f"--json={tmp_path}/r.json"]
    # after a flag that takes no value (a regression reviewer's find), and never a name's value
    assert _home_expanded(["evaluate", "--trust-model", "~/m.pt", "-p", "~/odd"]) == ["evaluate", "--trust-model", f"{tmp_path}/m.pt",
                                                                                       "-p", "~/odd"]
    from toolchain.data import load_data

    digits = load_data("digits", seed=0)
    np.savez(tmp_path / "rows.npz", x=digits.x_test, y=digits.y_test)
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data=~/rows.npz", "-p", "3", "--json=~/out.json"], capsys)
    assert code == 0, err
    judged = json.loads((tmp_path / "out.json").read_text())
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", tmp_path / "rows.npz", "-p", "3", "--json", tmp_path / "out2.json"], capsys)
    assert code == 0 and judged["rows_sha256"] == json.loads((tmp_path / "out2.json").read_text())["rows_sha256"], err
