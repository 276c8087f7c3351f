"""Data a reviewer of the data layer handed cwtool (each once an exit 3, an out-of-memory kill or a class dropped in
silence): every one is now read as meant or refused as bad input -- one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clirun import one_line_error, run_cli


@pytest.mark.parametrize("protect", ["\u00b2", "-\u00b2", "\u00b9\u2070"])
def test_a_superscript_digit_as_protected_class_is_bad_input(trained_digits, protect, capsys):
    code, _, err = run_cli(["evaluate", trained_digits[0], "-d", "digits", "-p", protect], capsys)
    one_line_error(code, err, "--protect-class", "neither a class index nor one of the class names")


@pytest.mark.parametrize("shape", ["\u00b2,2", "1,2,x", "1,,64", "64,", "99999,99999,99999"])
def test_an_input_shape_that_is_not_ascii_sizes_is_bad_input(trained_digits, shape, tmp_path, capsys):
    x = np.random.default_rng(0).random((40, 64), dtype=np.float32)
    np.savez(tmp_path / "flat.npz", x=x, y=np.arange(40) % 10)
    code, _, err = run_cli(["evaluate", trained_digits[0], "-d", tmp_path / "flat.npz", "-p", "1", "--input-shape", shape],
                           capsys)
    one_line_error(code, err, "--input-shape", "is not 1 to 4 sizes from 1 to")  # 99999: not "positive" (it is), too large


def test_a_round_file_named_by_a_superscript_is_not_a_done_round(tmp_path):
    from toolchain.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.rounds.mkdir(parents=True)
    (run.rounds / "round_\u00b2.json").write_text("{}")
    (run.rounds / "round_1.json").write_text("{}")
    assert run.done_rounds() == [1]


class _RowsReadOnDemand:
    """Rows a folder would give, made as they are read: 128 MiB in all, never held."""

    shape = (4096, 8, 32, 32)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        start, stop, _ = index.indices(len(self))
        return np.arange(start, stop, dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones(self.shape[1:], np.float32)


def test_save_rows_writes_a_folder_s_rows_a_batch_at_a_time(tmp_path):
    import tracemalloc

    from toolchain.cli.verify import _write_rows

    rows = _RowsReadOnDemand()
    tracemalloc.start()
    try:
        _write_rows(tmp_path / "rows.npz", {"x": rows, "y": np.arange(len(rows)) % 3, "class_names": ["a", "b", "c"]}, ())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 << 20, f"{peak / 2**20:.0f} MiB held to write 128 MiB of rows"
    saved = np.load(tmp_path / "rows.npz")
    assert saved["x"].shape == rows.shape and saved["x"].dtype == np.float32
    assert np.array_equal(saved["x"][:, 0, 0, 0], np.arange(len(rows), dtype=np.float32))
    assert np.array_equal(saved["x"][1234], rows[1234:1235][0])
    assert list(saved["class_names"]) == ["a", "b", "c"] and np.array_equal(saved["y"], np.arange(len(rows)) % 3)


def test_layer_outputs_count_an_in_place_layer_once_and_a_view_not_at_all():
    import torch
    from torch import nn

    from toolchain.models.memory import activation_bytes

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8 * 16 * 16, 2))
    assert activation_bytes(net, (3, 16, 16), 5) == 4 * 5 * (8 * 16 * 16 + 2)
    assert activation_bytes(net, (3, 16, 16), 5, element_bytes=2) == 2 * 5 * (8 * 16 * 16 + 2)
    weights = [p.clone() for p in net.parameters()]
    assert all(torch.equal(a, b) and b.device.type == "cpu" for a, b in zip(weights, net.parameters()))

    class Numpy(nn.Module):  # a forward the meta device cannot follow: no estimate
        def forward(self, x):
            return torch.as_tensor(x.numpy())

    assert activation_bytes(Numpy(), (3, 4, 4), 2) is None


def test_training_that_cannot_fit_in_memory_is_refused_before_any_step(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import toolchain.models.memory as memory

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    monkeypatch.setattr(memory, "available_memory", lambda: (64 << 20, "a test's limit"))
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "tiny-resnet", "--data", tmp_path / "imgs", "--out", out, "--image-size", "512",
                            "--epochs", "1"], capsys)
    one_line_error(code, err, "a training step on 8 samples of 3x512x512 needs about", "a test's limit", "--batch-size")
    assert not out.exists()
    # the same at a size that fits trains
    code, _, err = run_cli(["train", "--arch", "tiny-resnet", "--data", tmp_path / "imgs", "--out", out, "--image-size", "16",
                            "--epochs", "1"], capsys)
    assert code == 0, err
    assert out.exists()


def _image_folder(root: Path, classes=("a", "b", "c"), per_class: int = 4, side: int = 12, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("link", ["nothing", "loop"])
@pytest.mark.parametrize("flag", ["--data", "--val"])
def test_a_class_folder_that_is_a_broken_link_is_refused_not_dropped(link, flag, tmp_path, capsys):
    data = _image_folder(tmp_path / "train")
    val = _image_folder(tmp_path / "val")
    broken = (data if flag == "--data" else val) / "c"
    for p in broken.iterdir():
        p.unlink()
    broken.rmdir()
    if link == "nothing":
        broken.symlink_to(tmp_path / "gone")
    else:
        broken.symlink_to(broken.parent / ".c2")
        (broken.parent / ".c2").symlink_to(broken)  # hidden: only the loop through c is seen
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", data, "--val", val, "--out", out, "--epochs", "1"], capsys)
    one_line_error(code, err, "'c' in", "is a link to nothing (or a loop of links)")
    assert not out.exists()


@pytest.mark.parametrize("missing_from", ["train", "train-but-named"])
def test_a_train_split_without_a_class_the_held_out_splits_hold_is_refused(missing_from, tmp_path, capsys):
    rng = np.random.default_rng(0)
    y_train = np.arange(60) % 2  # classes 0 and 1; the test split also holds 2
    splits = {"x_train": rng.random((60, 4), dtype=np.float32), "y_train": y_train,
              "x_test": rng.random((12, 4), dtype=np.float32), "y_test": np.arange(12) % 3}
    if missing_from == "train-but-named":
        splits["class_names"] = np.array(["cat", "dog", "fox"])
    np.savez(tmp_path / "d.npz", **splits)
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "d.npz", "--out", out, "--epochs", "1"], capsys)
    one_line_error(code, err, "the train split of", "has no row of " + ("class 2," if missing_from == "train" else
                                                                        "class 'fox' (label 2),"), "which the test rows hold")
    assert not out.exists()


def test_a_folder_named_like_a_bundled_set_is_not_read_as_that_set(tmp_path, monkeypatch, capsys):
    _image_folder(tmp_path / "digits", classes=("a", "b"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.pt"
    args = ["train", "--arch", "mlp", "--out", out, "--epochs", "1", "--image-size", "8"]
    code, _, err = run_cli([*args, "--data", "digits"], capsys)
    one_line_error(code, err, "names both the bundled data set and the folder 'digits' here", "give './digits'")
    code, _, err = run_cli(["demo"], capsys)
    one_line_error(code, err, "a folder 'digits' here", "run the demo from another folder")
    assert not out.exists()
    code, _, err = run_cli([*args, "--data", "./digits"], capsys)
    assert code == 0, err
    from toolchain.models.loading import load_model

    assert load_model(out).extra["data"]["class_names"] == ["a", "b"]


def test_a_model_trained_on_unresized_images_is_advised_without_a_size_and_a_syntax_error_is_not_advised(tmp_path, capsys):
    data = _image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=6, side=12)
    model = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", data, "--out", model, "--epochs", "1"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", model, "--data", data, "-p", "b", "--image-size", "16"], capsys)
    one_line_error(code, err, "give --color rgb --normalize none, and --image-size 12x12 (the model's own size) for images of "
                   "another size, no --resize")
    for bad in (["--image-size", "abc"], ["--color", "purple"]):
        code, _, err = run_cli(["evaluate", model, "--data", data, "-p", "b", *bad], capsys)
        one_line_error(code, err, f"{bad[0]} '{bad[1]}' is not")
        assert "records how its training's images were prepared" not in err, err


@pytest.mark.parametrize("direction", ["val-npz-of-the-training-images", "test-npz-of-the-val-images"])
def test_held_out_rows_saved_from_images_of_another_split_are_refused(direction, tmp_path, capsys):
    from toolchain.data import load_data
    from toolchain.data.samples import batches

    folder = _image_folder(tmp_path / "imgs", per_class=20)
    val = _image_folder(tmp_path / "val", per_class=8, seed=1)  # other images than the training ones
    read = lambda rows: np.concatenate(list(batches(rows)))  # noqa: E731
    rows = tmp_path / "rows.npz"
    out = tmp_path / "m.pt"
    if direction == "val-npz-of-the-training-images":  # the folder's own training images, prepared and saved as rows
        ds = load_data(str(folder), seed=0)
        np.savez(rows, x=read(ds.x_train), y=ds.y_train, class_names=np.array(ds.class_names))
        args = ["--val", rows]
        said = "42 of the 42 rows of --val are also in --data's training rows (same input and label; all 51 of its images, decoded)"
    else:  # the validation images, prepared and saved as the test rows
        ds = load_data(str(val), seed=0, val_fraction=0.25, test_fraction=0.25)
        np.savez(rows, x=np.concatenate([read(ds.x_train), read(ds.x_val), read(ds.x_test)]),
                 y=np.concatenate([ds.y_train, ds.y_val, ds.y_test]), class_names=np.array(ds.class_names))
        args = ["--val", val, "--test", rows]
        said = "24 of the 24 rows of --test are also in --val (same input and label; all 24 of its images, decoded)"
    code, _, err = run_cli(["train", "--arch", "mlp", "--out", out, "--epochs", "1", "--data", folder, *args], capsys)
    one_line_error(code, err, said, "held-out rows must be held out")
    assert not out.exists()


def test_a_mac_zip_s_metadata_folder_is_no_class_and_loose_images_are_said(tmp_path):
    from toolchain.data import load_data

    folder = _image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=6)
    (folder / "__MACOSX" / "a").mkdir(parents=True)
    (folder / "__MACOSX" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    (folder / "stray.png").write_bytes((folder / "a" / "0.png").read_bytes())
    ds = load_data(str(folder), seed=0)
    assert ds.class_names == ["a", "b"]
    assert "1 image directly in" in ds.preprocessing.note and "'stray.png'" in ds.preprocessing.note, ds.preprocessing.note


def test_a_csv_without_a_header_row_is_refused_not_read_short_of_its_first_sample(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("".join(f"{i % 7}.5,{i % 3},{i % 2}\n" for i in range(40)))
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "d.csv", "--out", tmp_path / "m.pt"], capsys)
    one_line_error(code, err, "the first row of", "is all numbers", "add a header row")


def test_a_class_folder_named_with_decomposed_accents_is_the_class_typed_with_composed_ones(tmp_path, capsys):
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "mélanome")
    data = _image_folder(tmp_path / "train", classes=("naevus", decomposed), per_class=8)
    val = _image_folder(tmp_path / "val", classes=("naevus", "mélanome"), per_class=4, seed=1)
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", data, "--val", val, "--out", out, "--epochs", "1",
                            "--class-names", "naevus,mélanome"], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["evaluate", out, "--data", data, "-p", "mélanome", "--class-names", "naevus,mélanome"], capsys)
    assert code in (0, 1) and "Traceback" not in err, err
    (data / "mélanome").mkdir()  # the same name composed, beside the decomposed one: two folders, one class
    code, _, err = run_cli(["evaluate", out, "--data", data, "-p", "1"], capsys)
    one_line_error(code, err, "two class folders named 'mélanome'", "merge them")


@pytest.mark.parametrize("names, said", [(("x\ny", "x\\ny"), "printed alike"), (("cat", "cat "), "only in spaces at their ends"),
                                          (("cat", " "), "spaces alone")])
def test_class_folders_a_user_cannot_tell_apart_are_refused(names, said, tmp_path, capsys):
    """A folder named 'x' newline 'y' beside one named 'x\\ny' printed alike, and the held-out images of one were
    labelled as the other's; 'cat' beside 'cat ' two classes no one could name apart with -p. Letter case tells classes
    apart (A/ and a/ in a set of characters)."""
    data = _image_folder(tmp_path / "train", classes=names, per_class=6)
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", data, "--out", tmp_path / "m.pt", "--epochs", "1"], capsys)
    one_line_error(code, err, "two class folders" if said != "spaces alone" else "a class folder named", said)
    assert not (tmp_path / "m.pt").exists()
    cased = _image_folder(tmp_path / "cased", classes=("A", "a"), per_class=6)
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", cased, "--out", tmp_path / "c.pt", "--epochs", "1"], capsys)
    assert code == 0, err


def test_a_class_folder_whose_name_ends_in_a_space_is_protected_by_that_name(tmp_path, capsys):
    data = _image_folder(tmp_path / "train", classes=("bird", "cat "), per_class=8)
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", data, "--out", out, "--epochs", "1"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", out, "--data", data, "-p", "cat ", "--json", tmp_path / "e.json"], capsys)
    assert code in (0, 1), err
    import json

    assert [p["class"] for p in json.loads((tmp_path / "e.json").read_text())["protected"]] == [1]


def test_a_class_with_no_row_is_said_and_label_codes_are_refused(tmp_path, capsys):
    """Labels 0 and 2 made a 3-class model whose class 1 had no row, said only by the model's size; labels 0 and 99,999
    were refused as a 100,000-class confusion matrix too large, naming the model, which train was not given."""
    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "gap.npz", x=x, y=(np.arange(60) % 2) * 2)
    np.savez(tmp_path / "codes.npz", x=x, y=(np.arange(60) % 2) * 99_999)
    code, out, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "gap.npz", "--out", tmp_path / "m.pt", "--epochs", "1"], capsys)
    assert code == 0 and "warning: class 1 has no row in any split" in out + err, out + err
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "codes.npz", "--out", tmp_path / "c.pt", "--epochs", "1"], capsys)
    one_line_error(code, err, "run to 99,999 but only 2 values occur", "number the classes from 0")
    data = _image_folder(tmp_path / "train", classes=("a", "b"), per_class=6)
    code, out, err = run_cli(["train", "--arch", "mlp", "--data", data, "--class-names", "a,b,c", "--out", tmp_path / "n.pt",
                              "--epochs", "1"], capsys)
    assert code == 0 and "warning: class 'c' has no row in any split" in out + err, out + err


def test_tiny_images_whose_last_axis_could_be_colours_are_warned_of(tmp_path, capsys):
    """(N, 4, 4, 3) uint8 arrays were read as 4 channels of 4x3 with no word: 4x4 colour images cannot be told apart."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=(rng.random((60, 4, 4, 3)) * 255).astype(np.uint8), y=np.arange(60) % 2)
    np.savez(tmp_path / "big.npz", x=(rng.random((60, 8, 8, 3)) * 255).astype(np.uint8), y=np.arange(60) % 2)
    code, out, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "t.npz", "--out", tmp_path / "m.pt", "--epochs", "1"], capsys)
    assert code == 0 and "warning: read as (N, C, H, W), 4 channels of 4x3" in out + err, out + err
    code, out, err = run_cli(["train", "--arch", "mlp", "--data", tmp_path / "big.npz", "--out", tmp_path / "b.pt", "--epochs", "1"], capsys)
    assert code == 0 and "transposed from NHWC to NCHW" in out + err and "warning: read as" not in out + err, out + err


def test_held_out_copies_of_training_images_in_one_folder_are_named_as_copies(tmp_path, capsys):
    """One image copied ten times into its class folder: compress blamed the model ('trained on 2 of the 5 validation
    rows ... give rows it has not seen'), though model and run split the same data with the same seed."""
    import shutil

    data = _image_folder(tmp_path / "train", classes=("a", "b"), per_class=12)
    for i in range(10):
        shutil.copy(data / "a" / "0.png", data / "a" / f"copy{i}.png")
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", data, "--out", out, "--epochs", "1"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["compress", out, "--data", data, "-p", "a", "--out", tmp_path / "run"], capsys)
    one_line_error(code, err, "these are copies of its training rows", "remove the copies")
    assert not (tmp_path / "run").exists()


def test_a_folder_copied_with_decomposed_names_gives_the_same_rows_in_the_same_order(tmp_path):
    """A test folder copied on a Mac (decomposed accents in folder and file names) was refused against its own baseline
    as "the rows in another order": its folders and files sorted by their raw names ('ñandú' decomposed before 'oso')."""
    import shutil
    import unicodedata

    from toolchain.data import load_data
    from toolchain.provenance import rows_sha256
    from toolchain.data.samples import batches

    composed = _image_folder(tmp_path / "nfc", classes=("oso", "ñandú"), per_class=5)
    for i, name in enumerate(("é1", "a2", "ó0")):
        shutil.copy(composed / "oso" / f"{i}.png", composed / "oso" / f"{name}.png")
    decomposed = tmp_path / "nfd"
    shutil.copytree(composed, decomposed)
    for path in sorted(decomposed.rglob("*"), key=lambda p: -len(p.parts)):
        path.rename(path.with_name(unicodedata.normalize("NFD", path.name)))
    assert sorted(p.name for p in decomposed.iterdir()) != sorted(p.name for p in composed.iterdir())
    digests = []
    for folder in (composed, decomposed):
        x, y = load_data(str(folder), seed=0).split("all")
        digests.append(rows_sha256(np.concatenate(list(batches(x, 64))), y))
    assert digests[0] == digests[1]


def test_the_memory_check_judges_the_batch_asked_for_and_never_a_prediction(trained_digits, tmp_path, monkeypatch, capsys):
    import toolchain.models.memory as memory
    from toolchain.models import registry

    data = _image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=12, side=32)
    net = registry.create("tiny-resnet", in_channels=3, num_classes=2)
    step = lambda rows: 2 * 4 * rows * 3 * 32 * 32 + memory.STEP_PER_OUTPUT * memory.activation_bytes(net, (3, 32, 32), rows, 2)  # noqa: E731
    limit = int(step(2) * 1.5)
    assert step(16) > limit
    monkeypatch.setattr(memory, "available_memory", lambda: (limit, "a test's limit"))
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "tiny-resnet", "--data", data, "--out", out, "--epochs", "1", "--batch-size", "2",
                            "--train-precision", "bf16"], capsys)
    assert code == 0 and out.exists(), err  # its validation pass predicts many rows at a time: no training step
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", "digits", "-p", "1"], capsys)
    assert code in (0, 1), err
    monkeypatch.setattr(memory, "available_memory", lambda: (1 << 20, "a test's limit"))
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", "digits", "-p", "1"], capsys)
    assert code in (0, 1), err


def test_the_memory_estimate_leaves_the_model_as_it_was_and_counts_only_what_backward_keeps():
    import torch
    from torch import nn

    from toolchain.models.memory import activation_bytes

    class Keeps(nn.Module):  # state kept by the forward, a user's hook: neither may end up holding a meta tensor
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
            self.head = nn.Linear(8, 2)
            self.last = None

        def forward(self, x):
            self.last = self.body(x)
            return self.head(self.last.mean((2, 3)))

    net = Keeps()
    captured = []
    net.body[0].register_forward_hook(lambda m, i, out: captured.append(out))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    full = activation_bytes(net, (3, 16, 16), 4)
    assert full == 4 * 4 * (3 * 8 * 16 * 16 + 2)  # three maps of 8x16x16 (the in-place-free ReLU too) and the logits
    assert net.last is None and captured == []
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in net.state_dict().items())
    for p in net.body.parameters():  # a frozen backbone: its outputs are not kept for backward
        p.requires_grad_(False)
    assert activation_bytes(net, (3, 16, 16), 4) == 4 * 4 * 2


def test_verify_refuses_a_csv_whose_columns_are_not_the_ones_its_files_were_made_for(tmp_path, capsys):
    rng = np.random.default_rng(0)
    header = ["temp", "press", "flow", "label"]
    values = rng.normal(size=(160, 3))
    lines = [f"{a:.3f},{b:.3f},{c:.3f},{'fault' if a + b > 1 else 'ok'}" for a, b, c in values]
    (tmp_path / "s.csv").write_text("\n".join([",".join(header), *lines]) + "\n")
    (tmp_path / "flipped.csv").write_text("\n".join([",".join(["flow", "press", "temp", "label"])] + [
        ",".join([r.split(",")[2], r.split(",")[1], r.split(",")[0], r.split(",")[3]]) for r in lines]) + "\n")
    code, _, err = run_cli(["train", "--data", tmp_path / "s.csv", "--arch", "mlp", "--epochs", "3", "--out", tmp_path / "m.pt"],
                           capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", tmp_path / "s.csv", "-p", "fault", "--format", "onnx",
                            "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    onnx = tmp_path / "e" / "artifacts" / "model_fp32.onnx"
    code, _, err = run_cli(["verify", onnx, "--data", tmp_path / "s.csv", "-p", "fault", "--split", "all"], capsys)
    assert code in (0, 1), err
    code, _, err = run_cli(["verify", onnx, "--data", tmp_path / "flipped.csv", "-p", "fault", "--split", "all"], capsys)
    one_line_error(code, err, "was made for rows of other feature columns (the same 3 columns in another order",
                    "give --data the columns it was made for, in their order")


@pytest.mark.parametrize("flag", ["--val", "--test"])
def test_given_held_out_rows_of_a_class_training_lacks_are_refused(flag, tmp_path, capsys):
    rng = np.random.default_rng(0)
    names = np.array(["a", "b", "c"])
    np.savez(tmp_path / "d.npz", x=rng.random((300, 20), dtype=np.float32), y=np.arange(300) % 2, class_names=names)
    np.savez(tmp_path / "held.npz", x=rng.random((30, 20), dtype=np.float32), y=np.arange(30) % 3, class_names=names)
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--epochs", "1", "--data", tmp_path / "d.npz", flag, tmp_path / "held.npz",
                            "--out", out], capsys)
    one_line_error(code, err, "--data 'd.npz' has no row of class 'c' (label 2), which the", f"{flag} ", "rows hold")
    assert not out.exists()


def test_blank_frames_repeated_in_a_training_folder_do_not_make_held_out_rows_look_shared(tmp_path, capsys):
    """Ten identical blank images per class in the training folder and one in each class of 200 held-out rows: 2 of 400
    shared (0.5%, within the tolerance the arrays' rule allows) had been counted from the training side as 10 of 256."""
    from PIL import Image

    from toolchain.data import load_data
    from toolchain.data.samples import batches

    train = _image_folder(tmp_path / "train", classes=("a", "b"), per_class=40)
    held = _image_folder(tmp_path / "held", classes=("a", "b"), per_class=200, seed=1)
    for cls in ("a", "b"):
        for i in range(10):
            Image.new("RGB", (12, 12)).save(train / cls / f"{i}.png")
        Image.new("RGB", (12, 12)).save(held / cls / "0.png")
    ds = load_data(str(held), seed=0, val_fraction=0.25, test_fraction=0.25)
    read = lambda rows: np.concatenate(list(batches(rows)))  # noqa: E731
    np.savez(tmp_path / "held.npz", x=np.concatenate([read(ds.x_train), read(ds.x_val), read(ds.x_test)]),
             y=np.concatenate([ds.y_train, ds.y_val, ds.y_test]), class_names=np.array(ds.class_names))
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--epochs", "1", "--data", train, "--val", tmp_path / "held.npz",
                            "--out", out], capsys)
    assert code == 0, err


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize("case, header, row, said", [
    ("semicolons", "a;b;label", "{a};{b};{l}", "its header is split by ';', not by commas: save it comma-separated"),
    ("trailing-comma", "a,b,label,", "{a},{b},{l},", "column 4 of"),
    ("pandas-index", ",a,b,label", "{i},{a},{b},{l}", "(pandas writes its index so: to_csv(index=False) leaves it out)"),
    ("case", "a,b,label", "{a},{b},{L}", "which differ only in case"),
    ("from-one", "a,b,label", "{a},{b},{n}", "have no 0 (they are 1, 2)"),
])
def test_spreadsheet_habits_in_a_csv_are_named_with_their_fix(case, header, row, said, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        a, b = rng.normal(size=2)
        label = ["benign", "malignant"][i % 2]
        rows.append(row.format(i=i, a=f"{a:.3f}", b=f"{b:.3f}", l=label, L=label.capitalize() if i % 4 == 0 else label,
                               n=1 + i % 2))
    data = _csv(tmp_path / "d.csv", header, rows)
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", data, "--out", tmp_path / "m.pt", "--epochs", "1"], capsys)
    one_line_error(code, err, said)
    if case in ("case", "from-one"):  # --class-names says what the labels are: accepted
        names = "benign,Benign,malignant,Malignant" if case == "case" else "none,one,two"
        code, _, err = run_cli(["train", "--arch", "mlp", "--data", data, "--out", tmp_path / "m.pt", "--epochs", "1",
                                "--class-names", names], capsys)
        assert code == 0, err


def test_verify_takes_a_csv_of_the_protected_class_alone_as_it_takes_a_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = [f"{a:.3f},{b:.3f},{'malignant' if a + b > 0.3 else 'benign'}" for a, b in rng.normal(size=(200, 2))]
    data = _csv(tmp_path / "d.csv", "a,b,diagnosis", lines)
    only = _csv(tmp_path / "only.csv", "a,b,diagnosis", [r for r in lines if r.endswith("malignant")][:30])
    assert run_cli(["train", "--arch", "mlp", "--data", data, "--out", tmp_path / "m.pt", "--epochs", "3"], capsys)[0] == 0
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", data, "-p", "malignant", "--format", "onnx", "--time-runs", "0",
                            "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    code, out, err = run_cli(["verify", tmp_path / "e" / "artifacts" / "model_fp32.onnx", "--data", only, "-p", "malignant",
                              "--split", "all", "--class-names", "benign,malignant"], capsys)
    assert code in (0, 1) and "only rows of protected class" in out + err, out + err


def test_small_things_a_tabular_user_met():
    from toolchain.config import device_problem
    from toolchain.errors import UserError
    from toolchain.evaluate import check_output_width
    from toolchain.io import atomic_write_npz
    from toolchain.report.markdown import protected_cell

    evaluation = {"protected": [{"class": 1, "fn": 0, "fp": 3, "auc": 0.99}, {"class": 2, "fn": 1, "fp": 0, "auc": None}]}
    assert protected_cell(evaluation, ["benign", "malig|nant", "2"]) == \
        "1 (malig\\|nant): FN 0, FP 3, AUC 0.9900; 2: FN 1, FP 0, AUC -"  # a '|' in a name would end the table cell
    assert device_problem("cuda:\u0663") is not None and device_problem("cuda:3") is None
    with pytest.raises(UserError, match="--class-names naming all 3 in its order"):
        check_output_width(3, np.array([0, 1]), ["healthy", "sepsis"], "the model")
    with pytest.raises(ValueError, match="a chunk of shape"):
        atomic_write_npz("/tmp/never-written.npz", {"x": ((4, 2), np.float32, [np.ones((4, 3))])})
    assert not Path("/tmp/never-written.npz").exists()


def test_a_constructor_that_fails_with_no_kwargs_given_is_not_said_to_reject_them(tmp_path, capsys):
    (tmp_path / "net.py").write_text("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                                     "        raise RuntimeError('boom')\n")
    code, _, err = run_cli(["train", "--arch", f"{tmp_path / 'net.py'}:Net", "--data", "digits", "--out", tmp_path / "m.pt"],
                           capsys)
    one_line_error(code, err, "failed to build", "boom")
    assert "rejected --arch-kwargs" not in err


def test_the_memory_estimate_copies_no_tensor_a_model_holds():
    """A plain tensor attribute (a lookup table) had been deep-copied whole by the estimate meant to prevent running out."""
    import torch
    from torch import nn

    from toolchain.models.memory import activation_bytes

    class NoCopy(torch.Tensor):  # what the estimate must not copy: a copy of it raises, and the estimate gives up
        def __deepcopy__(self, memo):
            raise RuntimeError("copied")

    class Table(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.table = torch.ones(16).as_subclass(NoCopy)

        def forward(self, x):
            return self.fc(x) + self.table[:2]

    net = Table()
    assert activation_bytes(net, (4,), 3) == 4 * 3 * 2
    assert net.table.device.type == "cpu"


@pytest.mark.parametrize("header, ids, said", [
    ("PatientID", "shuffled", True),  # a hospital export's record number, under its name
    ("n", "consecutive", True),  # the row number, under any name
    ("fluid", "shuffled", False),  # distinct whole numbers under a feature's name: a measurement, not said
    ("case_no", "repeated", False),  # whole numbers that repeat: a category, not a record number
])
def test_a_csv_column_that_numbers_the_records_is_named(header, ids, said, tmp_path):
    from toolchain.data import load_data

    rng = np.random.default_rng(0)
    n = 120
    column = {"shuffled": rng.permutation(90_000)[:n] + 1000, "consecutive": np.arange(1, n + 1),
              "repeated": rng.integers(0, 20, n)}[ids]
    lines = [f"{header},a,b,label"] + [f"{column[i]},{rng.normal():.3f},{rng.normal():.3f},{'yes' if i % 3 else 'no'}"
                                       for i in range(n)]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    note = load_data(str(tmp_path / "rows.csv")).preprocessing.note
    assert (f"column '{header}' holds a different whole number on every row" in note) is said, note


@pytest.mark.parametrize("palette_of", ["grays", "colors"])
def test_a_palette_image_of_grays_among_gray_images_keeps_the_folder_gray(tmp_path, palette_of):
    """A palette PNG whose palette holds only grays was called "in color" and made a gray folder RGB (a 3-channel
    model for gray images); a palette of colors still does."""
    from PIL import Image

    from toolchain.data import load_data

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8), "L").save(tmp_path / cls / f"{i}.png")
    odd = Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8), "L").convert("P")  # a palette of 256 grays
    if palette_of == "colors":
        odd.putpalette([v for g in range(256) for v in (g, 255 - g, g // 2)])
    odd.save(tmp_path / "a" / "pal.png")
    assert Image.open(tmp_path / "a" / "pal.png").mode == "P"
    ds = load_data(str(tmp_path), seed=0)
    assert ds.x_train.shape[1] == (1 if palette_of == "grays" else 3)
    assert "a palette converted" in ds.preprocessing.note


@pytest.mark.parametrize("fmt, said", [("GIF", "a GIF file"), ("WEBP", "a WebP file"), ("BMP", "a BMP file"),
                                       ("text", "cannot read image")])
def test_an_image_of_another_format_under_a_png_or_jpeg_name_is_named_for_what_it_is(tmp_path, fmt, said):
    """A GIF or WebP saved as .jpg was "cannot identify the image file" (Pillow reads it; cwtool decodes PNG and JPEG only)."""
    from PIL import Image

    from toolchain.data import load_data
    from toolchain.errors import UserError

    folder = _image_folder(tmp_path / "d", classes=("a", "b"), per_class=5)
    if fmt == "text":  # "BM" starts a CSV's header too: no BMP
        (folder / "a" / "odd.jpg").write_text("BMI,weight,height\n22.5,70,176\n")
    else:
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(folder / "a" / "odd.jpg", format=fmt)
    with pytest.raises(UserError, match=said if fmt == "text" else f"is {said}, not the PNG or JPEG its name says"):
        load_data(str(folder), seed=0)


def test_a_class_folder_holding_folders_nested_deeper_than_python_recurses_is_read(tmp_path):
    """Looking for images below a class folder's subfolders recursed (os.walk): 1,100 nested folders ended in exit 3."""
    from test_io import remove_chain

    from toolchain.data import load_data

    data = _image_folder(tmp_path / "train", per_class=6)
    deep = data / "a"
    for _ in range(1100):  # os.makedirs recurses too
        deep = deep / "d"
        deep.mkdir()
    try:
        dataset = load_data(str(data), seed=0)
    finally:
        remove_chain(deep, data / "a")
    assert dataset.num_classes == 3 and len(dataset.y_train) + len(dataset.y_val) + len(dataset.y_test) == 18


def test_an_image_whose_exif_tag_asks_for_a_rotation_is_counted_in_the_data_note(tmp_path):
    """A phone photo with an EXIF rotation is read as stored (docs/DATA.md), and the data line counted dropped alphas and
    gray images, not these (a new user's finding)."""
    from PIL import Image

    from toolchain.data import load_data

    data = _image_folder(tmp_path / "train", per_class=6)
    photo = Image.open(data / "a" / "0.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show upright
    photo.save(data / "a" / "photo.jpg", exif=exif)
    note = load_data(str(data), seed=0).preprocessing.note
    assert "1 with an EXIF rotation tag read as stored, not turned, such as 'a/photo.jpg'" in note, note
    exif[0x0112] = 0  # "undefined": nothing to turn
    photo.save(data / "a" / "photo.jpg", exif=exif)
    assert "EXIF" not in load_data(str(data), seed=0).preprocessing.note
    (data / "a" / "photo.jpg").unlink()
    frames = [Image.open(data / "b" / f"{i}.png").convert("RGB") for i in range(2)]
    frames[0].save(data / "b" / "moving.png", save_all=True, append_images=frames[1:])  # an APNG: its first frame is read
    assert "1 animated, their first frame read, such as 'b/moving.png'" in load_data(str(data), seed=0).preprocessing.note


def test_reading_a_folders_headers_decodes_no_png(tmp_path, monkeypatch):
    """Asking a PNG without EXIF for its EXIF decoded the whole image (Pillow looks past the image data): a folder of
    1500x1500 PNGs read its headers 70x slower, and before the memory check (a regression reviewer's find)."""
    from PIL import PngImagePlugin

    from toolchain.data.sources.image_folder import _headers

    data = _image_folder(tmp_path / "train", per_class=2)

    loads = []
    real = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self, *a, **kw: loads.append(self.filename) or real(self, *a, **kw))
    modes, sizes, turned, animated = _headers(sorted(data.rglob("*.png")))
    assert len(modes) == 6 and not any(turned) and not any(animated) and loads == [], loads


def test_a_class_folder_whose_name_is_not_utf8_is_fingerprinted_printed_and_plotted(tmp_path):
    """compress of a folder with a class named b'cl\\xffass1' ended in exit 3 twice: fingerprinting its rows encoded the
    name as UTF-8, then matplotlib took no lone surrogate in a plot's title (evaluate and train ran)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolchain.data.seen_sample import fingerprints
    from toolchain.errors import one_line, printable
    from toolchain.report.plots import _name

    odd = b"cl\xffass1".decode("utf-8", "surrogateescape")
    x, y = np.zeros((4, 2), dtype=np.float32), np.array([0, 1, 0, 1])
    _, marks = fingerprints(x, y, ["class0", odd])
    assert len(set(marks[y == 1])) == 1 and marks[1] != fingerprints(x, y, ["class0", "clxass1"])[1][1]
    assert printable(odd) == one_line(odd) == "cl\\udcffass1"
    from toolchain.evaluate import resolve_protected  # -p typed as the folder is named on disk (a reviewer: refused,
    # "neither a class index nor one of the class names (class0, cl\udcffass1)")

    assert resolve_protected([odd], ["class0", one_line(odd)], 2) == [1]
    for name in (odd, "$\\frac{$", "a $b$ c"):
        title = _name({"class_names": ["class0", name]}, 1)
        fig, ax = plt.subplots()
        ax.set_title(title)
        fig.savefig(io.BytesIO(), format="png")  # raised for a lone surrogate and for mathematics that does not parse
        plt.close(fig)
        assert title.startswith("class 1 (") and "\\udcff" in title or "\\$" in title, title
