"""verify refuses to judge rows an exported file's model was fitted to, found by the sample of its training and
validation rows the file carries: a test split drawn with another seed than compress's, an x/y .npz of every row. A sample
not found decides nothing: a held-out set keeps verify's default rows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from clirun import one_line_error, run_cli
from toolchain.data.seen_sample import SAMPLE_ROWS, fingerprints, fitted_counts, read_seen_sample, seen_sample


def _verified(args, tmp_path, capsys) -> tuple[int, dict | None, str]:
    """`cwtool verify ARGS --json FILE`: (exit code, the JSON result or None, stderr)."""
    out = tmp_path / "verify.json"
    out.unlink(missing_ok=True)
    code, _, err = run_cli(["verify", *args, "--json", out], capsys)
    return code, json.loads(out.read_text()) if out.exists() else None, err


def found_in(record, x, y, names, every=None) -> dict:
    return fitted_counts(record, fingerprints(x, y, names), None if every is None else fingerprints(*every, names))


def _exported(data, protect: str, folder: Path, capsys, arch: str = "mlp", epochs: int = 5, names: str | None = None,
              export_seed: int = 0) -> Path:
    """A model trained on ``data`` (split seed 0) and exported to one fp32 ONNX file (split seed ``export_seed``), as a
    user would: the file's path."""
    given = ["--class-names", names] if names else []
    code, _, err = run_cli(["train", "--arch", arch, "--data", data, *given, "--out", folder / "m.pt", "--epochs", epochs], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", folder / "m.pt", "--data", data, *given, "-p", protect, "--format", "onnx", "--precision",
                            "fp32", "--time-runs", "0", "--seed", export_seed, "--out", folder / "e"], capsys)
    assert code in (0, 1), err
    return folder / "e" / "artifacts" / "model_fp32.onnx"


def _sample(x, y, names, seed=0):
    return read_seen_sample(json.loads(json.dumps(seen_sample([(x, y)], names, seed))))


def test_the_sample_finds_its_rows_by_class_name_and_not_others():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 6)).astype(np.float32), rng.integers(0, 3, 500)
    record = _sample(x, y, ["a", "b", "c"])
    assert len(record["sample"]) == SAMPLE_ROWS and record["kind"] == "rows" and record["rows"] == 500
    assert found_in(record, x, y, ["a", "b", "c"]) == {"sampled": SAMPLE_ROWS, "judged": SAMPLE_ROWS,
                                                      "only_judged": SAMPLE_ROWS, "elsewhere": 0, "in_data": SAMPLE_ROWS,
                                                      "repeats": 0.0}
    # a file that numbers its classes otherwise holds the same rows
    assert found_in(record, x, 2 - y, ["c", "b", "a"])["judged"] == SAMPLE_ROWS
    # the same values under another class are another row; fresh rows are none of them
    assert found_in(record, x, (y + 1) % 3, ["a", "b", "c"])["judged"] == 0
    assert found_in(record, rng.normal(size=(500, 6)).astype(np.float32), y, ["a", "b", "c"])["judged"] == 0
    # a split of these rows holds its share of them, found nowhere else in the data
    part = found_in(record, x[:100], y[:100], ["a", "b", "c"], every=(x, y))
    assert 10 <= part["judged"] == part["only_judged"] <= 45 and part["elsewhere"] == SAMPLE_ROWS - part["judged"]


def test_a_twin_in_another_split_is_not_a_row_found_only_there():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 6)).astype(np.float32), rng.integers(0, 3, 500)
    record = _sample(x[:400], y[:400], ["a", "b", "c"])  # fitted: the first 400
    test_x, test_y = np.concatenate([x[400:], x[:30]]), np.concatenate([y[400:], y[:30]])  # 30 twins of fitted rows
    every = (np.concatenate([x[:400], test_x]), np.concatenate([y[:400], test_y]))
    found = found_in(record, test_x, test_y, ["a", "b", "c"], every=every)
    assert found["judged"] > 0 and found["only_judged"] == 0 and found["elsewhere"] == SAMPLE_ROWS


def test_rows_that_repeat_are_counted_once_and_said_to_repeat():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 2, size=(800, 3)).astype(np.float32), rng.integers(0, 2, 800)  # 16 distinct rows
    record = _sample(x, y, ["a", "b"])
    found = found_in(record, x[:45], y[:45], ["a", "b"])
    assert found["judged"] <= found["sampled"] <= 16 and found["judged"] <= 45 and found["repeats"] > 0.5


@pytest.mark.parametrize("value", [None, "x", [], {"kind": "rows"}, {"kind": "other", "sample": "AAAAAA=="},
                                   {"kind": "rows", "sample": "not base64!"}, {"kind": "rows", "sample": "AAA="},
                                   {"kind": "rows", "sample": ""}, {"kind": "rows", "sample": "A" * 100_000},
                                   {"kind": "files", "sample": 7},
                                   {"kind": "rows", "sample": base64.b64encode(bytes(4 * (SAMPLE_ROWS + 1))).decode()}])
def test_a_record_cwtool_did_not_write_is_no_record(value):
    assert read_seen_sample(value) is None


def test_a_record_with_odd_fields_keeps_its_sample_only():
    record = read_seen_sample({"kind": "rows", "sample": base64.b64encode(b"\1\0\0\0").decode(), "seed": True, "rows": -1})
    assert record["seed"] is None and record["rows"] is None and record["sample"].tolist() == [1]


def _cli(*args) -> int:
    """`cwtool ARGS` quietly, in a module fixture (no capsys there): its exit code."""
    import contextlib
    import io

    from toolchain.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def _digits_exported(folder: Path, data, seed: int = 0) -> Path:
    """digits-cnn trained by `cwtool train` on ``data`` (its checkpoint records the training rows), exported to one fp32
    ONNX file with the same split seed: the file."""
    assert _cli("train", "--arch", "digits-cnn", "--data", data, "--epochs", "3", "--seed", seed, "--out", folder / "m.pt") == 0
    assert _cli("export", folder / "m.pt", "--data", data, "-p", "3", "--format", "onnx", "--precision", "fp32", "--time-runs",
                "0", "--seed", seed, "--out", folder / "e") in (0, 1)
    return folder / "e" / "artifacts" / "model_fp32.onnx"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """digits-cnn trained and exported on digits (seed 0): its fp32 ONNX file, and the digits rows."""
    from toolchain.data import load_data

    return _digits_exported(tmp_path_factory.mktemp("seen"), "digits"), load_data("digits", seed=0)


def test_the_exported_file_records_a_sample_of_the_rows_its_model_was_trained_on(exported):
    import onnx

    path, data = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    record = read_seen_sample(json.loads(meta["seen_rows"]))
    assert record["seed"] == 0 and abs(record["rows"] - len(data.y_train)) <= 0.2 * len(data.y_train)
    assert found_in(record, data.x_train, data.y_train, data.class_names)["judged"] == SAMPLE_ROWS
    assert found_in(record, *data.split("val"), data.class_names)["judged"] == 0
    assert found_in(record, *data.split("test"), data.class_names)["judged"] == 0


def test_a_model_from_elsewhere_records_no_rows(trained_digits, tmp_path, capsys):
    """Its training rows are unknown: export's own split says nothing of them, and verify is left as it was."""
    import onnx

    code, _, err = run_cli(["export", trained_digits[0], "--data", "digits", "-p", "3", "--format", "onnx", "--precision", "fp32",
                            "--time-runs", "0", "--seed", "1", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    meta = {p.key for p in onnx.load(str(tmp_path / "e" / "artifacts" / "model_fp32.onnx")).metadata_props}
    assert "seen_rows" not in meta
    # verify says the rows are not checked (a file of an older cwtool, with no record, passed on its very training rows)
    code, result, err = _verified([tmp_path / "e" / "artifacts" / "model_fp32.onnx", "--data", "digits", "-p", "3"], tmp_path, capsys)
    said = [n for n in result["notes"] if "records no sample of the rows its model was trained or tuned on" in n]
    assert code == 0 and len(said) == 1 and "whether --data holds them is not checked" in said[0], result["notes"]
    assert "export the file again" not in said[0]  # it would record no more


def test_verify_judges_the_seeded_test_split_of_the_data_the_file_was_fitted_to(exported, tmp_path, capsys):
    path, data = exported
    code, result, err = _verified([path, "--data", "digits", "-p", "3"], tmp_path, capsys)
    assert code == 0, err
    assert result["data"]["split"] == "test" and result["data"]["n"] == len(data.split("test")[1])
    assert not any("records a sample of" in n for n in result["notes"])  # that split holds none of the fitted rows
    assert not any("records no sample" in n for n in result["notes"])


def test_verify_refuses_a_test_split_drawn_with_another_seed(exported, capsys):
    path, _ = exported
    code, _, err = run_cli(["verify", path, "--data", "digits", "-p", "3", "--seed", "5"], capsys)
    one_line_error(code, err, "model_fp32.onnx records a sample of", "give --seed 0, the seed its data was split with, not 5")


def test_verify_says_so_where_the_user_chose_fitted_rows(exported, tmp_path, capsys):
    path, _ = exported
    code, result, err = _verified([path, "--data", "digits", "-p", "3", "--split", "all"], tmp_path, capsys)
    assert code == 0, err
    assert any(f"{SAMPLE_ROWS} of the {SAMPLE_ROWS} rows" in n and "optimistic" in n for n in result["notes"])


def test_an_npz_of_every_row_is_narrowed_to_its_test_split_and_refused_a_held_out_one_judged_whole(exported, tmp_path, capsys):
    path, data = exported
    x_test, y_test = data.split("test")
    np.savez(tmp_path / "held_out.npz", x=x_test, y=y_test)
    code, result, err = _verified([path, "--data", tmp_path / "held_out.npz", "-p", "3"], tmp_path, capsys)
    assert code == 0, err
    assert result["data"]["n"] == len(y_test) and not any("fitted" in n for n in result["notes"])
    # every digit in one pool, without class names (the file's name its numbers): its own seeded test split is other
    # rows than the bundled split's, some of them fitted, under any seed
    x_all, y_all = data.split("all")
    np.savez(tmp_path / "pool.npz", x=x_all, y=y_all)
    code, _, err = run_cli(["verify", path, "--data", tmp_path / "pool.npz", "-p", "3"], capsys)
    one_line_error(code, err, "128 of the 128 rows", "rows judged (every row of pool.npz): about ",
                   "of the rows judged are rows it was trained or tuned on", "give rows it was not trained or tuned on")
    # the pool a model was trained on and its file exported from: narrowed to the test split drawn from it
    onnx_file = _digits_exported(tmp_path, tmp_path / "pool.npz")
    code, result, err = _verified([onnx_file, "--data", tmp_path / "pool.npz", "-p", "3"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err
    assert result["data"]["split"] == "test" and result["data"]["n"] < len(y_all) // 5
    assert any("--data is the pool model_fp32.onnx was split from" in n for n in result["notes"])


def _separable_csv(path: Path, n: int, names=("neg", "pos")) -> Path:
    """``n`` rows of 4 normal features, labelled by the sign of the first: a model learns them in a few epochs."""
    x = np.random.default_rng(0).normal(size=(n, 4))
    return _csv(path, x, (x[:, 0] > 0).astype(np.int64), names)


def _csv(path: Path, x: np.ndarray, y: np.ndarray, names) -> Path:
    lines = ["f0,f1,f2,f3,label"] + [",".join(f"{v:.4f}" for v in row) + f",{names[k]}" for row, k in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory):
    """Two models' fp32 ONNX files exported from one CSV with split seeds 0 and 3, the CSV, and its rows labelled 0/1/2."""
    d = tmp_path_factory.mktemp("seen_csv")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] > 0.4).astype(np.int64) + (x[:, 1] > 0.8).astype(np.int64)
    train = _csv(d / "train.csv", x, y, ["cat", "dog", "eel"])
    numbered = _csv(d / "numbered.csv", x, y, ["0", "1", "2"])

    files = []
    for seed in (0, 3):
        assert _cli("train", "--arch", "mlp", "--data", train, "--out", d / f"m{seed}.pt", "--epochs", "10", "--seed", seed) == 0
        assert _cli("export", d / f"m{seed}.pt", "--data", train, "-p", "eel", "--format", "onnx", "--precision", "fp32",
                    "--seed", seed, "--time-runs", "0", "--out", d / f"e{seed}") in (0, 1)
        files.append(d / f"e{seed}" / "artifacts" / "model_fp32.onnx")
    return files, train, numbered


def test_rows_labelled_by_number_are_matched_by_the_names_the_file_records(csv_files, capsys):
    (seed0, _), _, numbered = csv_files
    code, _, err = run_cli(["verify", seed0, "--data", numbered, "-p", "2", "--seed", "5"], capsys)
    one_line_error(code, err, "give --seed 0, the seed its data was split with, not 5")


def test_files_of_two_split_seeds_are_told_to_be_verified_apart(csv_files, capsys):
    files, train, _ = csv_files
    for seed in (0, 3):
        code, _, err = run_cli(["verify", *files, "--data", train, "-p", "eel", "--seed", seed], capsys)
        one_line_error(code, err, "the files were made from splits of seeds 0, 3: verify each with its own --seed")
    code, _, err = run_cli(["verify", files[1], "--data", train, "-p", "eel", "--seed", "3"], capsys)
    assert code in (0, 1), err


def test_a_held_out_csv_keeps_the_default_rows_and_its_note(csv_files, tmp_path, capsys):
    (seed0, _), _, _ = csv_files
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] > 0.4).astype(np.int64) + (x[:, 1] > 0.8).astype(np.int64)
    held = _csv(tmp_path / "held.csv", x, y, ["cat", "dog", "eel"])
    code, result, err = _verified([seed0, "--data", held, "-p", "eel"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err
    assert result["data"]["split"] == "test" and any("--split all judges every one" in n for n in result["notes"])


def test_discrete_rows_that_repeat_are_not_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(800, 4)).astype(np.float64)
    y = (x[:, 0] + x[:, 1] > 2).astype(np.int64)
    data = _csv(tmp_path / "cat.csv", x, y, ["neg", "pos"])
    onnx_file = _exported(data, "pos", tmp_path, capsys)
    code, result, err = _verified([onnx_file, "--data", data, "-p", "pos"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err
    assert any("cannot be told apart here" in n for n in result["notes"])
    # fresh draws of the same few values, as an x/y .npz judged whole: nothing else to tell twins by, so nothing refused
    fresh = rng.integers(0, 3, size=(300, 4)).astype(np.float32)
    np.savez(tmp_path / "fresh.npz", x=fresh, y=(fresh[:, 0] + fresh[:, 1] > 2).astype(np.int64), class_names=np.array(["neg", "pos"]))
    code, result, err = _verified([onnx_file, "--data", tmp_path / "fresh.npz", "-p", "pos"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err
    assert result["data"]["n"] == 300 and any("cannot be told apart here" in n for n in result["notes"])


def _images(root: Path, per_class: int, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (16, 16, 3)) + 120 * k  # classes apart by brightness: learnt in an epoch
            Image.fromarray(pixels.astype(np.uint8)).save(root / cls / f"{seed}_{i}.png")
    return root


def test_the_training_folder_is_known_by_its_files_however_prepared(tmp_path, capsys):
    train = _images(tmp_path / "train", 40, seed=0)
    onnx_file = _exported(train, "cat", tmp_path, capsys, arch="tiny-resnet", epochs=2)
    code, _, err = run_cli(["verify", onnx_file, "--data", train, "-p", "cat", "--seed", "3", "--normalize", "none"], capsys)
    one_line_error(code, err, "give --seed 0, the seed its data was split with, not 3")
    code, result, err = _verified([onnx_file, "--data", train, "-p", "cat"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err
    assert result["data"]["split"] == "test" and not any("records a sample of" in n for n in result["notes"])


def test_twins_across_the_splits_compress_drew_are_not_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    twins = rng.choice(600, 60, replace=False)  # a tenth of the rows recorded twice
    x = np.concatenate([x, x[twins]])
    y = (x[:, 0] > 0.2).astype(np.int64)
    data = _csv(tmp_path / "twins.csv", x, y, ["neg", "pos"])
    onnx_file = _exported(data, "pos", tmp_path, capsys)
    code, result, err = _verified([onnx_file, "--data", data, "-p", "pos"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err
    assert result["data"]["split"] == "test"
    code, _, err = run_cli(["verify", onnx_file, "--data", data, "-p", "pos", "--seed", "4"], capsys)
    one_line_error(code, err, "give --seed 0, the seed its data was split with, not 4")


def test_a_tiny_set_whose_sample_is_every_fitted_row_refuses_one_found(tmp_path, capsys):
    data = _separable_csv(tmp_path / "tiny.csv", 40)
    onnx_file = _exported(data, "pos", tmp_path, capsys)
    refused = 0
    for seed in range(1, 6):
        code, _, err = run_cli(["verify", onnx_file, "--data", data, "-p", "pos", "--seed", seed], capsys)
        if code == 2:
            one_line_error(code, err, "of the rows judged are rows it was trained or tuned on")
            refused += 1
    assert refused >= 4  # a 6-row test split drawn with another seed holds one or more of the 34 fitted rows


def test_a_held_out_csv_sharing_a_few_twins_with_the_training_rows_is_not_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=(160, 4)), 4)
    y = (x[:, 0] > 0).astype(np.int64)
    train = _csv(tmp_path / "train.csv", x[:100], y[:100], ["neg", "pos"])
    held_x = np.concatenate([x[100:], x[:6]])  # 60 fresh rows and 6 that equal training rows (about 9%)
    held = _csv(tmp_path / "held.csv", held_x, np.concatenate([y[100:], y[:6]]), ["neg", "pos"])
    onnx_file = _exported(train, "pos", tmp_path, capsys)
    for seed in range(6):  # whichever of them lands in the judged split, the file is no training data
        code, result, err = _verified([onnx_file, "--data", held, "-p", "pos", "--seed", seed], tmp_path, capsys)
        assert code in (0, 1) and result is not None, err


def test_a_class_order_problem_is_named_before_fitted_rows(tmp_path, capsys):
    data = _separable_csv(tmp_path / "rows.csv", 300, names=("yes", "no"))
    onnx_file = _exported(data, "yes", tmp_path, capsys, names="yes,no")
    code, _, err = run_cli(["verify", onnx_file, "--data", data, "-p", "yes", "--seed", "4"], capsys)
    one_line_error(code, err, "--class-names")


def test_a_pool_split_with_another_seed_is_told_the_seed(exported, tmp_path, capsys):
    _, data = exported
    x_all, y_all = data.split("all")
    np.savez(tmp_path / "pool.npz", x=x_all, y=y_all)
    onnx_file = _digits_exported(tmp_path, tmp_path / "pool.npz", seed=5)
    code, _, err = run_cli(["verify", onnx_file, "--data", tmp_path / "pool.npz", "-p", "3"], capsys)
    one_line_error(code, err, "give --seed 5, the seed its data was split with, not 0")
    code, result, err = _verified([onnx_file, "--data", tmp_path / "pool.npz", "-p", "3", "--seed", "5"], tmp_path, capsys)
    assert code in (0, 1) and result["data"]["split"] == "test", err


def test_a_held_out_folder_with_a_link_to_nothing_is_refused_then_judged(tmp_path, capsys):
    """A git-annex checkout's unfetched file was left out of verify's seeded split and refused by --split all: one folder,
    two rules. Refused in every command; once mended, judged."""
    train = _images(tmp_path / "train", 30, seed=0)
    held = _images(tmp_path / "held", 20, seed=1)
    (held / "cat" / "zz_missing.png").symlink_to(tmp_path / "gone.png")  # a git-annex checkout's unfetched file
    onnx_file = _exported(train, "cat", tmp_path, capsys, arch="tiny-resnet", epochs=1)
    code, _, err = run_cli(["verify", onnx_file, "--data", held, "-p", "cat"], capsys)
    one_line_error(code, err, "zz_missing.png' in", "is named like an image but is a link to nothing")
    (held / "cat" / "zz_missing.png").unlink()
    code, result, err = _verified([onnx_file, "--data", held, "-p", "cat"], tmp_path, capsys)
    assert code in (0, 1) and result is not None, err


def test_export_with_another_seed_records_the_rows_the_model_was_trained_on(tmp_path, capsys):
    """The sample is the checkpoint's training rows, drawn evenly: export's own split (seed 1) says nothing of them."""
    data = _separable_csv(tmp_path / "rows.csv", 600)
    onnx_file = _exported(data, "pos", tmp_path, capsys, export_seed=1)
    code, result, err = _verified([onnx_file, "--data", data, "-p", "pos"], tmp_path, capsys)  # the training's test split
    assert code in (0, 1) and result is not None and not any("records a sample of" in n for n in result["notes"]), err
    code, _, err = run_cli(["verify", onnx_file, "--data", data, "-p", "pos", "--seed", "1"], capsys)
    one_line_error(code, err, "give --seed 0, the seed its data was split with, not 1")


def test_the_fitted_row_thresholds_that_void_a_gate():
    """Mutants that survived the suite: the share that voids a gate at 0.2 instead of a tenth, chance twins at 5 instead
    of 2, one fitted row ignored where the sample is every fitted row, --data holding 60% of the sampled rows not read
    as the fitted data."""
    from toolchain.verify_inputs import _fitted_data, _fitted_share, _void

    sampled = {"rows": 1000}  # the model was fitted on 1,000 rows, 100 of them sampled
    found = {"sampled": 100, "only_judged": 3}
    assert _fitted_share(sampled, found, 250) == pytest.approx(0.12)  # 3 found stand for 30 of 250 judged
    assert _void(sampled, found, 0.12) and not _void(sampled, found, 0.09)
    assert not _void(sampled, {**found, "only_judged": 2}, 0.12)  # two: a held-out set's chance twins
    every = {"rows": 40}  # every fitted row sampled: one found is one
    assert _void(every, {"sampled": 40, "only_judged": 1}, 0.11) and not _void(every, {"sampled": 40, "only_judged": 0}, 0.11)
    assert _fitted_data({"in_data": 60, "sampled": 100, "repeats": 0.0}) and not _fitted_data({"in_data": 40, "sampled": 100, "repeats": 0.0})
    assert not _fitted_data({"in_data": 60, "sampled": 100, "repeats": 0.5}) and not _fitted_data(None)
