"""Which rows `cwtool verify` judges by default, from the sample of fitted rows (training and validation) that exported
files carry: a held-out CSV, folder or .npz is judged whole, the data compress split on its seeded test split, and a test
split drawn with another seed -- rows the model learnt -- is refused."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clirun import one_line_error, run_cli
from toolchain.data.seen_sample import SAMPLE_ROWS, found_in, read_seen_sample, seen_sample


def _verified(args, tmp_path, capsys) -> tuple[int, dict | None, str]:
    """`cwtool verify ARGS --json FILE`: (exit code, the JSON result or None, stderr)."""
    out = tmp_path / "verify.json"
    out.unlink(missing_ok=True)
    code, _, err = run_cli(["verify", *args, "--json", out], capsys)
    return code, json.loads(out.read_text()) if out.exists() else None, err


def _sample(x, y, names, seed=0):
    return read_seen_sample(json.loads(json.dumps(seen_sample([(x, y)], names, seed))))


def test_the_sample_finds_its_rows_by_class_name_and_not_others():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 6)).astype(np.float32), rng.integers(0, 3, 500)
    record = _sample(x, y, ["a", "b", "c"])
    assert len(record["sample"]) == SAMPLE_ROWS and record["kind"] == "rows" and record["rows"] == 500
    assert found_in(record, x, y, ["a", "b", "c"]) == SAMPLE_ROWS
    # a file that numbers its classes otherwise holds the same rows
    assert found_in(record, x, 2 - y, ["c", "b", "a"]) == SAMPLE_ROWS
    # the same values under another class are another row; fresh rows are none of them
    assert found_in(record, x, (y + 1) % 3, ["a", "b", "c"]) == 0
    assert found_in(record, rng.normal(size=(500, 6)).astype(np.float32), y, ["a", "b", "c"]) == 0
    # a test split drawn with another seed holds its share of them
    assert 10 <= found_in(record, x[:100], y[:100], ["a", "b", "c"]) <= 45


@pytest.mark.parametrize("value", [None, "x", [], {"kind": "rows"}, {"kind": "other", "sample": "AAAAAA=="},
                                   {"kind": "rows", "sample": "not base64!"}, {"kind": "rows", "sample": "AAA="},
                                   {"kind": "rows", "sample": ""}, {"kind": "rows", "sample": "A" * 100_000},
                                   {"kind": "files", "sample": 7}])
def test_a_record_cwtool_did_not_write_is_no_record(value):
    assert read_seen_sample(value) is None


def test_a_record_with_odd_fields_keeps_its_sample_only():
    record = read_seen_sample({"kind": "rows", "sample": base64.b64encode(b"\1\0\0\0").decode(), "seed": True, "rows": -1})
    assert record["seed"] is None and record["rows"] is None and record["sample"].tolist() == [1]


@pytest.fixture(scope="module")
def exported(trained_digits, tmp_path_factory):
    """digits-cnn exported on digits (seed 0): its fp32 ONNX file, and the digits rows it was and was not fitted to."""
    import contextlib
    import io

    from toolchain.cli import main
    from toolchain.data import load_data

    out = tmp_path_factory.mktemp("seen") / "e"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as exc:
        main(["export", str(trained_digits[0]), "--data", "digits", "-p", "3", "--format", "onnx", "--precision", "fp32",
              "--out", str(out)])
    assert exc.value.code == 0
    return out / "artifacts" / "model_fp32.onnx", load_data("digits", seed=0)


def test_the_exported_file_records_a_sample_of_its_training_and_validation_rows(exported):
    import onnx

    path, data = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    record = read_seen_sample(json.loads(meta["seen_rows"]))
    assert record["seed"] == 0 and record["rows"] == len(data.y_train) + len(data.split("val")[1])
    x_fit = np.concatenate([data.x_train, data.split("val")[0]])
    y_fit = np.concatenate([data.y_train, data.split("val")[1]])
    assert found_in(record, x_fit, y_fit, data.class_names) == SAMPLE_ROWS
    assert found_in(record, *data.split("test"), data.class_names) == 0


def test_verify_judges_the_seeded_test_split_of_the_data_the_file_was_fitted_to(exported, tmp_path, capsys):
    path, data = exported
    code, result, err = _verified([path, "--data", "digits", "-p", "3"], tmp_path, capsys)
    assert code == 0, err
    assert result["data"]["split"] == "test" and result["data"]["n"] == len(data.split("test")[1])
    assert any("its seeded test split (seed 0) is judged" in n for n in result["notes"])


def test_verify_refuses_a_test_split_drawn_with_another_seed(exported, capsys):
    path, _ = exported
    code, _, err = run_cli(["verify", path, "--data", "digits", "-p", "3", "--seed", "5"], capsys)
    one_line_error(code, err, "model_fp32.onnx records a sample of", "give the --seed its data was split with (0; this is 5)")


def test_verify_says_so_where_the_user_chose_fitted_rows(exported, tmp_path, capsys):
    path, _ = exported
    code, result, err = _verified([path, "--data", "digits", "-p", "3", "--split", "all"], tmp_path, capsys)
    assert code == 0, err
    assert any(f"{SAMPLE_ROWS} of the {SAMPLE_ROWS} rows" in n and "optimistic" in n for n in result["notes"])


def test_verify_judges_a_held_out_npz_whole_and_a_pool_holding_fitted_rows_on_its_test_split(exported, tmp_path, capsys):
    path, data = exported
    x_test, y_test = data.split("test")
    np.savez(tmp_path / "held_out.npz", x=x_test, y=y_test)
    code, result, err = _verified([path, "--data", tmp_path / "held_out.npz", "-p", "3"], tmp_path, capsys)
    assert code == 0, err
    assert result["data"]["n"] == len(y_test) and not any("fitted" in n for n in result["notes"])
    # every digit in one pool: its own seeded test split is other rows than the bundled split's, some of them fitted
    x_all, y_all = data.split("all")
    np.savez(tmp_path / "pool.npz", x=x_all, y=y_all)
    code, _, err = run_cli(["verify", path, "--data", tmp_path / "pool.npz", "-p", "3"], capsys)
    one_line_error(code, err, "records a sample of", "are among the", "rows judged (test split of pool.npz)")


def _images(root: Path, per_class: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (16, 16, 3)) + 120 * k  # classes apart by brightness: learnt in an epoch
            Image.fromarray(pixels.astype(np.uint8)).save(root / cls / f"{seed}_{i}.png")
    return root


def test_a_held_out_image_folder_is_judged_whole_and_the_training_folder_by_its_files(tmp_path, capsys):
    train = _images(tmp_path / "train", 40, seed=0)
    code, _, err = run_cli(["train", "--arch", "tiny-resnet", "--data", train, "--out", tmp_path / "m.pt", "--epochs", "2"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", train, "-p", "cat", "--format", "onnx", "--precision",
                            "fp32", "--out", tmp_path / "e"], capsys)
    assert code == 0, err
    onnx_file = tmp_path / "e" / "artifacts" / "model_fp32.onnx"
    fresh = _images(tmp_path / "fresh", 10, seed=1)
    code, result, err = _verified([onnx_file, "--data", fresh, "-p", "cat"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err  # which rows are judged, whatever the verdict on them
    assert result["data"]["n"] == 20 and result["data"]["split"] == "all"
    assert any("holds none of the rows model_fp32.onnx was fitted to" in n for n in result["notes"])
    # the training folder, however its images are prepared, is known by its files' bytes
    code, _, err = run_cli(["verify", onnx_file, "--data", train, "-p", "cat", "--seed", "3", "--normalize", "none"], capsys)
    one_line_error(code, err, "give the --seed its data was split with (0; this is 3)")
    # a folder with a copy of one training image among its own is not held out: its seeded test split is judged
    from toolchain.data import load_data
    from toolchain.data.samples import row_files

    fitted = load_data(str(train), seed=0)
    first = Path(row_files(fitted.x_train)[0])
    shutil.copy(first, fresh / first.parent.name / "copied.png")
    code, result, err = _verified([onnx_file, "--data", fresh, "-p", "cat"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err  # which rows are judged, whatever the verdict on them
    assert result["data"]["split"] == "test" and result["data"]["n"] < 21
    assert any("holds rows model_fp32.onnx was fitted to" in n for n in result["notes"])
