"""Files that another process replaces or cuts short while cwtool reads them (a reviewer's races, each won by timing
alone on the code before): every step of a command is about one file, or the command says the file changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clirun import one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_onnx(tmp_path_factory):
    """Two digits classifiers of different weights exported to ONNX, and a TFLite one."""
    torch = pytest.importorskip("torch")
    from toolchain.export.onnx import export_onnx
    from toolchain.export.tflite import export_tflite
    from toolchain.models import registry

    out = tmp_path_factory.mktemp("two")
    files = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = registry.create("digits-cnn", width=8).eval()
        files[seed] = export_onnx(model, torch.zeros(1, 1, 8, 8), out / f"m{seed}.onnx")
    files["tflite"] = export_tflite(model, torch.zeros(1, 1, 8, 8), out / "m.tflite")
    return files


def _swapped_at(monkeypatch, owner, name: str, path: Path, other: Path, after: bool = True) -> None:
    """``owner.name`` renames a copy of ``other`` over ``path`` once, after (or before) doing its own work."""
    real = getattr(owner, name)
    done = []

    def swapping(*args, **kwargs):
        if not after and not done:
            done.append(os.replace(shutil.copy(other, str(path) + ".new"), path))
        result = real(*args, **kwargs)
        if after and not done:
            done.append(os.replace(shutil.copy(other, str(path) + ".new"), path))
        return result

    monkeypatch.setattr(owner, name, swapping)


def test_verify_refuses_a_file_renamed_over_its_artifact_while_it_ran(two_onnx, tmp_path, capsys, monkeypatch):
    """Another model renamed over model.onnx while verify predicted: the gate passed on the first file and the report's
    sha256 was the second's (a CI that ships "the file whose hash the report shows" shipped one nothing judged)."""
    from toolchain.runtimes.onnx import OnnxRunner

    path = Path(shutil.copy(two_onnx[0], tmp_path / "model.onnx"))
    _swapped_at(monkeypatch, OnnxRunner, "predict", path, two_onnx[1])
    code, _, err = run_cli(["verify", path, "-d", "digits", "-p", "3", "--max-fnr", "1", "--json", tmp_path / "v.json"],
                           capsys)
    one_line_error(code, err, "model.onnx", "changed while cwtool read it")
    assert not (tmp_path / "v.json").exists() or json.loads((tmp_path / "v.json").read_text()).get("passed") is not True


def test_a_file_renamed_over_an_artifact_while_its_runner_loads_is_refused(two_onnx, tmp_path, monkeypatch):
    """A Loop bomb the checks refuse, renamed away after onnxruntime's load and a good file in its place: the checks read
    the good one and the session ran the bomb (3 of 3 runs hung). Whichever file the runner's steps read, they read one."""
    from toolchain.errors import UserError
    from toolchain.runtimes import load_runner
    from toolchain.runtimes.onnx import OnnxRunner

    path = Path(shutil.copy(two_onnx[0], tmp_path / "model.onnx"))
    _swapped_at(monkeypatch, OnnxRunner, "__init__", path, two_onnx[1])
    with pytest.raises(UserError, match="changed while cwtool read it"):
        load_runner(path)
    assert load_runner(path).num_classes == 10  # the same file again, unchanged: loads


def test_the_tflite_load_probe_and_the_load_read_the_same_bytes(two_onnx, tmp_path):
    """A crashing TFLite file renamed over the path once the probe child had loaded the good one: the parent loaded the
    crashing one, exit 139 and no line. The parent now loads the bytes it gave the probe, and says the file changed."""
    crash = tmp_path / "crash.tflite"
    data = bytearray(Path(two_onnx["tflite"]).read_bytes())
    data[20] = 0  # a reviewer's mutation: refused by the probe as crashing the runtime
    crash.write_bytes(bytes(data))
    path = tmp_path / "model.tflite"
    shutil.copy(two_onnx["tflite"], path)
    script = textwrap.dedent(f"""
        import os, shutil
        import toolchain.runtimes.load_probe as load_probe
        from toolchain.errors import UserError
        from toolchain.runtimes import load_runner

        real = load_probe.survives_loading

        def probe_then_swap(*args):
            real(*args)
            os.replace(shutil.copy({str(crash)!r}, {str(path)!r} + ".new"), {str(path)!r})

        load_probe.survives_loading = probe_then_swap
        try:
            load_runner({str(path)!r})
        except UserError as e:
            print("refused:", e)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "refused:" in proc.stdout and "changed while cwtool read it" in proc.stdout, proc.stdout


@pytest.mark.parametrize("command", ["export", "compress"])
def test_the_recorded_model_sha256_is_of_the_model_loaded(command, trained_digits, tmp_path, capsys, monkeypatch):
    """Another checkpoint renamed over model.pt while export ran: the artifacts came from the first, export.json's sha256
    was the second's; in compress the run id and manifest named the swapped model, and a --resume with it was taken for
    the same run."""
    import torch

    import toolchain.models.loading as loading

    first, _ = trained_digits
    path = Path(shutil.copy(first, tmp_path / "model.pt"))
    other = tmp_path / "other.pt"
    ckpt = torch.load(first, weights_only=True)
    ckpt["extra"] = {**ckpt.get("extra", {}), "note": "another file"}
    torch.save(ckpt, other)
    _swapped_at(monkeypatch, loading, "load_model", path, other)
    extra = ["--format", "onnx"] if command == "export" else []
    code, _, err = run_cli([command, path, "-d", "digits", "-p", "3", *extra, "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, "model.pt", "changed while cwtool read it")
    assert not (tmp_path / "out" / "export.json").exists() and not (tmp_path / "out" / "manifest.json").exists()


@pytest.fixture
def read_in_place(tmp_path, monkeypatch):
    """An .npz whose x member is read in place (the size threshold lowered for a small file), loaded."""
    from toolchain.data import load_data, mapped

    rng = np.random.default_rng(0)
    f = tmp_path / "d.npz"
    np.savez(f, x=rng.normal(size=(300, 1, 8, 8)).astype(np.float32), y=np.arange(300) % 3)
    monkeypatch.setattr(mapped, "MAP_BYTES", 0)
    data = load_data(str(f), seed=0)
    assert isinstance(data.x_train.base, mapped.Mapped)
    return f, data


def test_an_npz_cut_short_while_read_in_place_is_said_not_a_bus_error(read_in_place):
    """A mapped .npz truncated under a running verify: SIGBUS, exit 135 and no line."""
    from toolchain.errors import UserError

    f, data = read_in_place
    before = np.asarray(data.x_train[:5])
    with open(f, "r+b") as fh:
        fh.truncate(2000)
    with pytest.raises(UserError, match="data file '.*d.npz' changed while cwtool read it"):
        np.asarray(data.x_train[:5])
    assert before.shape == (5, 1, 8, 8)


def test_an_npz_replaced_while_read_in_place_is_said(read_in_place, tmp_path):
    """Rows of two files in one split: another .npz renamed over the one being read."""
    from toolchain.errors import UserError

    f, data = read_in_place
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((300, 1, 8, 8), dtype=np.float32), y=np.arange(300) % 3)
    os.replace(other, f)
    with pytest.raises(UserError, match="changed while cwtool read it"):
        np.asarray(data.x_val[:3])


def test_rows_read_in_place_are_the_stored_rows_in_any_order(read_in_place):
    f, data = read_in_place
    member = data.x_train.base.member
    stored = np.load(f)["x"]
    index = np.array([5, 6, 7, 0, 299, 298, 10, 10, 3])
    assert np.array_equal(member.rows(index), stored[index])
    assert member.rows(np.array([], dtype=np.int64)).shape == (0, 1, 8, 8)


def test_a_round_file_renamed_over_after_its_sha256_was_checked_is_not_loaded(tmp_path):
    """--resume checked a round file's sha256 against its summary, then loaded the path again: a file renamed over it in
    between was loaded unchecked."""
    import torch

    from toolchain.errors import UserError
    from toolchain.prune.round_files import RoundFiles

    path, other = tmp_path / "round_1.pt", tmp_path / "other.pt"
    torch.save({"w": torch.ones(3)}, path)
    torch.save({"w": torch.zeros(3)}, other)
    files = RoundFiles(None, "digits-cnn", {}, (1, 8, 8), {})
    files._sha256_held(path)
    assert torch.equal(files._load(path)["w"], torch.ones(3))  # unchanged: loaded
    os.replace(other, path)
    with pytest.raises(UserError, match="round file '.*round_1.pt' changed while cwtool read it"):
        files._load(path)


def test_a_chmod_or_a_hard_link_is_no_change(read_in_place, tmp_path, two_onnx):
    """A chmod or a backup's hard link moves a file's change time, not its bytes: read on, verify on."""
    from toolchain.runtimes import load_runner
    from toolchain.runtimes.parts import check_parts_unchanged

    f, data = read_in_place
    first = np.asarray(data.x_train[:4])
    os.chmod(f, 0o600)
    os.link(f, tmp_path / "backup.npz")
    assert np.array_equal(np.asarray(data.x_train[:4]), first) and np.asarray(data.x_val[:2]).shape == (2, 1, 8, 8)
    path = Path(shutil.copy(two_onnx[0], tmp_path / "model.onnx"))
    runner = load_runner(path)
    os.chmod(path, 0o600)
    os.link(path, tmp_path / "model_backup.onnx")
    check_parts_unchanged(path, runner.parts_identity)


def test_the_rows_read_in_place_come_from_the_file_the_labels_came_from(tmp_path, monkeypatch):
    """Another .npz renamed over the path between reading the zip's directory (and the labels) and finding the x
    member: x rows of one file with the labels of another, in silence."""
    from toolchain.data import load_data, mapped
    from toolchain.errors import UserError

    f, other = tmp_path / "d.npz", tmp_path / "other.npz"
    for path, fill in ((f, 1.0), (other, 0.0)):
        np.savez(path, x=np.full((300, 1, 8, 8), fill, dtype=np.float32), y=np.arange(300) % 3)
    monkeypatch.setattr(mapped, "MAP_BYTES", 0)
    real = mapped.map_member

    def swapped_first(*args, **kwargs):
        if other.exists():
            os.replace(other, f)
        return real(*args, **kwargs)

    monkeypatch.setattr("toolchain.data.npz.map_member", swapped_first)
    with pytest.raises(UserError, match="data file '.*d.npz' changed while cwtool read it"):
        load_data(str(f), seed=0)


def test_an_artifact_part_gone_is_named_as_that_part(two_onnx, tmp_path):
    from toolchain.errors import UserError
    from toolchain.runtimes import load_runner
    from toolchain.runtimes.parts import check_parts_unchanged

    path = Path(shutil.copy(two_onnx[0], tmp_path / "model.onnx"))
    sidecar = tmp_path / "model.onnx.json"
    sidecar.write_text("{}")
    runner = load_runner(path)
    sidecar.unlink()
    with pytest.raises(UserError, match="artifact file '.*model.onnx.json' changed"):
        check_parts_unchanged(path, runner.parts_identity)
