"""`cwtool train`: a dense starting point that evaluate and compress can load."""

import json

import pytest

from clirun import run_cli


def test_trained_mlp_loads_and_beats_chance(tmp_path, capsys):
    out = tmp_path / "mlp.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "breast-cancer", "--epochs", "5", "--device", "cpu", "--out", out], capsys)
    assert code == 0, err
    assert err.splitlines() == [f"{out}: validation accuracy {err.split()[-1]}"]  # no progress residue in a log
    code, _, err = run_cli(["evaluate", out, "--data", "breast-cancer", "-p", "malignant", "--json", tmp_path / "e.json"], capsys)
    assert code == 0, err
    evaluation = json.loads((tmp_path / "e.json").read_text())
    assert evaluation["accuracy"] > 0.85 and evaluation["protected"][0]["class"] == 0


def test_too_few_outputs_for_the_classes_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", '{"num_classes": 1}', "--data", "breast-cancer",
                            "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "num_classes" in err and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("device", ["cuda", "quantum"])
def test_unavailable_device_exits_2(device, tmp_path, capsys):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "breast-cancer", "--device", device, "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "--device" in err and len(err.strip().splitlines()) == 1
