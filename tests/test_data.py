"""Tests for the --data loaders (toolchain/data): builtin sets, .npz, CSV, idx folders, ImageFolder."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolchain.data import Dataset, load_data
from toolchain.data.idx import IdxError, read_idx, write_idx
from toolchain.data.sources import idx_folder, named
from toolchain.data.splits import stratified_split
from toolchain.errors import UserError

FASHION = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- helpers


def all_rows(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    return ds.split("all")


def pool(n_classes=3, per_class=20, shape=(4,), dtype=np.float32, seed=0):
    """x with a unique first value per row (row id), y balanced and shuffled."""
    rng = np.random.default_rng(seed)
    n = n_classes * per_class
    y = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    x = rng.standard_normal((n, *shape)).astype(dtype) if np.dtype(dtype).kind == "f" else rng.integers(
        0, 256, (n, *shape)
    ).astype(dtype)
    return x, y


def row_index(x_all: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Position of each row of ``rows`` in ``x_all`` (bitwise match); -1 if absent."""
    keys = {x_all[i].tobytes(): i for i in range(len(x_all))}
    return np.array([keys.get(r.tobytes(), -1) for r in rows])


def expect_error(match: str, spec, **kw) -> str:
    with pytest.raises(UserError) as info:
        load_data(str(spec), **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert match.lower() in msg.lower(), msg
    return msg


# --------------------------------------------------------------------------- splits


def test_stratified_split_is_a_partition_proportional_per_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 7, 1000)
    parts = stratified_split(y, [0.7, 0.15, 0.15], seed=0)
    assert len(parts) == 3
    together = np.concatenate(parts)
    assert len(together) == 1000 and len(np.unique(together)) == 1000
    for p in parts:
        assert np.all(np.diff(p) > 0)  # sorted, source order kept
    for p, f in zip(parts, [0.7, 0.15, 0.15]):
        assert abs(len(p) - f * 1000) <= 1
        for c in range(7):
            n_c = int(np.sum(y == c))
            assert abs(np.sum(y[p] == c) - f * n_c) < 2  # rounding carried across classes


def test_stratified_split_deterministic_per_seed_and_differs_across_seeds():
    y = np.repeat(np.arange(4), 50)
    a = stratified_split(y, [0.6, 0.2, 0.2], seed=3)
    b = stratified_split(y, [0.6, 0.2, 0.2], seed=3)
    c = stratified_split(y, [0.6, 0.2, 0.2], seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_stratified_split_every_part_gets_every_class_when_possible():
    y = np.repeat(np.arange(50), 3)  # 3 per class, small fractions
    parts = stratified_split(y, [0.8, 0.1, 0.1], seed=0)
    for p in parts:
        assert set(y[p].tolist()) == set(range(50))


def test_stratified_split_rejects_bad_fractions():
    with pytest.raises(ValueError):
        stratified_split(np.zeros(10), [0.5, 0.2], seed=0)
    with pytest.raises(ValueError):
        stratified_split(np.zeros(10), [1.2, -0.2], seed=0)


# --------------------------------------------------------------------------- builtin sets


def test_digits_shapes_scale_and_names():
    ds = load_data("digits", seed=0)
    from sklearn.datasets import load_digits

    raw = load_digits()
    x, y = all_rows(ds)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.input_shape == (1, 8, 8)
    assert len(y) == len(raw.target) == 1797
    assert ds.class_names == [str(i) for i in range(10)] and ds.num_classes == 10
    assert ds.given_splits is False and ds.preprocessing.scale == 1 / 16
    assert ds.preprocessing.layout == "NCHW"
    assert np.array_equal(np.sort((x * 16).reshape(len(x), -1), axis=0), np.sort(raw.data, axis=0))
    sizes = ds.describe()["sizes"]
    assert abs(sizes["val"] - 0.15 * 1797) <= 1 and abs(sizes["test"] - 0.15 * 1797) <= 1
    for split in ("train", "val", "test"):  # stratified: all 10 classes everywhere
        assert set(ds.split(split)[1].tolist()) == set(range(10))


def test_digits_seed_controls_split():
    a, b, c = load_data("digits", seed=1), load_data("digits", seed=1), load_data("digits", seed=2)
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)


def test_breast_cancer_standardized_on_train_only():
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    ds = load_data("breast-cancer", seed=0)
    assert ds.class_names == ["malignant", "benign"] and ds.num_classes == 2
    assert ds.input_shape == (30,) and ds.x_train.dtype == np.float32
    assert ds.preprocessing.layout == "NC"
    mean, std = np.array(ds.preprocessing.mean), np.array(ds.preprocessing.std)
    assert mean.shape == (30,) and std.shape == (30,)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1, atol=1e-4)
    # val/test are NOT re-centred on their own statistics
    assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3
    # un-standardizing the train rows gives rows of the raw data, and mean/std are theirs
    back = ds.x_train.astype(np.float64) * std + mean
    d = np.abs(back[:, None, :] - raw.data[None]).max(axis=2)
    assert (d.min(axis=1) < 1e-3 * (1 + np.abs(raw.data).max())).all()
    picked = raw.data[d.argmin(axis=1)]
    np.testing.assert_allclose(mean, picked.mean(axis=0), rtol=1e-9)
    # target 0 = malignant, 212 of them
    assert int(np.sum(all_rows(ds)[1] == 0)) == 212


def test_npz_loading_imports_neither_sklearn_nor_pil(tmp_path):
    x, y = pool()
    f = tmp_path / "d.npz"
    np.savez(f, x=x, y=y)
    code = (
        "import sys; from toolchain.data import load_data; "
        f"d = load_data({str(f)!r}); "
        "bad = [m for m in ('sklearn', 'PIL', 'torch', 'pandas') if m in sys.modules]; "
        "assert not bad, bad; print(len(d.y_train))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- .npz


def test_npz_pool_float_rows_untouched_and_stratified(tmp_path):
    x, y = pool(n_classes=4, per_class=25, shape=(3,))
    f = tmp_path / "pool.npz"
    np.savez(f, x=x, y=y)
    ds = load_data(str(f), seed=5)
    assert ds.given_splits is False and ds.num_classes == 4
    assert ds.preprocessing.scale == 1.0 and ds.preprocessing.layout == "NC"
    xa, ya = all_rows(ds)
    idx = row_index(x, xa)
    assert (idx >= 0).all() and len(np.unique(idx)) == len(x)  # every row, bit-for-bit, once
    assert np.array_equal(y[idx], ya)  # labels follow their rows
    for split in ("train", "val", "test"):
        assert set(ds.split(split)[1].tolist()) == {0, 1, 2, 3}
    again = load_data(str(f), seed=5)
    other = load_data(str(f), seed=6)
    assert np.array_equal(ds.x_val, again.x_val)
    assert not np.array_equal(ds.x_val, other.x_val)


def test_npz_given_splits_kept_exactly(tmp_path):
    parts = {}
    for i, s in enumerate(("train", "val", "test")):
        x, y = pool(per_class=5 + i, shape=(2, 3, 3), seed=i)
        parts[f"x_{s}"], parts[f"y_{s}"] = x, y
    f = tmp_path / "given.npz"
    np.savez(f, **parts)
    ds = load_data(str(f), seed=9)
    assert ds.given_splits is True and ds.input_shape == (2, 3, 3)
    for s in ("train", "val", "test"):
        x, y = ds.split(s)
        assert x.dtype == np.float32
        assert x.tobytes() == parts[f"x_{s}"].tobytes()  # same rows, same order, same bits
        assert np.array_equal(y, parts[f"y_{s}"])


def test_npz_without_val_carves_it_from_train(tmp_path):
    xtr, ytr = pool(n_classes=3, per_class=40, shape=(5,), seed=1)
    xte, yte = pool(n_classes=3, per_class=7, shape=(5,), seed=2)
    f = tmp_path / "noval.npz"
    np.savez(f, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ds = load_data(str(f), seed=0, val_fraction=0.25)
    assert ds.given_splits is True
    assert ds.x_test.tobytes() == xte.tobytes() and np.array_equal(ds.y_test, yte)
    assert len(ds.y_val) == 30 and len(ds.y_train) == 90
    assert np.array_equal(np.bincount(ds.y_val), [10, 10, 10])
    idx = row_index(xtr, np.concatenate([ds.x_train, ds.x_val]))
    assert (idx >= 0).all() and len(np.unique(idx)) == 120
    assert np.all(np.diff(row_index(xtr, ds.x_train)) > 0)  # train order kept


def test_npz_uint8_images_scaled_and_channel_added(tmp_path):
    x, y = pool(n_classes=2, per_class=10, shape=(6, 5), dtype=np.uint8)
    f = tmp_path / "img.npz"
    np.savez(f, x=x, y=y, class_names=np.array(["cat", "dog"]))
    ds = load_data(str(f))
    assert ds.input_shape == (1, 6, 5) and ds.x_train.dtype == np.float32
    assert ds.preprocessing.scale == pytest.approx(1 / 255) and ds.preprocessing.layout == "NCHW"
    assert ds.class_names == ["cat", "dog"]
    xa, _ = all_rows(ds)
    assert xa.max() <= 1.0 and xa.min() >= 0.0
    expected = (x.astype(np.float32) * np.float32(1 / 255))[:, None]
    assert (row_index(expected, xa) >= 0).all()


def test_npz_integer_tabular_features_are_kept_as_stored(tmp_path):
    # Rule: only uint8 images are scaled by 1/255; an age of 45 stays 45.0.
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(18, 90, 40), rng.integers(0, 17, 40)], axis=1).astype(np.int64)
    y = np.arange(40) % 2
    f = tmp_path / "ages.npz"
    np.savez(f, x=x, y=y)
    ds = load_data(str(f))
    assert ds.preprocessing.scale == 1.0 and ds.preprocessing.layout == "NC"
    assert ds.preprocessing.note == "integer features (int64) kept as stored, cast to float32"
    xa, _ = all_rows(ds)
    assert (row_index(x.astype(np.float32), xa) >= 0).all()
    assert xa.max() > 17  # not divided by 255


@pytest.mark.parametrize(
    "dtype, shape, scaled, note",
    [
        (np.uint8, (5,), False, "integer features (uint8) kept as stored, cast to float32"),
        (np.uint8, (6, 5), True, "uint8 images scaled by 1/255; channel axis added: (N,H,W) -> (N,1,H,W)"),
        (np.uint8, (2, 6, 5), True, "uint8 images scaled by 1/255"),
        (np.uint8, (6, 5, 3), True, "uint8 images scaled by 1/255; transposed from NHWC to NCHW"),
        (np.uint16, (6, 5), False, "integer images (uint16) kept as stored, cast to float32; channel axis added"),
        (np.int16, (4,), False, "integer features (int16) kept as stored, cast to float32"),
    ],
)
def test_npz_integer_rule(tmp_path, dtype, shape, scaled, note):
    x, y = pool(n_classes=2, per_class=10, shape=shape, dtype=dtype)
    f = tmp_path / "i.npz"
    np.savez(f, x=x, y=y)
    ds = load_data(str(f))
    assert ds.preprocessing.note.startswith(note)
    assert ds.preprocessing.scale == (pytest.approx(1 / 255) if scaled else 1.0)
    xa, _ = all_rows(ds)
    assert xa.dtype == np.float32
    assert (xa.max() <= 1.0) == scaled


def test_npz_nhwc_images_become_nchw(tmp_path):
    x, y = pool(n_classes=2, per_class=5, shape=(8, 7, 3))
    f = tmp_path / "nhwc.npz"
    np.savez(f, x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y)
    ds = load_data(str(f))
    assert ds.input_shape == (3, 8, 7)
    assert np.array_equal(ds.x_test, np.moveaxis(x, -1, 1))


def test_npz_class_names_set_num_classes_and_whole_float_labels_ok(tmp_path):
    x, y = pool(n_classes=2, per_class=6)
    f = tmp_path / "names.npz"
    np.savez(f, x=x, y=y.astype(np.float64), class_names=np.array(["a", "b", "c"]))
    ds = load_data(str(f))
    assert ds.num_classes == 3 and ds.class_names == ["a", "b", "c"]
    assert ds.y_train.dtype == np.int64


def test_num_classes_is_max_label_plus_one(tmp_path):
    x, _ = pool(n_classes=2, per_class=6)
    y = np.repeat([0, 4], 6)
    f = tmp_path / "gap.npz"
    np.savez(f, x=x, y=y)
    ds = load_data(str(f))
    assert ds.num_classes == 5 and ds.class_names == ["0", "1", "2", "3", "4"]


def _npz(tmp_path, name="bad.npz", **arrays):
    f = tmp_path / name
    np.savez(f, **arrays)
    return f


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "does not exist"),
        ("garbage", "not an .npz archive"),
        ("truncated", "cannot read"),
        ("only_x", "no 'y' array"),
        ("no_keys", "none of the expected arrays"),
        ("no_test", "missing x_test, y_test"),
        ("val_half", "missing y_val"),
        ("both", "both x/y and x_train"),
        ("nan", "NaN or inf"),
        ("inf", "NaN or inf"),
        ("length", "has 12 samples but y has 11 labels"),
        ("negative", "negative label -1"),
        ("fraction", "non-integer label 0.5"),
        ("string_y", "labels must be integers"),
        ("shape_mismatch", "different sample shapes"),
        ("too_few", "has only 2 samples"),
        ("empty", "is empty"),
        ("pickled", "pickled"),
        ("short_names", "only 2 class names"),
        ("mixed_dtype", "mixes dtypes"),
        ("one_class", "only one class"),
        ("x_1d", "store (N, features)"),
    ],
)
def test_npz_bad_input_raises_one_line_user_error(tmp_path, case, match):
    x, y = pool(n_classes=2, per_class=6)
    if case == "missing":
        f = tmp_path / "nope.npz"
    elif case == "garbage":
        f = tmp_path / "g.npz"
        f.write_bytes(b"this is not a zip file at all")
    elif case == "truncated":
        good = _npz(tmp_path, "good.npz", x=np.zeros((500, 50), np.float32), y=np.zeros(500))
        f = tmp_path / "t.npz"
        f.write_bytes(good.read_bytes()[:3000])
    elif case == "only_x":
        f = _npz(tmp_path, x=x)
    elif case == "no_keys":
        f = _npz(tmp_path, a=x)
    elif case == "no_test":
        f = _npz(tmp_path, x_train=x, y_train=y)
    elif case == "val_half":
        f = _npz(tmp_path, x_train=x, y_train=y, x_val=x, x_test=x, y_test=y)
    elif case == "both":
        f = _npz(tmp_path, x=x, y=y, x_train=x, y_train=y, x_test=x, y_test=y)
    elif case in ("nan", "inf"):
        x[3, 1] = np.nan if case == "nan" else np.inf
        f = _npz(tmp_path, x=x, y=y)
    elif case == "length":
        f = _npz(tmp_path, x=x, y=y[:-1])
    elif case == "negative":
        y[0] = -1
        f = _npz(tmp_path, x=x, y=y)
    elif case == "fraction":
        f = _npz(tmp_path, x=x, y=np.where(y == 0, 0.5, 1.0))
    elif case == "string_y":
        f = _npz(tmp_path, x=x, y=np.array(["a", "b"] * 6))
    elif case == "shape_mismatch":
        f = _npz(tmp_path, x_train=x, y_train=y, x_test=x[:, :3], y_test=y)
    elif case == "too_few":
        y = np.array([0] * 10 + [1] * 2)
        f = _npz(tmp_path, x=x, y=y)
    elif case == "empty":
        f = _npz(tmp_path, x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    elif case == "pickled":
        f = _npz(tmp_path, x=x, y=y, class_names=np.array(["a", None], dtype=object))
    elif case == "short_names":
        f = _npz(tmp_path, x=x, y=np.repeat([0, 1, 2], 4), class_names=np.array(["a", "b"]))
    elif case == "mixed_dtype":
        f = _npz(tmp_path, x_train=x, y_train=y, x_test=(x * 10).astype(np.uint8), y_test=y)
    elif case == "one_class":
        f = _npz(tmp_path, x=x, y=np.zeros(12, np.int64))
    elif case == "x_1d":
        f = _npz(tmp_path, x=x[:, 0], y=y)
    msg = expect_error(match, f)
    if case == "too_few":
        assert "class 1" in msg


# --------------------------------------------------------------------------- CSV


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_default_label_is_last_column_features_as_stored(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((30, 3)) * 100
    labels = np.repeat([0, 1, 2], 10)
    rows = [[f"{v:.6f}" for v in feats[i]] + [labels[i]] for i in range(30)]
    f = _write_csv(tmp_path / "t.csv", ["a", "b", "c", "target"], rows)
    ds = load_data(str(f), seed=0)
    assert ds.input_shape == (3,) and ds.preprocessing.layout == "NC"
    assert ds.preprocessing.mean == [] and ds.preprocessing.scale == 1.0
    expected = np.array([[float(v) for v in r[:3]] for r in rows], dtype=np.float32)
    xa, ya = all_rows(ds)
    idx = row_index(expected, xa)
    assert (idx >= 0).all() and len(np.unique(idx)) == 30  # exact parsed values, no scaling
    assert np.array_equal(labels[idx], ya)
    assert ds.class_names == ["0", "1", "2"] and ds.given_splits is False


def test_csv_label_column_by_name_and_string_labels(tmp_path):
    names = ["zebra", "ant", "moth"]
    rows = [[names[i % 3], i, i * 2.5] for i in range(30)]
    f = _write_csv(tmp_path / "s.csv", ["species", "f1", "f2"], rows)
    ds = load_data(str(f), label_column="species")
    assert ds.class_names == ["ant", "moth", "zebra"] and ds.num_classes == 3
    assert ds.label_mapping == {"zebra": 2, "ant": 0, "moth": 1}
    assert ds.describe()["label_mapping"] == ds.label_mapping
    assert ds.preprocessing.note == (
        "CSV features as stored (2 columns), label column 'species'; "
        "labels: ant=0, moth=1, zebra=2 (alphabetical; set --class-names to change)"
    )
    assert ds.input_shape == (2,)
    xa, ya = all_rows(ds)
    for row, lab in zip(xa, ya):
        i = int(row[0])
        assert row[1] == np.float32(i * 2.5)
        assert ds.class_names[lab] == names[i % 3]


@pytest.mark.parametrize("cell", ["1_0", "\u0661", "\uff11"])
def test_csv_cells_a_csv_reader_reads_as_text_are_not_numbers(tmp_path, cell):
    """Python's float() reads "1_0" as 10 and Arabic-Indic or full-width digits as numbers, where pandas and numpy read
    text: a label "0_3" became class 3 and a feature "1_0" the number 10 (a data reviewer's finding)."""
    rows = [[i, i % 2] for i in range(12)]
    rows[4][0] = cell
    expect_error(f"column 'f' holds {cell!r}, not a number", _write_csv(tmp_path / "f.csv", ["f", "y"], rows))
    rows = [[i, i % 2] for i in range(12)]
    rows[5][1] = "0_3" if cell == "1_0" else cell
    expect_error(f"holds numbers and {rows[5][1]!r} (line 7)", _write_csv(tmp_path / "l.csv", ["f", "y"], rows))


def test_csv_label_column_named_twice_is_refused_not_guessed(tmp_path):
    """Two columns named "species": the first was taken as the labels without a word."""
    from toolchain.errors import UserError

    f = _write_csv(tmp_path / "s.csv", ["species", "f1", "species"], [[i % 2, i, (i + 1) % 2] for i in range(20)])
    with pytest.raises(UserError, match="--label-column 'species' names 2 columns of .*: give the columns distinct names"):
        load_data(str(f), label_column="species")


def test_csv_last_column_named_twice_is_refused_not_learnt_as_a_feature(tmp_path):
    """Without --label-column the last column holds the labels; a column of the same name earlier (a copy of the labels
    saved twice) had been read as a feature, and a model trained on it learnt the answer."""
    from toolchain.errors import UserError

    f = _write_csv(tmp_path / "s.csv", ["f0", "label", "f1", "label"], [[i, i % 2, i * 0.5, i % 2] for i in range(20)])
    with pytest.raises(UserError, match="the label column 'label' \\(the last\\) of .* has the name of column 2 too"):
        load_data(str(f))


def test_csv_class_names_set_the_order_of_string_labels(tmp_path):
    rows = [[i, "benign" if i % 3 else "malignant"] for i in range(30)]
    f = _write_csv(tmp_path / "bc.csv", ["f", "diagnosis"], rows)
    ds = load_data(str(f), class_names=["malignant", "benign"])
    assert ds.class_names == ["malignant", "benign"]
    assert ds.label_mapping == {"malignant": 0, "benign": 1}
    assert ds.preprocessing.note.endswith("labels: malignant=0, benign=1 (order from --class-names)")
    xa, ya = all_rows(ds)
    assert np.array_equal(ya, np.where(xa[:, 0].astype(int) % 3 == 0, 0, 1))
    # a class in the list without rows is allowed (it names index 2)
    ds3 = load_data(str(f), class_names=["benign", "malignant", "unknown"])
    assert ds3.num_classes == 3 and ds3.label_mapping == {"benign": 0, "malignant": 1}


@pytest.mark.parametrize(
    "names, match",
    [
        (["benign"], "label 'malignant'"),
        (["benign", "malignant", "benign"], "names 'benign' twice"),
        ([], "is empty"),
        (["benign", " "], "empty name at position 2"),
    ],
)
def test_csv_class_names_errors(tmp_path, names, match):
    rows = [[i, "benign" if i % 3 else "malignant"] for i in range(30)]
    f = _write_csv(tmp_path / "bc.csv", ["f", "diagnosis"], rows)
    expect_error(match, f, class_names=names)


def test_class_names_name_numeric_labels(tmp_path):
    rows = [[i, i % 2] for i in range(20)]
    f = _write_csv(tmp_path / "n.csv", ["f", "y"], rows)
    ds = load_data(str(f), class_names=["neg", "pos"])
    assert ds.class_names == ["neg", "pos"] and ds.label_mapping is None
    assert "labels: neg=0, pos=1 (numeric labels, named by --class-names)" in ds.preprocessing.note
    expect_error("only 1 class name:", f, class_names=["neg"])

    x, y = pool(n_classes=2, per_class=6)
    np.savez(tmp_path / "p.npz", x=x, y=y)
    assert load_data(str(tmp_path / "p.npz"), class_names="a,b").class_names == ["a", "b"]
    digits = load_data("digits", class_names=[f"d{i}" for i in range(10)])
    assert digits.class_names[3] == "d3"


def test_class_names_must_agree_with_names_the_source_stores(tmp_path):
    x, y = pool(n_classes=2, per_class=6)
    f = tmp_path / "named.npz"
    np.savez(f, x=x, y=y, class_names=np.array(["cat", "dog"]))
    assert load_data(str(f), class_names=["cat", "dog"]).class_names == ["cat", "dog"]
    msg = expect_error("does not match the class names stored in", f, class_names=["dog", "cat"])
    assert "(dog, cat)" in msg and "(cat, dog)" in msg
    expect_error("does not match", "breast-cancer", class_names=["benign", "malignant"])
    assert load_data("breast-cancer", class_names=["malignant", "benign"]).class_names == ["malignant", "benign"]
    from toolchain.data.rows import load_rows

    with pytest.raises(UserError, match="does not match"):
        load_rows(str(f), class_names=["dog", "cat"])


def test_csv_integer_labels_kept_as_they_are(tmp_path):
    rows = [[i, (i % 2) * 3] for i in range(20)]  # labels 0 and 3
    f = _write_csv(tmp_path / "i.csv", ["f", "y"], rows)
    ds = load_data(str(f))
    assert ds.num_classes == 4
    xa, ya = all_rows(ds)
    assert np.array_equal(ya, (xa[:, 0].astype(int) % 2) * 3)


@pytest.mark.parametrize(
    "case, match",
    [
        ("bad_column", "not a column"),
        ("text_feature", "column 'f' holds 'abc', not a number"),
        ("ragged", "line 3"),
        ("empty", "is empty"),
        ("header_only", "no data rows"),
        ("fraction_label", "non-integer label"),
        ("negative_label", "negative label"),
        ("nan_feature", "NaN or inf"),
        ("missing", "does not exist"),
    ],
)
def test_csv_bad_input_raises_one_line_user_error(tmp_path, case, match):
    rows = [[i, i % 2] for i in range(12)]
    header = ["f", "y"]
    f = tmp_path / "bad.csv"
    kw = {}
    if case == "bad_column":
        kw["label_column"] = "label"
    elif case == "text_feature":
        rows[4][0] = "abc"
    elif case == "ragged":
        rows[1].append(7)
    elif case == "fraction_label":
        rows[2][1] = 0.5
    elif case == "negative_label":
        rows[2][1] = -2
    elif case == "nan_feature":
        rows[2][0] = "nan"
    if case == "empty":
        f.write_text("")
    elif case == "header_only":
        f.write_text("f,y\n")
    elif case != "missing":
        _write_csv(f, header, rows)
    expect_error(match, f, **kw)


def test_label_column_on_non_csv_is_an_error():
    expect_error("only applies to a .csv", "digits", label_column="target")


# --------------------------------------------------------------------------- idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    p = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(p, a)
    raw = p.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    back = read_idx(p)
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and np.array_equal(back, a)


def test_idx_header_is_big_endian_mnist_layout(tmp_path):
    p = tmp_path / "x"
    write_idx(p, np.zeros((3, 2, 1), np.uint8))
    assert p.read_bytes()[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1])
    labels = tmp_path / "labels"
    labels.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
    assert read_idx(labels).tolist() == [7, 9]


@pytest.mark.parametrize(
    "buf, match",
    [
        (b"\x00", "shorter"),
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "magic"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "type code"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 5]), "bytes"),
    ],
)
def test_idx_rejects_bad_bytes(tmp_path, buf, match):
    path = tmp_path / "bad.idx"
    path.write_bytes(buf)
    with pytest.raises(IdxError, match=match):
        read_idx(path)


def make_idx_folder(folder: Path, n_train=60, n_test=20, gz=True, size=(28, 28)) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *size), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in data.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_with_given_test_and_carved_val(tmp_path, gz):
    data = make_idx_folder(tmp_path / "mnistish", gz=gz)
    ds = load_data(str(tmp_path / "mnistish"), seed=0, val_fraction=0.2)
    assert ds.given_splits is True and ds.input_shape == (1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.preprocessing.scale == pytest.approx(1 / 255)
    assert ds.class_names == [str(i) for i in range(10)]
    expect_test = (data["t10k-images-idx3-ubyte"].astype(np.float32) * np.float32(1 / 255))[:, None]
    assert np.array_equal(ds.x_test, expect_test)
    assert np.array_equal(ds.y_test, data["t10k-labels-idx1-ubyte"])
    assert len(ds.y_val) == 12 and len(ds.y_train) == 48
    assert set(np.bincount(ds.y_val, minlength=10).tolist()) <= {1, 2}  # 6 rows a class, 20% each
    train_x = (data["train-images-idx3-ubyte"].astype(np.float32) * np.float32(1 / 255))[:, None]
    idx = row_index(train_x, np.concatenate([ds.x_train, ds.x_val]))
    assert (idx >= 0).all() and len(np.unique(idx)) == 60
    assert np.array_equal(data["train-labels-idx1-ubyte"][idx], np.concatenate([ds.y_train, ds.y_val]))


def test_idx_folder_named_fashion_gets_fashion_class_names_only_as_a_copy_of_it(tmp_path):
    make_idx_folder(tmp_path / "my-fashion-copy", n_train=60000, n_test=10000)
    ds = load_data(str(tmp_path / "my-fashion-copy"))
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.input_shape == (1, 28, 28)
    make_idx_folder(tmp_path / "fashion-shoes", size=(5, 5))  # the user's own classes: named by number, not as shirts
    ds = load_data(str(tmp_path / "fashion-shoes"))
    assert ds.class_names == [str(i) for i in range(10)] and ds.input_shape == (1, 5, 5)


def test_idx_folder_errors(tmp_path):
    data = make_idx_folder(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    expect_error("lacks t10k-labels-idx1-ubyte", tmp_path / "partial")

    make_idx_folder(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03junk"))
    expect_error("not a valid idx file", tmp_path / "corrupt")

    make_idx_folder(tmp_path / "mismatch")
    write_idx(tmp_path / "mismatch" / "train-labels-idx1-ubyte.gz", data["train-labels-idx1-ubyte"][:-1])
    expect_error("60 samples but", tmp_path / "mismatch")

    # a plain and a .gz copy of one file: the plain one was read without a word, whatever the .gz held (a reviewer's)
    make_idx_folder(tmp_path / "both")
    write_idx(tmp_path / "both" / "train-images-idx3-ubyte", np.zeros((60, 28, 28), np.uint8))
    expect_error("holds train-images-idx3-ubyte and train-images-idx3-ubyte.gz: keep one", tmp_path / "both")


def test_fashion_mnist_shortcut_missing_says_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", tmp_path / "absent")
    expect_error("apt-get install dataset-fashion-mnist", "fashion-mnist")


@pytest.fixture(scope="module")
def fashion():
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    return load_data("fashion-mnist", seed=0)


def test_fashion_mnist_from_debian_package(fashion):
    ds = fashion
    assert ds.name == "fashion-mnist" and ds.given_splits is True
    assert len(ds.y_train) + len(ds.y_val) == 60000 and len(ds.y_test) == 10000
    assert ds.input_shape == (1, 28, 28) and ds.x_train.dtype == np.float32
    assert ds.class_names == idx_folder.FASHION_MNIST_CLASSES and ds.num_classes == 10
    assert np.array_equal(np.bincount(ds.y_test), np.full(10, 1000))
    assert np.array_equal(np.bincount(ds.y_val), np.full(10, 900))
    assert 0.0 <= ds.x_test.min() and ds.x_test.max() <= 1.0


def test_fashion_mnist_folder_path_equals_shortcut(fashion):
    if not FASHION.exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    ds = load_data(str(FASHION), seed=0)
    assert ds.class_names == fashion.class_names
    assert np.array_equal(ds.y_val, fashion.y_val) and np.array_equal(ds.x_test[:50], fashion.x_test[:50])


# --------------------------------------------------------------------------- ImageFolder


def make_image_folder(root: Path, rgb_one=False) -> dict:
    from PIL import Image

    sizes = {"cat": (6, 5), "ant": (6, 5), "bee": (9, 4)}  # (h, w); "ant" sorts first
    values = {}
    v = 1
    for cls, (h, w) in sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(5):
            arr = np.full((h, w), v * 7, dtype=np.uint8)
            values[v * 7] = cls
            img = Image.fromarray(arr, mode="L")
            if rgb_one and cls == "cat" and i == 0:
                img = img.convert("RGB")
            img.save(root / cls / f"{i:02d}.{'png' if i % 2 else 'jpg' if cls == 'bee' else 'png'}")
            v += 1
    (root / "ant" / "notes.txt").write_text("not an image")
    return values


def test_image_folder_of_mixed_sizes_needs_an_image_size(tmp_path):
    # Rule: images of different sizes are refused unless an image size is given (the first
    # image's size is no longer applied to all: a huge first image made every sample huge).
    make_image_folder(tmp_path / "imgs")
    msg = expect_error("differ in size", tmp_path / "imgs")
    assert "'ant/00.png' is 6x5" in msg and "'bee/00.jpg' is 9x4" in msg and "--image-size" in msg


def test_image_folder_grayscale_sorted_classes_resized_to_given_size(tmp_path):
    values = make_image_folder(tmp_path / "imgs")
    ds = load_data(str(tmp_path / "imgs"), seed=0, image_size=(6, 5))
    assert ds.class_names == ["ant", "bee", "cat"]
    assert ds.label_mapping == {"ant": 0, "bee": 1, "cat": 2}
    assert ds.input_shape == (1, 6, 5) and ds.x_train.dtype == np.float32
    assert ds.preprocessing.scale == pytest.approx(1 / 255) and ds.given_splits is False
    assert ds.preprocessing.note == (
        "ImageFolder, grayscale, resized to 6x5 (bilinear), 8-bit pixels scaled by 1/255; "
        "labels: ant=0, bee=1, cat=2 (folder names, alphabetical; set --class-names to change); "
        "1 other entry of the class folders left out (not an image: another file, a folder without images, a link back up), such as 'ant/notes.txt'"
    )
    xa, ya = all_rows(ds)
    assert len(ya) == 15 and np.array_equal(np.bincount(ya), [5, 5, 5])
    for row, lab in zip(xa, ya):
        v = int(round(float(row.mean()) * 255))
        assert values[v] == ds.class_names[lab]
        if ds.class_names[lab] != "bee":  # not resized, not JPEG: exact
            assert np.all(row == np.float32(v) * np.float32(1 / 255))


def test_image_folder_of_one_size_is_not_resized(tmp_path):
    from PIL import Image

    for cls in ("x", "y"):
        (tmp_path / "same" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((7, 3), 10 * i + (cls == "y"), np.uint8)).save(tmp_path / "same" / cls / f"{i}.png")
    ds = load_data(str(tmp_path / "same"))
    assert ds.input_shape == (1, 7, 3)
    assert "all 7x3, not resized" in ds.preprocessing.note


def test_image_folder_class_names_set_the_label_order(tmp_path):
    make_image_folder(tmp_path / "imgs")
    ds = load_data(str(tmp_path / "imgs"), image_size=(6, 5), class_names=["cat", "bee", "ant"])
    assert ds.class_names == ["cat", "bee", "ant"]
    assert ds.label_mapping == {"cat": 0, "bee": 1, "ant": 2}
    assert "labels: cat=0, bee=1, ant=2 (folder names, order from --class-names)" in ds.preprocessing.note
    xa, ya = all_rows(ds)
    assert np.array_equal(np.bincount(ya), [5, 5, 5])
    expect_error("label 'cat'", tmp_path / "imgs", image_size=(6, 5), class_names=["ant", "bee"])


def test_image_folder_rgb_and_image_size(tmp_path):
    make_image_folder(tmp_path / "imgs", rgb_one=True)
    ds = load_data(str(tmp_path / "imgs"), image_size=(4, 3))
    assert ds.input_shape == (3, 4, 3)


def test_image_folder_errors(tmp_path):
    (tmp_path / "e" / "a").mkdir(parents=True)
    (tmp_path / "e" / "b").mkdir(parents=True)
    # no sub-folder holds an image: not an ImageFolder (a repository given by mistake was told to remove its 'cli' folder)
    msg = expect_error("is not an ImageFolder: none of its 2 sub-folders ('a', 'b') holds PNG/JPEG images directly", tmp_path / "e")
    assert "remove" not in msg, msg
    make_image_folder(tmp_path / "half")
    (tmp_path / "half" / "zebra").mkdir()
    msg = expect_error("class folder 'zebra'", tmp_path / "half")
    assert "has no PNG/JPEG images while the others have" in msg, msg

    make_image_folder(tmp_path / "c")
    (tmp_path / "c" / "ant" / "99.png").write_bytes(b"not a png")
    expect_error("cannot read image", tmp_path / "c")

    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.txt").write_text("hi")
    expect_error("unknown --data", tmp_path / "flat")


# --------------------------------------------------------------------------- anything else


def test_unknown_spec_lists_what_is_accepted(tmp_path):
    msg = expect_error("unknown --data 'foo'", "foo")
    assert "digits, breast-cancer, fashion-mnist" in msg and "ImageFolder" in msg
    other = tmp_path / "data.txt"
    other.write_text("1,2\n")
    expect_error("unknown --data", other)


@pytest.mark.parametrize("val, test", [(0, 0.2), (0.2, 1.0), (0.5, 0.5), (float("nan"), 0.1)])
def test_bad_fractions_are_user_errors(val, test):
    expect_error("fraction", "digits", val_fraction=val, test_fraction=test)


def test_an_image_folder_of_gray_pngs_with_alpha_is_gray(tmp_path):
    """A transparent gray PNG (mode LA) was read as 3 channels."""
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            arr = np.stack([np.full((5, 5), 40 * i + (cls == "b") * 100, np.uint8), np.full((5, 5), 128, np.uint8)], -1)
            Image.fromarray(arr, mode="LA").save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = load_data(str(tmp_path / "imgs"), seed=0)
    assert ds.input_shape == (1, 5, 5) and "grayscale" in ds.preprocessing.note


def _held_out_csvs(tmp_path):
    """A CSV --data of string labels and a held-out CSV of the same columns (label column placed elsewhere)."""
    rng = np.random.default_rng(3)
    names = ["ok", "fault"]
    rows = [[names[i % 2], f"{rng.standard_normal():.5f}", f"{i % 7}.5"] for i in range(60)]
    data = _write_csv(tmp_path / "data.csv", ["state", "vib", "temp"], rows)
    held = [[f"{0.25 * i:.2f}", names[(i + 1) % 2], f"{i}.0"] for i in range(8)]
    val = _write_csv(tmp_path / "val.csv", ["vib", "state", "temp"], held)
    return data, val, held


def test_a_held_out_csv_takes_data_s_columns_and_labels(tmp_path):
    from toolchain.data.given import with_given_rows

    data, val, held = _held_out_csvs(tmp_path)
    base = load_data(str(data), seed=0, label_column="state")
    ds = with_given_rows(base, val=str(val))
    x_val, y_val = ds.split("val")
    assert x_val.shape == (8, 2) and x_val.dtype == np.float32
    assert np.array_equal(x_val[:, 0], np.array([float(r[0]) for r in held], dtype=np.float32))  # vib, then temp
    assert np.array_equal(x_val[:, 1], np.array([float(r[2]) for r in held], dtype=np.float32))
    assert [ds.class_names[i] for i in y_val] == [r[1] for r in held]  # named as --data's labels
    assert len(ds.split("train")[1]) == len(base.split("train")[1]) + len(base.split("val")[1])
    assert "--val" in ds.preprocessing.note and "CSV rows" in ds.preprocessing.note


@pytest.mark.parametrize("case, match", [
    ("order", "other columns than --data.*another order: column 1 is 'vib' there, 'temp' here"),
    ("missing", "other columns than --data.*no column beside --data's to hold the labels"),
    ("extra", "2 columns that --data does not have"),
    ("label", "holds 'broken' \\(line 3\\), not a label of --data"),
])
def test_a_held_out_csv_of_other_columns_or_labels_is_refused(tmp_path, case, match):
    from toolchain.data.given import with_given_rows

    data, _, _ = _held_out_csvs(tmp_path)
    header, rows = {
        "order": (["temp", "vib", "state"], [["1", "2", "ok"]]),
        "missing": (["vib", "temp"], [["1", "2"]]),
        "extra": (["vib", "temp", "state", "site"], [["1", "2", "ok", "x"]]),
        "label": (["vib", "temp", "state"], [["1", "2", "ok"], ["1", "2", "broken"]]),
    }[case]
    val = _write_csv(tmp_path / "val.csv", header, rows)
    with pytest.raises(UserError, match=match):
        with_given_rows(load_data(str(data), seed=0, label_column="state"), val=str(val))


def test_a_held_out_csv_of_index_labels_is_checked_against_the_class_count(tmp_path):
    from toolchain.data.given import with_given_rows

    rows = [[f"{i * 0.1:.1f}", i % 3] for i in range(30)]
    data = _write_csv(tmp_path / "data.csv", ["f", "y"], rows)
    ok = _write_csv(tmp_path / "ok.csv", ["f", "y"], [["0.55", 2], ["0.75", 0]])
    ds = with_given_rows(load_data(str(data), seed=0), test=str(ok))
    assert ds.split("test")[1].tolist() == [2, 0]
    bad = _write_csv(tmp_path / "bad.csv", ["f", "y"], [["0.55", 3]])
    with pytest.raises(UserError, match="1 of the 2 rows of --test are also in --data's training rows"):
        with_given_rows(load_data(str(data), seed=0), test=str(_write_csv(tmp_path / "seen.csv", ["f", "y"],
                                                                           [["0.5", 2], ["0.75", 0]])))
    with pytest.raises(UserError, match="has label 3, beyond --data's 3 classes"):
        with_given_rows(load_data(str(data), seed=0), test=str(bad))
    with pytest.raises(UserError, match="is a CSV, but --data 'digits' is not"):
        with_given_rows(load_data("digits", seed=0), test=str(ok))


def test_verify_reads_a_csv_whole_in_file_order_where_its_baseline_was(tmp_path):
    """A compress run's --test CSV is judged on every row in file order; verify reads it again the same way (--split all,
    or by default where the baseline counted every row), not as a shuffled split that no rows hash can match."""
    from toolchain.judged_rows import load_rows_for
    from toolchain.provenance import rows_sha256

    rows = [[f"{i * 0.37:.2f}", ["ok", "fault"][i % 3 == 0]] for i in range(40)]
    test = _write_csv(tmp_path / "test.csv", ["f", "state"], rows)
    in_order = np.array([[float(r[0])] for r in rows], dtype=np.float32)
    for split, baseline_n in (("all", None), ("auto", 40)):
        got = load_rows_for(str(test), split=split, baseline_n=baseline_n, class_names=["fault", "ok"])
        assert got["split"] == "all" and np.array_equal(got["x"], in_order)
        assert [got["class_names"][i] for i in got["y"]] == [r[1] for r in rows]
    assert rows_sha256(got["x"], got["y"]) == rows_sha256(in_order, got["y"])
    shared = load_rows_for(str(test), split="auto", baseline_n=None, class_names=["fault", "ok"])
    assert shared["split"] == "test" and len(shared["y"]) < 40  # no baseline: the seeded test split, as before


def test_held_out_and_whole_csv_rows_take_the_input_shape(tmp_path):
    """Flat CSV rows fed to an image model (--input-shape 1,4,4): --val/--test CSV rows were left flat (exit 3 in train,
    compress and export) and verify --split all on a CSV ignored the flag (an adversarial reviewer's findings)."""
    from toolchain.data.given import with_given_rows
    from toolchain.judged_rows import load_rows_for

    rng = np.random.default_rng(0)
    header = [f"p{i}" for i in range(16)] + ["y"]
    rows = [[f"{v:.4f}" for v in rng.random(16)] + [i % 2] for i in range(40)]
    data = _write_csv(tmp_path / "data.csv", header, rows)
    held = _write_csv(tmp_path / "held.csv", header, [[f"{v:.4f}" for v in rng.random(16)] + [i % 2] for i in range(6)])
    ds = with_given_rows(load_data(str(data), seed=0, input_shape=(1, 4, 4)), test=str(held))
    assert ds.split("test")[0].shape == (6, 1, 4, 4) and ds.split("train")[0].shape[1:] == (1, 4, 4)
    whole = load_rows_for(str(held), split="all", input_shape=(1, 4, 4))
    assert whole["x"].shape == (6, 1, 4, 4)


def test_a_held_out_csv_of_a_class_that_class_names_adds_is_read_by_its_number_and_refused_untrained(tmp_path):
    """--class-names benign,malignant,other over --data without 'other' rows: a --test row labelled 'other' was refused as
    not a label of --data, though the data line numbers it 2 (an adversarial reviewer's finding). It is read as class 2,
    and refused because no training row shows the model that class (a later reviewer's finding)."""
    from toolchain.data.given import with_given_rows
    from toolchain.errors import UserError

    rows = [[f"{i * 0.1:.1f}", ["benign", "malignant"][i % 2]] for i in range(30)]
    data = _write_csv(tmp_path / "data.csv", ["f", "state"], rows)
    test = _write_csv(tmp_path / "test.csv", ["f", "state"], [["0.55", "other"], ["0.65", "benign"]])
    with pytest.raises(UserError, match=r"has no row of class 'other' \(label 2\), which the --test .* rows hold"):
        with_given_rows(load_data(str(data), seed=0, class_names="benign,malignant,other"), test=str(test))
    known = _write_csv(tmp_path / "known.csv", ["f", "state"], [["0.55", "malignant"], ["0.65", "benign"]])
    ds = with_given_rows(load_data(str(data), seed=0, class_names="benign,malignant,other"), test=str(known))
    assert ds.split("test")[1].tolist() == [1, 0]


def test_a_default_that_judged_a_share_of_the_rows_says_so_apart():
    """A new user's held-out folder was judged on 27 of its 180 images by default, said only inside the rows line."""
    from toolchain.judged_rows import load_rows_for, share_note

    shared = load_rows_for("digits", split="auto")
    assert share_note(shared).startswith(f"judged the seeded test split of digits, {len(shared['y'])} of its 1,797 rows")
    assert share_note(load_rows_for("digits", split="all")) is None


def test_a_run_s_own_test_rows_are_judged_whole_only_where_every_file_records_them_and_they_read_whole():
    """A device's check of a compress run's file on its --test folder judged a seeded 15% ("0 of 6 missed"); judged whole
    now, where the rows' own sha256 is the one every file records (a second file without that record, of a run trained
    on this folder, was refused as judged on its training rows), and the whole read succeeds (a link to nothing there,
    which the seeded read leaves out, stopped the check)."""
    from toolchain.judged_rows import the_run_s_test_rows
    from toolchain.provenance import rows_sha256

    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.array([0, 1] * 5)
    whole = {"x": x, "y": y, "split": "all", "name": "t"}
    seeded = {"x": x[:2], "y": y[:2], "split": "test", "name": "t", "of_rows": 10}
    record = {"rows": 10, "sha256": rows_sha256(x, y)}
    judged, said = the_run_s_test_rows(seeded, [record, dict(record)], lambda: whole, "the files' compress run tested them on")
    assert judged is whole and said == ("every row of t is judged, not a seeded test split of it: they are the rows the files' "
                                        "compress run tested them on (10 rows, the sha256 recorded)")

    def refused():
        raise UserError("'t/x.png' is named like an image but is a link to nothing")

    other_rows = {**whole, "y": y[::-1].copy()}
    for records, every_row in (([record, None], lambda: whole), ([record, {"rows": 10, "sha256": "0" * 64}], lambda: whole),
                               ([record, {"rows": 9, "sha256": record["sha256"]}], lambda: whole), ([], lambda: whole),
                               ([["rows", 10]], lambda: whole), ([record], refused), ([record], lambda: other_rows)):
        assert the_run_s_test_rows(seeded, records, every_row, "x") == (seeded, None), records
    # rows cwtool did not draw a share of (every row already, or --split test given): never read again
    read = []
    assert the_run_s_test_rows({**seeded, "of_rows": None}, [record], lambda: read.append(1), "x")[0]["split"] == "test" and not read


def test_an_npz_s_own_test_split_is_not_called_a_seeded_share(tmp_path):
    """An .npz with x_train/x_test was judged on its own x_test, yet said to be judged on "the seeded test split ... as
    compress splits it", with --split all (which adds its training rows) as the way to judge every row (a reviewer)."""
    from toolchain.judged_rows import describe_rows, load_rows_for, share_note

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "split.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    rows = load_rows_for(str(tmp_path / "split.npz"), split="auto")
    assert rows["split"] == "test" and np.array_equal(rows["y"], y[200:])
    assert share_note(rows) is None and "--split all" not in describe_rows(rows)


def test_a_csv_whose_labels_come_first_is_told_of_label_column(tmp_path):
    """label,f1,f2 read f2 as the labels: "has a non-integer label 0.25: labels must be integers >= 0" named no way out,
    where other CSV refusals name --label-column (a data reviewer's finding)."""
    rows = [[i % 2, i * 0.25, i * 0.5] for i in range(12)]
    msg = expect_error("non-integer label", _write_csv(tmp_path / "first.csv", ["label", "f1", "f2"], rows))
    assert "--label-column" in msg, msg


def test_counts_of_one_are_said_in_the_singular(tmp_path):
    """"only 1 class names", "the data names 1 classes", "--max-fn-increase, --max-accuracy-drop compares" (a reviewer)."""
    from toolchain.evaluate import check_output_width
    from toolchain.verify import VerifyRequest

    np.savez(tmp_path / "cn1.npz", x=np.zeros((6, 3), np.float32), y=np.array([0, 1] * 3), class_names=np.array(["a"]))
    msg = expect_error("has label 1 but only 1 class name: give one name per class", tmp_path / "cn1.npz")
    assert "class names:" not in msg
    with pytest.raises(UserError, match=r"has 10 outputs but the data names 1 class: give a model"):
        check_output_width(10, np.zeros(3, np.int64), ["cat"], "the model")
    for given, verb in ((["--max-fn-increase"], "compares"), (["--max-fn-increase", "--max-accuracy-drop"], "compare")):
        request = VerifyRequest(artifacts=[tmp_path / "m.onnx"], data="digits", protect=["3"], baseline=None,
                                max_fn_increase=1, max_accuracy_drop=0.1 if len(given) == 2 else None)
        with pytest.raises(UserError, match=f"{', '.join(given)} {verb} with a baseline"):
            request.validate()


def test_a_split_names_how_many_classes_are_too_small_not_one_at_a_time(tmp_path):
    """300 classes, 100 of them of 2 samples: the split named 'cls_100', and after that was mended 'cls_101' (a reviewer
    at scale: 100 edits and reruns to find them all)."""
    from toolchain.data.splits import SmallClassError, split_pool

    y = np.repeat(np.arange(300), [2 if 100 <= c < 200 else 10 for c in range(300)])
    x = np.zeros((len(y), 2), np.float32)
    names = [f"cls_{c}" for c in range(300)]
    with pytest.raises(SmallClassError) as caught:
        split_pool(x, y, 0, (0.15, 0.15), names, "'f'", False)
    message = str(caught.value)
    assert "class 'cls_100' (label 100) in 'f' has only 2 samples (and 99 other classes with fewer than 3, such as 'cls_101', " \
           "'cls_102', 'cls_103', 'cls_104', 'cls_105')" in message and "add samples of those classes" in message, message
    y = np.repeat(np.arange(4), [10, 2, 2, 10])
    with pytest.raises(SmallClassError, match=r"class 'a1' \(label 1\) in 'f' has only 2 samples \(and 'a2', with fewer than 3 too\)"):
        split_pool(np.zeros((len(y), 2), np.float32), y, 0, (0.15, 0.15), ["a0", "a1", "a2", "a3"], "'f'", False)


def test_a_thousand_names_are_listed_short_and_a_duplicate_is_named(tmp_path):
    """-p of a name no class has listed the first 12 of 1,000 names as if they were all; an .npz's duplicate class names
    were refused without saying which (a reviewer at scale)."""
    from toolchain.evaluate import resolve_protected

    names = [f"species_{i:04d}" for i in range(1000)]
    with pytest.raises(UserError, match=r"species_0011 and 988 more\)"):
        resolve_protected(["lynx"], names, 1000)
    x, y = np.zeros((40, 2), np.float32), np.arange(40) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y, class_names=np.array(["a", "b", "a", "c"]))
    with pytest.raises(UserError, match=r"has duplicates \('a' at indices 0, 2\)"):
        load_data(str(tmp_path / "d.npz"), seed=0)


def test_signals_for_a_conv1d_model_are_told_of_input_shape():
    """(N, C, L) signals given to a Conv1d model: the refusal named --image-size and --resize alone (a reviewer of 1-D
    signal models); README said nothing of 1-D data."""
    import torch

    from toolchain.evaluate import probe_outputs

    model = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(UserError, match=r"signals \(N, C, L\) for a 1-D model take --input-shape 2,128"):
        probe_outputs(model, (1, 2, 128))
    assert probe_outputs(model, (2, 128)) == 3
