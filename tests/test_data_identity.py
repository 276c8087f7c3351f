"""The rows a model was trained on are never its validation or test rows (toolchain.data.identity), and a
user's own held-out rows can be given explicitly (--val / --test)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clirun import run_cli
from toolchain.errors import UserError


STARTED = "work started: every check before pruning passed"


@pytest.fixture(scope="module")
def cwtool_trained(tmp_path_factory):
    """A digits-cnn trained by `cwtool train` with split seed 0: its checkpoint records its training rows."""
    from toolchain.cli import main

    path = tmp_path_factory.mktemp("identity") / "dense.pt"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--arch", "digits-cnn", "-d", "digits", "--epochs", "5", "--seed", "0", "--device", "cpu", "--out", str(path)])
    assert exc.value.code == 0
    return path


def _stop_at_pruning(monkeypatch):
    from toolchain.errors import UserError

    def started(*args, **kwargs):
        raise UserError(STARTED)

    monkeypatch.setattr("toolchain.prune.lottery.LotteryPruner.run", started)


def test_train_records_its_rows(cwtool_trained, digits_dataset):
    from toolchain.data.identity import seen_rows
    from toolchain.models.loading import load_model

    record = load_model(cwtool_trained).extra["data"]
    assert record["spec"] == "digits" and record["seed"] == 0 and record["train_rows"] == len(digits_dataset.y_train)
    assert seen_rows(record, *digits_dataset.split("train")) == len(digits_dataset.y_train)
    assert seen_rows(record, *digits_dataset.split("test")) == 0


def test_compress_with_another_split_seed_is_refused(cwtool_trained, tmp_path, capsys, monkeypatch):
    _stop_at_pruning(monkeypatch)
    code, _, err = run_cli(["compress", cwtool_trained, "-d", "digits", "-p", "3", "--seed", "1", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "was trained on" in err and "pass --seed 0" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(["compress", cwtool_trained, "-d", "digits", "-p", "3", "--seed", "0", "--out", tmp_path / "ok"], capsys)
    assert STARTED in err, err  # the same seed: its validation and test rows are unseen, work starts


def test_held_out_rows_it_was_trained_on_given_with_val_and_test_are_named_as_given(cwtool_trained, digits_dataset, tmp_path,
                                                                                    capsys, monkeypatch):
    """--val and --test files holding its training rows were said to be rows "of --data", split by cwtool with a seed,
    and the advice was to give rows with --val and --test: the very flags given."""
    _stop_at_pruning(monkeypatch)
    x, y = digits_dataset.split("train")
    np.savez(tmp_path / "pool.npz", x=x[:600], y=y[:600])
    np.savez(tmp_path / "val.npz", x=x[600:900], y=y[600:900])
    np.savez(tmp_path / "test.npz", x=x[900:1200], y=y[900:1200])
    code, _, err = run_cli(["compress", cwtool_trained, "-d", tmp_path / "pool.npz", "-p", "3", "--val", tmp_path / "val.npz",
                            "--test", tmp_path / "test.npz", "--out", tmp_path / "r"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"300 of the 300 validation rows of --val '{tmp_path / 'val.npz'}', 300 of the 300 test rows of --test" in err, err
    assert "give --val rows it has not seen and --test rows it has not seen" in err, err
    assert "of --data" not in err and "this run splits with seed" not in err and "copies of its training rows" not in err, err
    assert not (tmp_path / "r").exists()


def test_evaluate_on_training_rows_warns(cwtool_trained, capsys):
    code, _, err = run_cli(["evaluate", cwtool_trained, "-d", "digits", "-p", "3", "--split", "train"], capsys)
    assert code == 0 and "warning:" in err and "was trained on" in err, err
    code, _, err = run_cli(["evaluate", cwtool_trained, "-d", "digits", "-p", "3"], capsys)
    assert code == 0 and "warning" not in err, err


def test_a_model_without_a_record_gets_a_note(trained_digits, digits_dataset, tmp_path, capsys, monkeypatch):
    _stop_at_pruning(monkeypatch)
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--out", tmp_path / "r"], capsys)
    assert STARTED in err and "cannot tell which rows trained" in err and "--val and --test" in err
    # rows the user chose are the user's to know: the note was printed beside the very --val and --test it asked for
    for name in ("train", "val", "test"):
        np.savez(tmp_path / f"{name}.npz", x=digits_dataset.split(name)[0], y=digits_dataset.split(name)[1])
    code, _, err = run_cli(["compress", trained_digits[0], "-d", tmp_path / "train.npz", "-p", "3", "--val", tmp_path / "val.npz",
                            "--test", tmp_path / "test.npz", "--out", tmp_path / "r2"], capsys)
    assert STARTED in err and "cannot tell which rows" not in err, err
    code, out, err = run_cli(["export", trained_digits[0], "-d", "digits", "-p", "3", "--format", "onnx", "--out", tmp_path / "e"], capsys)
    assert "cannot tell which rows" in out + err and "--val and --test" in out + err, out + err
    # export takes the user's held-out rows as compress does: no note, and its files are re-checked on them
    code, out, err = run_cli(["export", trained_digits[0], "-d", tmp_path / "train.npz", "-p", "3", "--val", tmp_path / "val.npz",
                              "--test", tmp_path / "test.npz", "--format", "onnx", "--time-runs", "0", "--out", tmp_path / "e2"], capsys)
    assert code in (0, 1) and "cannot tell which rows" not in out + err, out + err
    exported = json.loads((tmp_path / "e2" / "export.json").read_text())
    assert exported["data"]["held_out_from"] == {"val": str(tmp_path / "val.npz"), "test": str(tmp_path / "test.npz")}
    code, _, err = run_cli(["export", trained_digits[0], "-d", tmp_path / "train.npz", "-p", "3", "--val", tmp_path / "train.npz",
                            "--format", "onnx", "--out", tmp_path / "e3"], capsys)
    assert code == 2 and "held-out rows must be held out" in err and not (tmp_path / "e3").exists(), err


def test_given_val_and_test_rows_replace_the_split(digits_dataset, tmp_path):
    from toolchain.data import load_data
    from toolchain.data.given import with_given_rows

    xv, yv = digits_dataset.split("val")
    xt, yt = digits_dataset.split("test")
    np.savez(tmp_path / "v.npz", x=xv[:50], y=yv[:50])
    np.savez(tmp_path / "t.npz", x=xt[:60], y=yt[:60])
    np.savez(tmp_path / "pool.npz", x=digits_dataset.split("train")[0], y=digits_dataset.split("train")[1])
    given = with_given_rows(load_data(str(tmp_path / "pool.npz"), seed=0), str(tmp_path / "v.npz"), str(tmp_path / "t.npz"))
    assert np.array_equal(given.y_val, yv[:50]) and np.array_equal(given.y_test, yt[:60]) and given.given_splits
    assert len(given.y_train) == len(digits_dataset.split("train")[1])  # cwtool's own held-out rows train instead
    # rows that --data also holds (here its own validation split, which then trains) are not held out
    with pytest.raises(UserError, match="50 of the 50 rows of --val are also in --data's training rows"):
        with_given_rows(load_data("digits", seed=0), str(tmp_path / "v.npz"), None)
    with pytest.raises(UserError, match="50 of the 60 rows of --test are also in --val"):
        np.savez(tmp_path / "t2.npz", x=np.concatenate([xv[:50], xt[:10]]), y=np.concatenate([yv[:50], yt[:10]]))
        with_given_rows(load_data(str(tmp_path / "pool.npz"), seed=0), str(tmp_path / "v.npz"), str(tmp_path / "t2.npz"))
    assert "--val" in given.preprocessing.note


def test_one_given_held_out_split_is_checked_against_the_one_cwtool_keeps(trained_digits, digits_dataset, tmp_path, capsys):
    """--test alone holding the validation rows re-checked the point they chose, and --val alone holding the test rows
    chose what they then judged: compress passed its gate and said nothing (a reviewer of "the test split decides
    nothing"). Also where the .npz's own splits are the ones kept."""
    from toolchain.data import load_data
    from toolchain.data.given import with_given_rows

    (xtr, ytr), (xv, yv), (xt, yt) = (digits_dataset.split(s) for s in ("train", "val", "test"))
    np.savez(tmp_path / "v.npz", x=xv[:60], y=yv[:60])
    np.savez(tmp_path / "t.npz", x=xt[:60], y=yt[:60])
    np.savez(tmp_path / "own.npz", x_train=xtr, y_train=ytr, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    own = load_data(str(tmp_path / "own.npz"), seed=0)
    with pytest.raises(UserError, match="60 of the 60 rows of --test are also in the validation rows cwtool keeps from --data"):
        with_given_rows(own, None, str(tmp_path / "v.npz"))
    with pytest.raises(UserError, match="60 of the 60 rows of --val are also in the test rows cwtool keeps from --data"):
        with_given_rows(own, str(tmp_path / "t.npz"), None)
    code, _, err = run_cli(["compress", trained_digits[0], "-d", tmp_path / "own.npz", "-p", "3", "--test", tmp_path / "v.npz",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and "are also in the validation rows cwtool keeps" in err and not (tmp_path / "run").exists(), err
    np.savez(tmp_path / "t_other.npz", x=xt[:60] + 1e-3, y=yt[:60])  # other rows: taken
    given = with_given_rows(own, None, str(tmp_path / "t_other.npz"))
    assert len(given.y_test) == 60 and np.array_equal(given.y_val, yv)


def test_compress_takes_explicit_held_out_rows(trained_digits, digits_dataset, tmp_path, capsys):
    xv, yv = digits_dataset.split("val")
    xt, yt = digits_dataset.split("test")
    np.savez(tmp_path / "v.npz", x=xv, y=yv)
    np.savez(tmp_path / "t.npz", x=xt, y=yt)
    np.savez(tmp_path / "pool.npz", x=digits_dataset.split("train")[0], y=digits_dataset.split("train")[1])
    out = tmp_path / "r"
    code, _, err = run_cli(["compress", trained_digits[0], "-d", tmp_path / "pool.npz", "-p", "3", "--val", tmp_path / "v.npz", "--test", tmp_path / "t.npz",
                            "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "0.5", "--confidence", "0.5", "--skip-export",
                            "--out", out], capsys)
    assert code in (0, 1), err
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["sizes"] == {"train": len(digits_dataset.split("train")[1]), "val": len(yv), "test": len(yt)}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["data"]["val"]["path"] == str(tmp_path / "v.npz")


def test_given_rows_of_another_shape_are_refused(trained_digits, tmp_path, capsys):
    np.savez(tmp_path / "v.npz", x=np.zeros((20, 4), np.float32), y=np.arange(20) % 10)
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--val", tmp_path / "v.npz", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "--val" in err and "shape" in err, err


def test_a_model_trained_with_its_classes_in_another_order_is_refused_naming_the_order(tmp_path, capsys):
    """Trained with --class-names in an order of its own, evaluated without it: the data's alphabetical numbering
    scored every prediction against the other label (AUC near 0, exit 0)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    lines = ["f0,f1,f2,f3,label"] + [",".join(f"{v:.4f}" for v in row[:4]) + ("," + ("malignant" if t == 0 else "benign"))
                                     for row, t in zip(data.data, data.target)]
    csv = tmp_path / "tumours.csv"
    csv.write_text("\n".join(lines) + "\n")
    model = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", '{"in_features": 4}', "-d", csv, "--class-names", "malignant,benign",
                            "--epochs", "1", "--out", model], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", model, "-d", csv, "-p", "malignant"], capsys)
    assert code == 2 and "in the order malignant, benign" in err and 'give --class-names "malignant, benign"' in err, err
    code, _, err = run_cli(["evaluate", model, "-d", csv, "-p", "malignant", "--class-names", "malignant,benign"], capsys)
    assert code == 0, err


def test_a_class_order_an_npz_fixes_is_not_told_to_take_class_names(tmp_path, capsys):
    """An .npz whose class_names number the classes otherwise than the model was told "give --class-names a, b", which the
    next run refused (the file fixes its labels' order): it is told to save the data in the model's order."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "ab.npz", x=x, y=y, class_names=np.array(["a", "b"]))
    np.savez(tmp_path / "ba.npz", x=x, y=1 - y, class_names=np.array(["b", "a"]))
    model = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "mlp", "-d", tmp_path / "ab.npz", "--epochs", "1", "--out", model], capsys)
    assert code == 0, err
    for command in (["compress", model, "-d", tmp_path / "ba.npz", "-p", "a", "--out", tmp_path / "run"],
                    ["export", model, "-d", tmp_path / "ba.npz", "-p", "a", "--out", tmp_path / "files"]):
        code, _, err = run_cli(command, capsys)
        assert code == 2 and "this data numbers them b, a: save the data with its labels numbered in the model's order" in err, err
        assert "--class-names" not in err, err


def test_exports_warning_about_seen_rows_names_what_export_takes(digits_dataset, tmp_path, capsys):
    """A model trained on another split of the data, exported with --data whose split reuses its training rows: the
    warning names what export takes (--val and --test, as compress does)."""
    from toolchain.cli import main

    x, y = digits_dataset.split("all")
    np.savez(tmp_path / "own.npz", x_train=x[:-200], y_train=y[:-200], x_val=x[-200:-100], y_val=y[-200:-100], x_test=x[-100:],
             y_test=y[-100:])
    with pytest.raises(SystemExit) as exc:
        main(["train", "--arch", "digits-cnn", "-d", str(tmp_path / "own.npz"), "--epochs", "3", "--device", "cpu", "--out", str(tmp_path / "m.pt")])
    assert exc.value.code == 0
    capsys.readouterr()
    code, out, err = run_cli(["export", tmp_path / "m.pt", "-d", "digits", "-p", "3", "--format", "onnx", "--out", tmp_path / "e"], capsys)
    assert "was trained on" in out + err and "give rows it has not seen with --val and --test" in out + err, out + err


def test_a_missing_val_file_is_said_to_be_missing(trained_digits, tmp_path, capsys):
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "-d", "digits", "--val", tmp_path / "absent.npz", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "absent.npz' does not exist" in err and "savez" not in err, err


def test_image_folders_held_out_are_compared_file_by_file(tmp_path):
    """An all/ folder beside train/, val/ and test/ (common in medical data sets) passed as --data with --val and --test:
    every held-out image was also a training image, and the gate passed on them. Arrays were compared row by row, image
    folders not at all."""
    import shutil

    from test_streaming import image_folder

    from toolchain.data import load_data
    from toolchain.data.given import with_given_rows

    image_folder(tmp_path / "train", 40, 16, seed=0)
    image_folder(tmp_path / "val", 20, 16, seed=1)
    image_folder(tmp_path / "test", 20, 16, seed=2)
    given = with_given_rows(load_data(str(tmp_path / "train"), seed=0), str(tmp_path / "val"), str(tmp_path / "test"))
    assert len(given.y_val) == 20 and len(given.y_test) == 20  # held out: taken
    for name in ("train", "val"):  # all/ = train/ + val/, file names changed
        for f in (tmp_path / name).rglob("*.png"):
            (tmp_path / "all" / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, tmp_path / "all" / f.parent.name / f"{name}_{f.name}")
    with pytest.raises(UserError, match="20 of the 20 images of --val are also in --data's training rows"):
        with_given_rows(load_data(str(tmp_path / "all"), seed=0), str(tmp_path / "val"), str(tmp_path / "test"))
    shutil.copytree(tmp_path / "val", tmp_path / "val_copy")
    with pytest.raises(UserError, match="20 of the 20 images of --test are also in --val"):
        with_given_rows(load_data(str(tmp_path / "train"), seed=0), str(tmp_path / "val"), str(tmp_path / "val_copy"))


def test_copies_within_data_that_the_split_puts_on_both_sides_are_refused_by_compress(tmp_path):
    """A third of a folder's files copied under other names: 50 of 113 validation and 53 of 112 test rows had a
    byte-identical twin among the training rows, and compress said nothing (its promise rested on seen rows)."""
    import shutil

    from test_streaming import image_folder

    from toolchain.data import load_data
    from toolchain.data.given import check_no_copies_across_splits

    image_folder(tmp_path / "imgs", 90, 16, seed=0)
    said = []
    check_no_copies_across_splits(load_data(str(tmp_path / "imgs"), seed=0), refuse=True, note=said.append)
    assert said == []  # no copies: nothing to say
    for f in sorted((tmp_path / "imgs").rglob("*.png"))[::3]:
        shutil.copy(f, f.with_name(f"copy_{f.name}"))
    data = load_data(str(tmp_path / "imgs"), seed=0)
    with pytest.raises(UserError, match=r"of the \d+ validation rows and \d+ of the \d+ test rows of --data are byte-identical "
                                        r"copies of training images .* give held-out rows with --val and --test"):
        check_no_copies_across_splits(data, refuse=True, note=said.append)
    check_no_copies_across_splits(data, refuse=False, note=said.append)  # export: said, not refused
    assert len(said) == 1 and said[0].startswith("warning: ") and "byte-identical copies" in said[0], said
    from toolchain.data.given import with_given_rows  # --val alone: the test rows are still carved from --data

    image_folder(tmp_path / "val", 20, 16, seed=1)
    with pytest.raises(UserError, match=r"of the \d+ test rows of --data are byte-identical") as info:
        check_no_copies_across_splits(with_given_rows(data, str(tmp_path / "val")), refuse=True, note=said.append)
    assert "validation rows" not in str(info.value)
    x = np.random.default_rng(0).integers(0, 3, (2000, 4)).astype(np.float32)  # 81 distinct rows: values repeat
    np.savez(tmp_path / "rows.npz", x=x, y=(x.sum(1) > 4).astype(np.int64))
    said.clear()
    check_no_copies_across_splits(load_data(str(tmp_path / "rows.npz"), seed=0), refuse=True, note=said.append)
    assert len(said) == 1 and said[0].startswith("note: ") and "have the input and label of a training row" in said[0], said


def test_an_edited_preprocessing_record_is_not_compared_nor_advised():
    """A checkpoint's or calibration set's record is untrusted: a 400-digit mean crashed the comparison (exit 3), and a
    string or NaN mean sent the user round in a loop of advice to give the flags they had given, or ones cwtool refuses."""
    from toolchain.data.identity import preprocessing_differences

    here = {"color": "RGB", "resize": [18], "crop": [16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}
    for edited in ({"mean": [10**400] * 3}, {"mean": ["0.5"] * 3}, {"mean": [float("nan")] * 3}, {"std": [0.0] * 3},
                   {"resize": [True]}, {"crop": [16]}, {"resize": [10**9]}, {"mean": [0.5] * 2}):
        assert preprocessing_differences({**here, **edited}, here) is None, edited
    assert preprocessing_differences(here, here) is None
    shown, flags = preprocessing_differences({**here, "mean": [], "std": []}, here)
    assert flags == "--color rgb --resize 18 --image-size 16x16 --normalize none" and "mean none there" in shown, flags


def test_a_class_folder_renamed_or_missing_numbers_the_rest_otherwise():
    """A training folder a, b, c evaluated on folders b, c, zed (a renamed) or a, c (b missing): every class after it took
    another index, and evaluate scored them against other outputs with exit 0 (a data reviewer's finding)."""
    from toolchain.data.identity import check_class_order
    from toolchain.errors import UserError

    record = {"class_names": ["a", "b", "c"]}
    for names, words in ((["b", "c", "zed"], "(not among its classes: zed)"), (["a", "c"], "this data numbers them a, c:")):
        with pytest.raises(UserError, match="was trained with its classes in the order a, b, c") as exc:
            check_class_order(record, names, "m.pt")
        assert words in str(exc.value)
    check_class_order(record, ["a", "b"], "m.pt")  # the last class missing: the others keep their numbers
    check_class_order(record, ["x", "y", "z"], "m.pt")  # other names: nothing to compare
    check_class_order(record, ["0", "1", "2"], "m.pt")  # data that only numbers its classes


def test_image_rows_scaled_otherwise_than_the_training_s_are_warned_of(tmp_path, capsys):
    """Digits as float 0..255 for a model trained on 0..1: evaluate scored 42.9% with exit 0 and no word (its uint8 copy,
    scaled by cwtool, 99.9%): the checkpoint now records its training rows' largest value (a data reviewer's finding)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:, None] / 16.0).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=digits.target)
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", tmp_path / "d.npz", "--epochs", "1", "--out", tmp_path / "m.pt"],
                           capsys)
    assert code == 0, err
    np.savez(tmp_path / "f255.npz", x=np.round(x * 255).astype(np.float32), y=digits.target)
    np.savez(tmp_path / "u8.npz", x=np.round(x * 255).astype(np.uint8), y=digits.target)
    said = {}
    for name in ("d", "f255", "u8"):
        code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", tmp_path / f"{name}.npz", "-p", "3"], capsys)
        assert code == 0, err
        said[name] = err
    assert "these rows' values reach 255 where" in said["f255"] and "pixels scaled otherwise" in said["f255"], said["f255"]
    assert "pixels scaled otherwise" not in said["d"] + said["u8"]


def test_a_file_made_from_arrays_checked_on_image_files_is_told_to_take_arrays():
    """A file exported from an .npz, verified on a folder of the same images: "scale 1.0 there, 0.0039 here: give --data the
    same --image-size, --resize and --normalize", none of which scales images as its arrays were (a data reviewer's
    finding)."""
    from types import SimpleNamespace

    from toolchain.recorded import preprocessing_mismatch

    arrays = {"scale": 1.0, "mean": [], "std": [], "layout": "NCHW"}
    runner = SimpleNamespace(path="m.onnx", metadata={"preprocessing": json.dumps(arrays)},
                             dataset_sample_shape=lambda: (1, 8, 8))
    here = {"color": "L", "resize": [], "crop": [], "scale": 1 / 255, "mean": [], "std": [], "layout": "NCHW"}
    said = preprocessing_mismatch(runner, {"preprocessing": here, "x": np.zeros((2, 1, 8, 8), np.float32)})
    assert said and "made for rows given as arrays, not image files" in said and "an .npz" in said and "--resize" not in said, said


def test_the_test_rows_change_nothing_a_compress_run_decides(trained_digits, digits_dataset, tmp_path, capsys):
    """Two runs alike but for their --test rows' labels (shuffled) decide alike: the same ticket, weights, offsets, int8
    files and calibration rows; only the test numbers, the gate and what follows from it may differ."""
    import onnx
    import torch
    from onnx import numpy_helper

    (xtr, ytr), (xv, yv), (xt, yt) = (digits_dataset.split(s) for s in ("train", "val", "test"))
    np.savez(tmp_path / "pool.npz", x=xtr, y=ytr)
    np.savez(tmp_path / "v.npz", x=xv, y=yv)
    np.savez(tmp_path / "a.npz", x=xt, y=yt)
    np.savez(tmp_path / "b.npz", x=xt, y=np.random.default_rng(1).permutation(yt))
    runs = {}
    for name in ("a", "b"):
        out = tmp_path / f"run_{name}"
        code, _, err = run_cli(["compress", trained_digits[0], "-d", tmp_path / "pool.npz", "-p", "3", "--val", tmp_path / "v.npz",
                                "--test", tmp_path / f"{name}.npz",
                                "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "0.5", "--confidence", "0.8",
                                "--max-fn-increase", "2", "--format", "onnx", "--time-runs", "0", "--out", out], capsys)
        assert code in (0, 1), err
        runs[name] = out
    reports = {n: json.loads((out / "report.json").read_text()) for n, out in runs.items()}
    decided = {n: {"promise": {k: v for k, v in r["promise"].items() if "test" not in k},
                   "stages": [{k: v for k, v in s.items() if k not in ("seconds", "test", "path")} for s in r["stages"]],
                   "calibration": r["calibration"]} for n, r in reports.items()}
    assert decided["a"] == decided["b"]
    tested = {n: [s["test"] for s in r["stages"] if "test" in s] for n, r in reports.items()}
    assert tested["a"] and tested["a"] != tested["b"]  # the test numbers did see other labels
    states = {n: torch.load(out / "pruned.pt", weights_only=False)["state_dict"] for n, out in runs.items()}
    assert states["a"].keys() == states["b"].keys() and all(torch.equal(states["a"][k], states["b"][k]) for k in states["a"])
    for file in ("model_fp32.onnx", "model_int8.onnx"):
        weights = [{i.name: numpy_helper.to_array(i) for i in onnx.load(out / "artifacts" / file).graph.initializer} for out in runs.values()]
        assert weights[0].keys() == weights[1].keys() and all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
