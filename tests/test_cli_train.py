"""`cwtool train`: a dense starting point that evaluate and compress can load."""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from clirun import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_trained_mlp_loads_and_beats_chance(tmp_path, capsys):
    out = tmp_path / "mlp.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "breast-cancer", "--epochs", "5", "--device", "cpu", "--out", out], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert lines == [  # what is trained, what the data became, one line an epoch (no terminal here: no bar), then the result
        f"training --arch mlp on breast-cancer, {lines[0].split(', ')[1].split()[0]} train rows, 5 epochs; log: {out}.log",
        "data: breast-cancer: sklearn load_breast_cancer, standardized with the train split's mean/std; "
        "labels: malignant=0, benign=1 (fixed by scikit-learn)",
        lines[2], *lines[3:8],
        f"{out}: validation accuracy {err.split()[-5]} (on training rows {err.split()[-1]}"]
    assert lines[2] in ("training on cpu in fp32", "training on cpu in bf16 autocast")
    # each epoch says its pace, and all but the last how long the training has to go
    for e, line in enumerate(lines[3:8], 1):
        assert re.fullmatch(rf"epoch {e}/5 done \([\d.]+ (s|min) an epoch" + (r", about [\d.]+ (s|min) to go\)" if e < 5 else r"\)")
                            + r"; mean training loss [\d.]+", line), line
    losses = [float(line.split()[-1]) for line in lines[3:8]]
    assert losses[-1] < losses[0], losses  # it learns: the loss falls
    logged = (tmp_path / "mlp.pt.log").read_text().splitlines()
    from toolchain.provenance import file_sha256

    written = f"{out} written (sha256 {file_sha256(out)[:12]})"  # the log names the bytes it describes
    assert [line.split("s ", 1)[1] for line in logged] == [*lines[:-1], written, lines[-1]]  # each line stamped
    code, _, err = run_cli(["evaluate", out, "--data", "breast-cancer", "-p", "malignant", "--json", tmp_path / "e.json"], capsys)
    assert code == 0, err
    evaluation = json.loads((tmp_path / "e.json").read_text())
    assert evaluation["accuracy"] > 0.85 and evaluation["protected"][0]["class"] == 0
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "breast-cancer", "--epochs", "1", "--device", "cpu", "--out", out], capsys)
    assert code == 0, err
    again = [line for line in (tmp_path / "mlp.pt.log").read_text().splitlines()  # the log of the checkpoint --out holds now
             if "warning: the model learned nothing" not in line]  # one epoch may not have taught it anything
    assert len(again) == 7 and again[-2].endswith(f"{out} written (sha256 {file_sha256(out)[:12]})")
    # until the new training writes it, --out is the earlier one's: a training killed before its end leaves that said
    assert again[1].endswith(f"{out} is an earlier training's checkpoint (sha256 {written.split()[-1][:12]}) until this one writes it: "
                             "it is replaced at the end (give another --out to keep it)")
    assert "is replaced at the end (give another --out to keep it)" in " ".join(err.split())  # on the console too, not only in the log


def test_a_built_in_architecture_is_sized_to_the_data(tmp_path, capsys):
    """mlp's defaults are 30 features and 2 classes: rows of 20 features in 4 classes stopped training at its first
    batch ("mat1 and mat2 shapes cannot be multiplied"). Sizes the user gives are kept."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    np.savez(tmp_path / "rows.npz", x=x, y=y)
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "rows.npz", "--epochs", "3", "--out", out], capsys)
    assert code == 0 and "--arch 'mlp' built for the data: in_features 20, num_classes 4 (--arch-kwargs sets them)" in err, err
    code, _, err = run_cli(["evaluate", out, "--data", tmp_path / "rows.npz", "-p", "3", "--split", "test"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", '{"in_features": 30}', "--data", tmp_path / "rows.npz",
                            "--out", tmp_path / "n.pt"], capsys)
    assert code == 2 and "shape (20,)" in err, err  # the user's own number is not overridden


def test_weights_of_a_built_in_made_for_other_sizes_name_the_sizes_it_takes(tmp_path, capsys):
    import torch

    from toolchain.models.architectures import MLP

    torch.save(MLP(20, 10).state_dict(), tmp_path / "sd.pt")
    code, _, err = run_cli(["evaluate", tmp_path / "sd.pt", "--arch", "mlp", "--data", "breast-cancer", "-p", "0"], capsys)
    assert code == 2 and "shape of net.1.weight is (64, 20) in the file, (64, 30) in the arch" in err, err
    assert "built-in 'mlp' takes in_features (default 30), num_classes (default 2)" in err, err


def test_too_few_outputs_for_the_classes_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", '{"num_classes": 1}', "--data", "breast-cancer",
                            "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "set num_classes to 2" in err and not (tmp_path / "m.pt").exists() and not (tmp_path / "m.pt.log").exists()
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", '{"num_classes": 2}', "--data", "digits",
                            "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "num_classes" in err and not (tmp_path / "m.pt").exists() and not (tmp_path / "m.pt.log").exists()


def test_a_training_log_over_an_input_is_refused(tmp_path, capsys):
    import numpy as np

    rows = tmp_path / "rows.npz"
    np.savez(rows, x=np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32), y=np.arange(60) % 2)
    (tmp_path / "m.pt.log").symlink_to(rows)  # the log train would write is the data it reads
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", '{"in_features": 3}', "--data", rows, "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "training log" in err and "also an input" in err and len(err.strip().splitlines()) == 1
    assert rows.stat().st_size > 0 and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("device", ["cuda", "quantum"])
def test_unavailable_device_exits_2(device, tmp_path, capsys):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "breast-cancer", "--device", device, "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "--device" in err and len(err.strip().splitlines()) == 1


def test_checkpoint_of_a_relative_arch_file_loads_from_anywhere(tmp_path, monkeypatch, capsys):
    """`--arch net.py:Net` is relative to where train ran; the checkpoint must not be. The file is
    code: the checkpoint names it, but only the user's --arch (or --trust-model) runs it."""
    import shutil

    from toolchain.errors import UserError
    from toolchain.models.loading import load_model

    work, elsewhere, moved = tmp_path / "work", tmp_path / "elsewhere", tmp_path / "moved"
    for folder in (work, elsewhere, moved):
        folder.mkdir()
    (work / "net.py").write_text("import torch\nclass Net(torch.nn.Sequential):\n"
                                 "    def __init__(self):\n        super().__init__(torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))\n")
    monkeypatch.chdir(work)
    code, _, err = run_cli(["train", "--arch", "net.py:Net", "-d", "breast-cancer", "--epochs", "1", "--device", "cpu", "--out", "m.pt"], capsys)
    assert code == 0, err
    monkeypatch.chdir(elsewhere)
    with pytest.raises(UserError, match="--arch path/to/net.py:Net"):
        load_model(work / "m.pt")  # the recorded file is not run on the checkpoint's say-so
    assert load_model(work / "m.pt", trust_model=True).module[2].out_features == 2
    assert load_model(work / "m.pt", arch=f"{work / 'net.py'}:Net").module[2].out_features == 2
    code, _, err = run_cli(["evaluate", work / "m.pt", "-d", "breast-cancer", "-p", "1", "--arch", work / "net.py:Net"], capsys)
    assert code == 0, err  # the same file named another way is the same arch
    for name in ("m.pt", "net.py"):
        shutil.move(work / name, moved / name)
    assert load_model(moved / "m.pt", arch=f"{moved / 'net.py'}:Net").module[2].out_features == 2  # moved together
    assert load_model(moved / "m.pt", trust_model=True).module[2].out_features == 2  # found beside it when trusted

def _formats_seen(model, x, y, config):
    """The memory order of the last conv's weights (they have channels to order) at every forward, and of all
    weights after training."""
    import torch

    from toolchain.models.train import train

    seen = []
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    hook = conv.register_forward_pre_hook(lambda m, args: args[0].is_meta or seen.append(  # not the memory estimate's pass
        m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()))
    train(model, x, y, config, device=torch.device("cpu"))
    hook.remove()
    return seen, [p.is_contiguous() for p in model.parameters()]


def test_conv_nets_train_channels_last_and_come_back_in_the_default_order():
    import numpy as np
    import torch

    from toolchain.models import registry
    from toolchain.models.train import TrainConfig

    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    y = np.arange(40) % 10
    seen, weights = _formats_seen(registry.create("digits-cnn"), x, y, TrainConfig(epochs=1, batch_size=16))
    from toolchain.models.fast_paths import autocast_dtype

    bf16_probe = autocast_dtype("auto", torch.device("cpu")) is not None  # where bf16 is native: the arithmetic's probe too
    assert len(seen) == 1 + bf16_probe + 3 and all(seen)  # the probes on two rows, then every training batch: channels-last
    assert all(weights)

    class Flat(torch.nn.Module):  # .view(N, -1) of a conv's output cannot take channels-last: trained as before
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.head = torch.nn.Linear(4 * 8 * 8, 10)

        def forward(self, t):
            t = self.conv(self.stem(t))
            return self.head(t.view(t.shape[0], -1))

    seen, weights = _formats_seen(Flat(), x, y, TrainConfig(epochs=1, batch_size=16))
    assert len(seen) == 1 + bf16_probe + 3 and seen[0] and not any(seen[1:]) and all(weights)  # the probe failed at the .view


def _named_image_folder(root):
    """Four named classes of 8x8 grayscale digits: data that names fewer classes than digits-cnn's default 10 outputs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    for label, name in enumerate(["zero", "one", "two", "three"]):
        (root / name).mkdir(parents=True)
        for i, row in enumerate(x[y == label][:30]):
            Image.fromarray((row.reshape(8, 8) * 16).clip(0, 255).astype(np.uint8), mode="L").save(root / name / f"{i}.png")
    return root


def test_the_model_gets_one_output_per_named_class_so_evaluate_takes_it(tmp_path, capsys):
    folder = _named_image_folder(tmp_path / "imgs")
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", folder, "--epochs", "1", "--device", "cpu", "--out", out], capsys)
    assert code == 0 and "num_classes 4" in err, err
    code, _, err = run_cli(["evaluate", out, "--data", folder, "-p", "three"], capsys)
    assert code == 0, err


def test_an_arch_without_num_classes_and_too_many_outputs_exits_2(tmp_path, capsys):
    folder = _named_image_folder(tmp_path / "imgs")
    (tmp_path / "net.py").write_text("import torch.nn as nn\n\nclass Ten(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                                     "        self.fc = nn.Linear(64, 10)\n\n    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    code, _, err = run_cli(["train", "--arch", f"{tmp_path / 'net.py'}:Ten", "--data", folder, "--epochs", "1", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "10 outputs" in err and "num_classes" in err and not (tmp_path / "m.pt").exists(), err


def _rows(path, n=60):
    import numpy as np

    np.savez(path, x=np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32), y=np.arange(n) % 2)
    return path


MLP3 = ["--arch", "mlp", "--arch-kwargs", '{"in_features": 3}', "--epochs", "1", "--device", "cpu"]


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_the_training_log_never_writes_over_the_checkpoint_it_would_replace(link, tmp_path, capsys):
    rows = _rows(tmp_path / "rows.npz")
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", out], capsys)
    assert code == 0, err
    before = out.read_bytes()
    (tmp_path / "m.pt.log").unlink()
    if link == "symlink":
        (tmp_path / "m.pt.log").symlink_to(out)
    else:
        (tmp_path / "m.pt.log").hardlink_to(out)
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", out], capsys)
    assert code == 2 and "training log" in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == before


def test_a_module_architecture_s_source_is_an_input_too(tmp_path, monkeypatch, capsys):
    rows = _rows(tmp_path / "rows.npz")
    (tmp_path / "mynet.py").write_text("import torch\nclass Net(torch.nn.Sequential):\n"
                                       "    def __init__(self):\n        super().__init__(torch.nn.Linear(3, 2))\n")
    source = (tmp_path / "mynet.py").read_text()
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "m.pt.log").symlink_to(tmp_path / "mynet.py")
    code, _, err = run_cli(["train", "--arch", "mynet:Net", "--data", rows, "--epochs", "1", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "also an input" in err, err
    assert (tmp_path / "mynet.py").read_text() == source and not (tmp_path / "m.pt").exists()


def test_train_out_is_a_file_in_a_folder_made_for_it(tmp_path, monkeypatch, capsys):
    rows = _rows(tmp_path / "rows.npz")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", "."], capsys)
    assert code == 2 and "is a folder" in err, err
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", "new/sub/m.pt"], capsys)
    assert code == 0, err
    assert (tmp_path / "new/sub/m.pt").is_file() and "epoch 1/1 done" in (tmp_path / "new/sub/m.pt.log").read_text()


def _train_a_model_that_raises(tmp_path, capsys, raise_statement: str):
    """train on 600 rows of a user's model whose forward runs `raise_statement` from its 9th call (the probes and the
    first steps pass): (exit code, stderr)."""
    rows = _rows(tmp_path / "rows.npz", n=600)
    (tmp_path / "raises.py").write_text(
        "import torch\nclass Net(torch.nn.Sequential):\n    calls = 0\n"
        "    def __init__(self):\n        super().__init__(torch.nn.Linear(3, 2))\n"
        f"    def forward(self, x):\n        Net.calls += 1\n        if Net.calls > 8:\n            {raise_statement}\n"
        "        return super().forward(x)\n")
    code, _, err = run_cli(["train", "--arch", f"{tmp_path / 'raises.py'}:Net", "--data", rows, "--epochs", "2", "--batch-size", "16",
                            "--device", "cpu", "--out", tmp_path / "m.pt"], capsys)
    return code, err


def test_a_model_raising_keyboardinterrupt_is_bad_input_and_its_training_writes_no_checkpoint(tmp_path, capsys):
    """No signal reached cwtool (a Ctrl-C arrives as a signal, and exits 130): the model's code raised it, exit 2."""
    code, err = _train_a_model_that_raises(tmp_path, capsys, "raise KeyboardInterrupt")
    assert code == 2 and err.splitlines()[-1].startswith("cwtool: error: code cwtool ran (the model's or the data's) raised "
                                                          "KeyboardInterrupt, and no signal reached cwtool"), err
    assert not (tmp_path / "m.pt").exists()
    last = (tmp_path / "m.pt.log").read_text().splitlines()[-1]
    assert "stopped (KeyboardInterrupt)" in last and "was not written" in last, last


def test_a_model_that_fails_while_training_is_bad_input_not_a_cwtool_bug(tmp_path, capsys):
    code, err = _train_a_model_that_raises(tmp_path, capsys, "raise RuntimeError('my layer broke')")
    assert code == 2 and "the model's forward failed while training, in epoch 1 (RuntimeError: my layer broke)" in err.splitlines()[-1], err
    assert not (tmp_path / "m.pt").exists()
    assert "was not written" in (tmp_path / "m.pt.log").read_text().splitlines()[-1]


def test_a_check_that_refuses_before_the_first_epoch_ends_the_log_with_why(tmp_path, capsys, monkeypatch):
    """The training-memory check and the precision probe ran after the log was opened but outside what records how a run
    ended: the log stopped at "--arch ... built for the data" with no word of why (a reviewer's find)."""
    from toolchain.errors import UserError
    from toolchain.models import memory

    def refuses(*args, **kwargs):
        raise UserError("a training step on 128 samples needs more memory than there is")

    monkeypatch.setattr(memory, "check_training_fits", refuses)
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "breast-cancer", "--epochs", "1", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "a training step on 128 samples" in err.splitlines()[-1], err
    last = (tmp_path / "m.pt.log").read_text().splitlines()[-1]
    assert "stopped (UserError: a training step on 128 samples" in last and "was not written" in last, last


def test_a_module_architecture_is_checked_without_running_its_package(tmp_path, monkeypatch, capsys):
    """The output checks come first: a package's __init__ is code, and one that fails to import is exit 2 (its own
    error, from the import the architecture needs), not an internal error."""
    (tmp_path / "boom").mkdir()
    (tmp_path / "boom" / "__init__.py").write_text("open('ran', 'w').write('x')\nraise RuntimeError('parent init blew up')\n")
    (tmp_path / "boom" / "m.py").write_text("import torch\nclass C(torch.nn.Linear):\n    def __init__(self):\n        super().__init__(30, 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--arch", "boom.m:C", "--data", "breast-cancer", "--out", "."], capsys)
    assert code == 2 and "is a folder" in err and not (tmp_path / "ran").exists(), err
    code, _, err = run_cli(["train", "--arch", "boom.m:C", "--data", "breast-cancer", "--out", "m.pt"], capsys)
    assert code == 2 and "cannot import module 'boom.m'" in err, err
    (tmp_path / "m.pt.log").symlink_to(tmp_path / "boom" / "m.py")  # the module's file, found on disk without importing
    code, _, err = run_cli(["train", "--arch", "boom.m:C", "--data", "breast-cancer", "--out", "m.pt"], capsys)
    assert code == 2 and "also an input" in err, err


def test_weight_tickets_refuse_the_channel_ranking_flags():
    from toolchain.config import PruneConfig

    for settings in ({"allocation": "global"}, {"magnitude_norm": 2}):
        with pytest.raises(ValueError, match="for channel pruning"):
            PruneConfig(granularity="weight", **settings)


def test_only_a_user_s_own_model_failing_in_training_is_bad_input():
    """cwtool's and the libraries' models failing is a bug to report (exit 3), not the user's input; under bf16
    autocast the message names the fp32 way out."""
    import torch

    from toolchain.errors import UserError
    from toolchain.models import registry
    from toolchain.models.train import _forward_failed

    class Own(torch.nn.Linear):
        pass

    error = RuntimeError("index_add_(): self (Float) and source (BFloat16) must have the same scalar type")
    assert _forward_failed(error, registry.create("digits-cnn"), 1, torch.bfloat16) is error
    mine = _forward_failed(error, Own(3, 2), 2, torch.bfloat16)
    assert isinstance(mine, UserError) and "in epoch 2" in str(mine) and "--train-precision fp32" in str(mine)
    assert "--train-precision" not in str(_forward_failed(error, Own(3, 2), 2, None))


def test_a_built_in_module_has_no_source_file_to_guard(tmp_path, monkeypatch):
    from toolchain.input_paths import _module_files

    monkeypatch.chdir(tmp_path)
    (tmp_path / "built-in").write_text("")  # not the origin "built-in" of sys read as a relative path
    assert _module_files("sys") == [] and _module_files("a..b") == [] and _module_files(".rel") == []
    assert _module_files("json") == [Path(json.__file__)]


def test_a_package_spread_over_two_import_paths_guards_every_file_the_import_may_read(tmp_path, monkeypatch):
    """pkgutil.extend_path puts B/pk/m.py on the package's path only when A/pk/__init__.py runs: the files are found
    under every import path, without running it."""
    from toolchain.input_paths import _module_files

    for root in ("A", "B"):
        (tmp_path / root / "pk").mkdir(parents=True)
        (tmp_path / root / "pk" / "__init__.py").write_text("from pkgutil import extend_path\n__path__ = extend_path(__path__, __name__)\n")
    (tmp_path / "B" / "pk" / "m.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "B"))
    monkeypatch.syspath_prepend(str(tmp_path / "A"))
    found = set(_module_files("pk.m"))
    assert {tmp_path / "B" / "pk" / "m.py", tmp_path / "A" / "pk" / "__init__.py", tmp_path / "B" / "pk" / "__init__.py"} <= found
    assert "pk" not in sys.modules  # nothing ran


def test_a_factory_s_container_holding_the_user_s_layer_is_the_user_s_model(tmp_path, capsys):
    rows = _rows(tmp_path / "rows.npz", n=600)
    (tmp_path / "seqmod.py").write_text(
        "import torch\nclass Boom(torch.nn.Module):\n"
        "    def forward(self, x):\n        if self.training:\n            raise RuntimeError('my layer broke in training')\n        return x\n"
        "def build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 2), Boom())\n")
    code, _, err = run_cli(["train", "--arch", f"{tmp_path / 'seqmod.py'}:build", "--data", rows, "--epochs", "1", "--device", "cpu",
                            "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "my layer broke in training" in err.splitlines()[-1], err


@pytest.mark.parametrize("raise_statement, said", [
    ("raise SystemExit(0)", "(sys.exit(0))"),
    ("raise SystemExit('bye\\nepoch 2/2 done')", "(sys.exit('bye\\nepoch 2/2 done'))"),
    ("raise GeneratorExit", "(GeneratorExit)"),
    ("raise type('Odd', (Exception,), {'__str__': lambda self: 1 / 0})()", "(Odd)"),
    ("return torch.zeros(len(x), 1)", "returned shape (16, 1)"),
    ("return 'logits'", "returned a str in training mode"),
    ("raise type('Weird', (BaseException,), {})('boom')", "(Weird: boom)"),
    ("return super().forward(x).detach()", "logits detached from its parameters"),
])
def test_a_model_that_exits_or_returns_no_logits_while_training_is_bad_input(raise_statement, said, tmp_path, capsys):
    code, err = _train_a_model_that_raises(tmp_path, capsys, raise_statement)
    assert code == 2 and said in err.splitlines()[-1], err
    assert not (tmp_path / "m.pt").exists()
    log = (tmp_path / "m.pt.log").read_text().splitlines()
    assert "was not written" in log[-1] and not any(line.endswith("epoch 2/2 done") for line in log), log


@pytest.mark.parametrize("body", ["super().__init__()", "super().__init__(torch.nn.Linear(3, 2))\n        self.requires_grad_(False)"])
def test_a_model_with_nothing_to_train_is_bad_input(body, tmp_path, capsys):
    rows = _rows(tmp_path / "rows.npz", n=64)
    (tmp_path / "still.py").write_text(f"import torch\nclass Net(torch.nn.Sequential):\n    def __init__(self):\n        {body}\n"
                                       "    def forward(self, x):\n        return super().forward(x) if len(self) else x[:, :2] * 1.0\n")
    code, _, err = run_cli(["train", "--arch", f"{tmp_path / 'still.py'}:Net", "--data", rows, "--epochs", "1", "--device", "cpu",
                            "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "no parameter to train" in err.splitlines()[-1], err


def test_train_replaces_its_own_log_and_no_other_file_of_that_name(tmp_path, capsys):
    rows = _rows(tmp_path / "rows.npz")
    for _ in range(2):  # a second training to the same --out replaces the first one's log
        code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", tmp_path / "m.pt"], capsys)
        assert code == 0, err
    assert (tmp_path / "m.pt.log").read_text().count("training --arch") == 1
    (tmp_path / "notes.log").write_text("precious\n")
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", tmp_path / "notes"], capsys)
    assert code == 2 and "is not a cwtool training log" in err.splitlines()[-1], err
    assert (tmp_path / "notes.log").read_text() == "precious\n" and not (tmp_path / "notes").exists()


def test_a_stopped_training_keeps_the_log_of_the_checkpoint_it_did_not_replace(tmp_path, capsys, monkeypatch):
    """Ctrl-C in a second training to one --out left the first checkpoint and replaced its log with the stopped run's
    (3,381 bytes to 1,096: a new user's finding). The earlier log stays first, then the stopped run's lines."""
    from toolchain.errors import Interrupted
    from toolchain.models import train

    rows = _rows(tmp_path / "rows.npz")
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    first, checkpoint = (tmp_path / "m.pt.log").read_text(), (tmp_path / "m.pt").read_bytes()

    def stopped(*args, **kwargs):
        raise Interrupted("SIGINT")

    monkeypatch.setattr(train, "train", stopped)
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", tmp_path / "m.pt"], capsys)
    assert code == 130, err
    log = (tmp_path / "m.pt.log").read_text()
    assert log.startswith(first) and log.count("training --arch") == 2 and (tmp_path / "m.pt").read_bytes() == checkpoint
    assert "stopped (" in log.splitlines()[-1] and "was not written" in log.splitlines()[-1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cwtool")]


def test_train_never_writes_its_log_through_a_link(tmp_path, capsys):
    rows = _rows(tmp_path / "rows.npz")
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    first = (tmp_path / "m.pt.log").read_text()
    (tmp_path / "m5.pt.log").symlink_to(tmp_path / "m.pt.log")
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", tmp_path / "m5.pt"], capsys)
    assert code == 2 and "is a symbolic link" in err.splitlines()[-1], err
    assert (tmp_path / "m.pt.log").read_text() == first and not (tmp_path / "m5.pt").exists()


def test_an_empty_training_log_is_replaced(tmp_path, capsys):
    rows = _rows(tmp_path / "rows.npz")
    (tmp_path / "m.pt.log").write_text("")  # what a run stopped before its first line leaves
    code, _, err = run_cli(["train", *MLP3, "--data", rows, "--out", tmp_path / "m.pt"], capsys)
    assert code == 0 and "training --arch" in (tmp_path / "m.pt.log").read_text(), err


def test_a_training_that_learned_nothing_says_so_and_what_to_try(tmp_path, capsys):
    """'validation accuracy 0.3333' at chance was all a new user got from 3 steps an epoch: no word that the model had
    learned nothing, nor what to change."""
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "digits", "--epochs", "1", "--lr", "1e-9", "--device", "cpu",
                            "--out", out], capsys)
    assert code == 0, err
    last = " ".join(err.split("warning: ", 1)[1].split()) if "warning: " in err else err
    assert last.startswith("the model learned nothing useful:") and "try more --epochs, a smaller --batch-size" in last, err
    assert "warning: the model learned nothing useful" in (tmp_path / "m.pt.log").read_text()
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "digits", "--epochs", "3", "--device", "cpu", "--out", out], capsys)
    assert code == 0 and "learned nothing" not in err, err


def test_a_model_below_the_commonest_class_is_not_said_to_be_within_5_points_of_it():
    """'its accuracy 0.3389 is within 5 points of always answering the commonest class (0.6667)': 33 points below."""
    from types import SimpleNamespace

    from toolchain.cli.train import _learned_nothing

    y = np.array([0] * 20 + [1] * 10)
    config = SimpleNamespace(epochs=1, batch_size=128, lr=1e-3)
    data = SimpleNamespace(y_val=y, y_train=y, class_names=["a", "b"])
    below = np.eye(2)[np.r_[np.ones(20, int), np.zeros(10, int)]]  # answers both classes, each the wrong one: accuracy 0
    near = np.eye(2)[np.r_[np.zeros(19, int), [1], np.zeros(10, int)]]  # accuracy 0.633, the commonest class 0.667
    assert "balanced accuracy (the mean of the classes' recalls) 0.0000 is below always answering one class (0.5000)" in \
        _learned_nothing(below, data, config)
    assert "0.4750 is within 5 points of always answering one class" in _learned_nothing(near, data, config)
    # a class of 8%: a model catching 80% of it at 97% specificity scored 0.96 against the commonest class's 0.92, and was
    # told it learned nothing (a sepsis model of AUC 0.98)
    rare = np.array([0] * 920 + [1] * 80)
    caught = np.r_[np.zeros(892, int), np.ones(28, int), np.ones(64, int), np.zeros(16, int)]
    rare_data = SimpleNamespace(y_val=rare, y_train=rare, class_names=["no", "sepsis"])
    assert _learned_nothing(np.eye(2)[caught], rare_data, config) is None
    one = SimpleNamespace(y_val=np.zeros(30, int), y_train=y, class_names=["a", "b"])  # nothing tells learning from guessing
    assert _learned_nothing(np.eye(2)[np.r_[np.zeros(29, int), 1]], one, config) is None


def test_a_model_that_learnt_its_training_rows_by_heart_is_not_told_to_train_longer():
    """A MobileNetV2 at 81.9% on its training rows and 37% on validation was told "try more --epochs" (a new user's
    finding): the training rows' accuracy is said beside validation's, and rows learnt by heart get other advice."""
    from types import SimpleNamespace

    from toolchain.cli.train import _learned_nothing

    y = np.arange(30) % 3
    dataset = SimpleNamespace(y_val=y, y_train=np.arange(300) % 3, class_names=["a", "b", "c"])
    chance = np.eye(3)[np.zeros_like(y)]  # one answer for every row: accuracy 1/3
    config = SimpleNamespace(epochs=15, batch_size=32, lr=0.003)
    assert "try more --epochs" in _learned_nothing(chance, dataset, config)  # given train_accuracy only where learnt by heart
    by_heart = _learned_nothing(chance, dataset, config, train_accuracy=0.82)
    assert "by heart" in by_heart and "more epochs will not help" in by_heart and "try more --epochs" not in by_heart, by_heart


def test_learning_by_heart_is_judged_on_balanced_accuracy():
    """Plain accuracy against each split's commonest class misfired both ways (a regression reviewer's finds): a model
    answering the commonest class of a 90/10 training set looked as if it had learnt its rows by heart beside a balanced
    --val, and one at 1.0 on 450/50 training rows and 0.5 on a balanced --val did not."""
    from toolchain.cli.train import BY_HEART, balanced_accuracy

    train_y, val_y = np.array([0] * 90 + [1] * 10), np.repeat([0, 1], 50)
    one_answer = balanced_accuracy(train_y, np.zeros(100)) - balanced_accuracy(val_y, np.zeros(100))
    assert one_answer == 0 < BY_HEART
    by_heart = balanced_accuracy(train_y, train_y) - balanced_accuracy(val_y, np.random.default_rng(0).integers(0, 2, 100))
    assert by_heart >= BY_HEART


def test_an_epoch_without_a_step_says_so_not_a_loss_of_zero(tmp_path, capsys):
    """--batch-size 1 with BatchNorm skips every batch: "mean training loss 0.0000" read as a perfect fit (a regression
    reviewer's find). It is refused before the first epoch now, saying why."""
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", "digits", "--epochs", "1", "--batch-size", "1",
                            "--device", "cpu", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "--batch-size 1 is one row, and BatchNorm cannot train on one row" in err and "loss 0.0000" not in err, err
    assert not (tmp_path / "m.pt").exists()


def test_a_second_training_to_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    """Two trainings to one --out both exited 0, each saying it wrote the file; the log interleaved their epochs."""
    import subprocess
    import sys
    import time

    out = tmp_path / "m.pt"
    first = subprocess.Popen([sys.executable, "-m", "toolchain", "train", "--arch", "digits-cnn", "--data", "digits", "--epochs", "500",
                              "--out", str(out)], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "m.pt.log"
        deadline = time.monotonic() + 120
        while not (log.is_file() and "training --arch" in log.read_text()) and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()
        code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", "digits", "--epochs", "1", "--out", out], capsys)
        assert code == 2 and "is being trained by another cwtool process now" in err and len(err.strip().splitlines()) == 1, err
        assert "training --arch digits-cnn on digits" in log.read_text() and log.read_text().count("training --arch") == 1
    finally:
        first.kill()
        first.wait()
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", "digits", "--epochs", "1", "--out", out], capsys)
    assert code == 0, err  # its lock went with it


def test_the_training_lock_is_on_the_log_the_path_names(tmp_path, monkeypatch):
    """A second training could open the old log, the first lock it, replace it and let it go, and the second then lock
    the replaced file and train on (two trainings, one --out): the lock is kept only where the path still names it."""
    from toolchain.cli import train as command
    from toolchain.errors import UserError
    from toolchain.rundir import RunDir

    log = tmp_path / "m.pt.log"
    log.write_text("old\n")
    real_open = os.open

    def replaced_while_opening(path, flags, *args):
        fd = real_open(path, flags, *args)
        if str(path) == str(log) and not replaced:
            replaced.append(1)
            (tmp_path / "new").write_text("new\n")
            os.replace(tmp_path / "new", log)  # the first training's fresh log
            held.append(command._hold_log(log, tmp_path / "m.pt"))  # and it holds it
        return fd

    replaced, held = [], []
    monkeypatch.setattr(command.os, "open", replaced_while_opening)
    with pytest.raises(UserError, match="is being trained by another cwtool process"):
        command._hold_log(log, tmp_path / "m.pt")
    RunDir.release(held[0])


def test_a_long_epoch_says_how_far_its_batches_are(tmp_path, monkeypatch, capsys):
    """An epoch of 20,000 images of 224 px on a CPU takes an hour: its log said nothing until the epoch's end."""
    from toolchain.report import pace

    rows = _rows(tmp_path / "rows.npz", n=400)
    monkeypatch.setattr(pace, "PACE_SECONDS", 0.0)  # every batch is "long"
    code, _, err = run_cli(["train", *MLP3, "--epochs", "2", "--batch-size", "32", "--data", rows, "--out", tmp_path / "m.pt"],
                           capsys)
    assert code == 0, err
    log = (tmp_path / "m.pt.log").read_text()
    steps = re.findall(r"training mlp, epoch (\d)/2: (\d+) of (\d+) batches \([\d.]+ s, about [\d.]+ s to go\)", log)
    assert {s[0] for s in steps} == {"1", "2"} and len({s[2] for s in steps}) == 1, log
    assert [int(s[1]) for s in steps if s[0] == "1"] == list(range(1, int(steps[0][2]))), log  # the last one is the epoch's end
    assert log.index("epoch 1/2: 1 of") < log.index("epoch 1/2 done") < log.index("epoch 2/2: 1 of"), log
