"""Turn a ``--data`` spec into a `Dataset`.

Specs: ``digits``, ``breast-cancer`` (bundled with scikit-learn), ``fashion-mnist`` (the Debian
package ``dataset-fashion-mnist``), a ``.npz`` file, a ``.csv`` file, a folder of MNIST-format
idx files, or an ImageFolder-layout folder (one sub-folder per class).

Only numpy is imported at module level: scikit-learn and Pillow are imported inside the loaders
that need them, so `cwtool verify` on a device can read an .npz with numpy alone. Every problem
with the user's data is raised as a one-line `UserError`.
"""

from __future__ import annotations

import csv
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.idx import IdxError, read_idx
from toolchain.data.splits import stratified_split
from toolchain.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_KNOWN = (
    "give digits, breast-cancer, fashion-mnist, a .npz file, a .csv file, "
    "a folder of idx files or an ImageFolder folder"
)


def load_data(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    label_column: str | None = None,
    image_size: tuple[int, int] | None = None,
) -> Dataset:
    """Load the dataset named by ``spec`` with train/val/test splits.

    One pool of samples (digits, breast-cancer, .npz with x/y, CSV, ImageFolder) is split
    stratified with ``seed`` into ``1 - val - test`` / ``val_fraction`` / ``test_fraction``.
    Sources with their own test split (.npz with x_train..., idx folders) keep it; when they have
    no validation split, ``val_fraction`` of their train split is carved off (seeded, stratified).
    ``label_column`` (a column name) applies to CSV only; ``image_size`` (height, width) to
    ImageFolder only (default: the first image's size).
    """
    spec = str(spec).strip()
    _check_fractions(val_fraction, test_fraction)
    fr = (val_fraction, test_fraction)
    is_csv = spec.lower().endswith(".csv")
    if label_column is not None and not is_csv:
        raise UserError(
            f"--label-column only applies to a .csv file, not to --data '{spec}': drop it"
        )
    if spec == "digits":
        return _load_digits(seed, fr)
    if spec == "breast-cancer":
        return _load_breast_cancer(seed, fr)
    if spec == "fashion-mnist":
        if not _find_idx_files(FASHION_MNIST_DIR):
            raise UserError(
                f"Fashion-MNIST is not installed (no idx files in {FASHION_MNIST_DIR}): "
                "run `apt-get install dataset-fashion-mnist` or pass a folder of idx files"
            )
        return _load_idx_folder(FASHION_MNIST_DIR, seed, val_fraction, name="fashion-mnist")

    path = Path(spec).expanduser()
    lower = path.name.lower()
    if lower.endswith(".npz"):
        return _load_npz(_existing_file(path, spec), seed, fr)
    if is_csv:
        return _load_csv(_existing_file(path, spec), seed, fr, label_column)
    if path.is_dir():
        if _find_idx_files(path):
            return _load_idx_folder(path, seed, val_fraction, name=path.resolve().name)
        return _load_image_folder(path, seed, fr, image_size)
    if path.exists():
        raise UserError(f"unknown --data '{spec}' (not a .npz or .csv file): {_KNOWN}")
    raise UserError(f"unknown --data '{spec}' (no such file or folder): {_KNOWN}")


# --------------------------------------------------------------------------- helpers


def _check_fractions(val: float, test: float) -> None:
    for name, v in (("validation", val), ("test", test)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
            raise UserError(f"{name} fraction {v!r} is out of range: give a number between 0 and 1")
    if val + test >= 1:
        raise UserError(
            f"validation fraction {val} + test fraction {test} leave nothing to train on: "
            "make their sum less than 1"
        )


def _existing_file(path: Path, spec: str) -> Path:
    if not path.exists():
        raise UserError(f"--data file '{spec}' does not exist: check the path")
    if not path.is_file():
        raise UserError(f"--data '{spec}' is not a file: give a .npz or .csv file")
    return path


def _split_pool(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    fractions: tuple[float, float],
    names: list[str] | None,
    where: str,
) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test) from one pool."""
    val, test = fractions
    _check_class_sizes(y, 3, "train/validation/test", names, where)
    tr, va, te = stratified_split(y, [1.0 - val - test, val, test], seed)
    return x[tr], y[tr], x[va], y[va], x[te], y[te]


def _carve_val(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    val_fraction: float,
    names: list[str] | None,
    where: str,
) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val): val_fraction of a given train split, stratified."""
    _check_class_sizes(y, 2, "train/validation", names, where)
    tr, va = stratified_split(y, [1.0 - val_fraction, val_fraction], seed)
    return x[tr], y[tr], x[va], y[va]


def _check_class_sizes(
    y: np.ndarray, need: int, parts: str, names: list[str] | None, where: str
) -> None:
    classes, counts = np.unique(y, return_counts=True)
    small = counts < need
    if small.any():
        c, n = int(classes[small][0]), int(counts[small][0])
        label = f"'{names[c]}' (label {c})" if names and c < len(names) else f"{c}"
        raise UserError(
            f"class {label} in {where} has only {n} sample{'s' if n != 1 else ''}; splitting into {parts} "
            f"needs at least {need} per class: add samples of that class or give the splits yourself"
        )


def _labels(y: np.ndarray, what: str, where: str) -> np.ndarray:
    """Validate labels: 1-D, integers >= 0 (whole-number floats are accepted)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(
            f"{what} in {where} has shape {y.shape}: store labels as one integer per sample, shape (N,)"
        )
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise UserError(f"{what} in {where} contains NaN or inf: labels must be integers >= 0")
        if not np.all(y == np.round(y)):
            bad = y[y != np.round(y)][0].item()
            raise UserError(
                f"{what} in {where} has a non-integer label {bad!r}: labels must be integers >= 0"
            )
    elif y.dtype.kind not in "iu":
        raise UserError(
            f"{what} in {where} has dtype {y.dtype}: labels must be integers >= 0 (class indices)"
        )
    if len(y) and y.min() < 0:
        raise UserError(
            f"{what} in {where} has a negative label {y.min().item()!r}: labels must be integers >= 0"
        )
    return y.astype(np.int64)


def _check_finite(x: np.ndarray, what: str, where: str) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        n = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise UserError(
            f"{what} in {where} contains {n} NaN or inf value{'s' if n != 1 else ''}: "
            "clean or impute them before loading"
        )


def _finish(
    name: str,
    splits: tuple[np.ndarray, ...],
    preprocessing: Preprocessing,
    *,
    where: str,
    class_names: list[str] | None,
    given_splits: bool,
    seed: int,
) -> Dataset:
    x_train, y_train, x_val, y_val, x_test, y_test = splits
    for s, x, y in (("train", x_train, y_train), ("val", x_val, y_val), ("test", x_test, y_test)):
        if len(y) == 0:
            raise UserError(f"the {s} split of {where} is empty: give more samples or other fractions")
    top = int(max(y_train.max(), y_val.max(), y_test.max()))
    if class_names is not None:
        if top >= len(class_names):
            raise UserError(
                f"{where} has label {top} but only {len(class_names)} class names: "
                "give one name per class index 0..max label"
            )
        num_classes = len(class_names)
    else:
        num_classes = top + 1
        class_names = [str(i) for i in range(num_classes)]
    present = np.unique(np.concatenate([y_train, y_val, y_test]))
    if len(present) < 2:
        raise UserError(
            f"{where} has only one class (label {int(present[0])}): a classifier needs at least two"
        )
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        class_names=list(class_names),
        preprocessing=preprocessing,
        given_splits=given_splits,
        seed=seed,
    )


# --------------------------------------------------------------------------- builtin sets


def _load_digits(seed: int, fr: tuple[float, float]) -> Dataset:
    from sklearn.datasets import load_digits  # lazy: not on devices

    d = load_digits()
    x = d.data.reshape(-1, 1, 8, 8).astype(np.float32) * np.float32(1 / 16)
    y = d.target.astype(np.int64)
    names = [str(i) for i in range(10)]
    pre = Preprocessing(scale=1 / 16, layout="NCHW", note="sklearn load_digits, pixels 0..16")
    return _finish(
        "digits", _split_pool(x, y, seed, fr, names, "digits"), pre,
        where="digits", class_names=names, given_splits=False, seed=seed,
    )


def _load_breast_cancer(seed: int, fr: tuple[float, float]) -> Dataset:
    from sklearn.datasets import load_breast_cancer  # lazy: not on devices

    d = load_breast_cancer()
    x_raw = np.asarray(d.data, dtype=np.float64)
    y = d.target.astype(np.int64)
    names = [str(n) for n in d.target_names]  # ["malignant", "benign"]: target 0 = malignant
    xtr, ytr, xva, yva, xte, yte = _split_pool(x_raw, y, seed, fr, names, "breast-cancer")
    mean = xtr.mean(axis=0)
    std = xtr.std(axis=0)
    std[std == 0] = 1.0

    def norm(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    pre = Preprocessing(
        scale=1.0,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        layout="NC",
        note="sklearn load_breast_cancer, standardized with the train split's mean/std",
    )
    return _finish(
        "breast-cancer", (norm(xtr), ytr, norm(xva), yva, norm(xte), yte), pre,
        where="breast-cancer", class_names=names, given_splits=False, seed=seed,
    )


# --------------------------------------------------------------------------- .npz


def _npz_features(
    arrays: dict[str, np.ndarray], keys: list[str], where: str
) -> tuple[list[np.ndarray], Preprocessing]:
    """Convert the x arrays of an npz to float32 model inputs (all with the same rules)."""
    xs = [np.asarray(arrays[k]) for k in keys]
    kinds = {x.dtype.kind for x in xs}
    for k, x in zip(keys, xs):
        if x.size == 0:
            raise UserError(f"{k} in {where} is empty (shape {x.shape}): store at least one sample per class")
        if x.dtype.kind not in "fiub":
            raise UserError(f"{k} in {where} has dtype {x.dtype}: store numbers (float or integer)")
        if x.ndim < 2 or x.ndim > 4:
            raise UserError(
                f"{k} in {where} has shape {x.shape}: store (N, features), (N, H, W) or (N, C, H, W)"
            )
    if len({x.dtype.kind == "f" for x in xs}) > 1 or len({x.dtype for x in xs if x.dtype.kind in "iub"}) > 1:
        detail = ", ".join(f"{k} is {x.dtype}" for k, x in zip(keys, xs))
        raise UserError(f"{where} mixes dtypes ({detail}): store every split with the same dtype")
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        detail = ", ".join(f"{k} {x.shape[1:]}" for k, x in zip(keys, xs))
        raise UserError(
            f"{where} has different sample shapes between splits ({detail}): store every split "
            "with the same per-sample shape"
        )
    sample = xs[0].shape[1:]
    notes = []
    if len(sample) == 3 and sample[-1] in (1, 3, 4) and min(sample[0], sample[1]) > 4:
        # (N, H, W, C) with a colour axis last: PyTorch models take (N, C, H, W)
        xs = [np.moveaxis(x, -1, 1) for x in xs]
        notes.append("transposed from NHWC to NCHW")
    elif len(sample) == 2:
        xs = [x[:, None] for x in xs]
        notes.append("channel axis added: (N,H,W) -> (N,1,H,W)")
    layout = "NC" if len(sample) == 1 else "NCHW"
    if kinds == {"b"}:
        out = [x.astype(np.float32) for x in xs]
        return out, Preprocessing(scale=1.0, layout=layout, note="; ".join(["boolean x as 0/1", *notes]))
    if kinds & set("iu"):
        out = []
        for x in xs:
            a = x.astype(np.float32)
            a *= np.float32(1 / 255)
            out.append(a)
        note = "; ".join([f"integer x ({xs[0].dtype}) scaled by 1/255", *notes])
        pre = Preprocessing(scale=1 / 255, layout=layout, note=note)
        return out, pre
    out = []
    for k, x in zip(keys, xs):
        a = np.ascontiguousarray(x, dtype=np.float32)  # float32 stays bit-for-bit as stored
        _check_finite(a, k, where)
        out.append(a)
    if xs[0].dtype == np.float64:
        notes.append("float64 converted to float32")
    return out, Preprocessing(scale=1.0, layout=layout, note="; ".join(["as stored", *notes]))


def _load_npz(path: Path, seed: int, fr: tuple[float, float]) -> Dataset:
    where = f"'{path}'"
    fix = "save it with numpy.savez(file, x=..., y=...)"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise UserError(f"cannot read {where} ({exc.strerror or exc}): check the file and its permissions") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise UserError(f"{where} is not an .npz archive (corrupt or another format): {fix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            arrays = {k: z[k] for k in z.files if k in {"x", "y", "class_names", *SPLIT_KEYS}}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise UserError(
                f"{where} stores Python objects (pickled), which cwtool does not load: "
                "save numeric arrays and class_names as a string array (np.array(names, dtype=str))"
            ) from None
        raise UserError(f"cannot read {where} as .npz ({exc}): {fix}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise UserError(f"cannot read {where} as .npz ({exc or type(exc).__name__}): {fix}") from None

    names = None
    if "class_names" in arrays:
        cn = arrays["class_names"]
        if cn.ndim != 1 or cn.dtype.kind not in "USiu" or len(cn) == 0:
            raise UserError(
                f"class_names in {where} must be a 1-D string array: save np.array(names, dtype=str)"
            )
        names = [str(n) for n in cn.tolist()]
        if len(set(names)) != len(names):
            raise UserError(f"class_names in {where} has duplicates: give each class a distinct name")

    has_pool = "x" in keys or "y" in keys
    has_splits = any(k in keys for k in SPLIT_KEYS)
    if has_pool and has_splits:
        raise UserError(
            f"{where} has both x/y and x_train/... keys: keep either one pool (x, y) or the splits"
        )
    if has_pool:
        for k in ("x", "y"):
            if k not in keys:
                raise UserError(f"{where} has no '{k}' array: store both x and y (np.savez(f, x=..., y=...))")
        (x,), pre = _npz_features(arrays, ["x"], where)
        y = _labels(arrays["y"], "y", where)
        _check_pair(x, y, "x", "y", where)
        splits = _split_pool(x, y, seed, fr, names, where)
        return _finish(path.name, splits, pre, where=where, class_names=names, given_splits=False, seed=seed)
    if not has_splits:
        found = ", ".join(sorted(keys)) or "none"
        raise UserError(
            f"{where} has none of the expected arrays (found: {found}): store x and y, or "
            "x_train, y_train, x_test, y_test (and optionally x_val, y_val)"
        )
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in keys]
    if ("x_val" in keys) != ("y_val" in keys):
        missing.append("y_val" if "x_val" in keys else "x_val")
    if missing:
        raise UserError(
            f"{where} is missing {', '.join(missing)}: store x_train, y_train, x_test, y_test "
            "(and x_val with y_val, or neither)"
        )
    xkeys = [k for k in ("x_train", "x_val", "x_test") if k in keys]
    xs, pre = _npz_features(arrays, xkeys, where)
    xd = dict(zip(xkeys, xs))
    yd = {}
    for xk in xkeys:
        yk = "y" + xk[1:]
        yd[yk] = _labels(arrays[yk], yk, where)
        _check_pair(xd[xk], yd[yk], xk, yk, where)
    if "x_val" in xd:
        splits = (xd["x_train"], yd["y_train"], xd["x_val"], yd["y_val"], xd["x_test"], yd["y_test"])
    else:
        xtr, ytr, xva, yva = _carve_val(xd["x_train"], yd["y_train"], seed, fr[0], names, where)
        splits = (xtr, ytr, xva, yva, xd["x_test"], yd["y_test"])
        pre.note += "; validation carved from x_train"
    return _finish(path.name, splits, pre, where=where, class_names=names, given_splits=True, seed=seed)


def _check_pair(x: np.ndarray, y: np.ndarray, xk: str, yk: str, where: str) -> None:
    if len(x) != len(y):
        raise UserError(
            f"{xk} has {len(x)} samples but {yk} has {len(y)} labels in {where}: give one label per sample"
        )
    if len(x) == 0:
        raise UserError(f"{xk} in {where} is empty: store at least one sample per class")


# --------------------------------------------------------------------------- CSV


def _load_csv(path: Path, seed: int, fr: tuple[float, float], label_column: str | None) -> Dataset:
    where = f"'{path}'"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {where} as CSV ({exc}): save it as UTF-8 text with a header row") from None
    if not rows:
        raise UserError(f"{where} is empty: give a header row and one row per sample")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise UserError(f"{where} has a header but no data rows: add one row per sample")
    if len(header) < 2:
        raise UserError(f"{where} has {len(header)} column: give at least one feature column and a label column")
    if label_column is None:
        li = len(header) - 1
    elif label_column in header:
        li = header.index(label_column)
    else:
        raise UserError(
            f"--label-column '{label_column}' is not a column of {where}: pick one of {', '.join(header)}"
        )
    for n, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise UserError(
                f"row {n} of {where} has {len(r)} fields but the header has {len(header)}: fix that row"
            )
    feat_idx = [i for i in range(len(header)) if i != li]
    raw_labels = [r[li].strip() for r in body]
    try:
        x = np.array([[r[i] for i in feat_idx] for r in body], dtype=np.float32)
    except ValueError:
        for n, r in enumerate(body, start=2):
            for i in feat_idx:
                try:
                    float(r[i])
                except ValueError:
                    raise UserError(
                        f"row {n} of {where}, column '{header[i]}' holds {r[i]!r}, not a number: "
                        "features must be numeric (encode or drop that column)"
                    ) from None
        raise  # pragma: no cover - every value parsed one by one
    _check_finite(x, "the features", where)

    names: list[str] | None = None
    try:
        num = np.array([float(v) for v in raw_labels], dtype=np.float64)
    except ValueError:
        num = None
    if num is None:
        if any(v == "" for v in raw_labels):
            n = raw_labels.index("") + 2
            raise UserError(f"row {n} of {where} has an empty label in column '{header[li]}': give every row a label")
        names = sorted(set(raw_labels))
        lookup = {n: i for i, n in enumerate(names)}
        y = np.array([lookup[v] for v in raw_labels], dtype=np.int64)
    else:
        y = _labels(num, f"label column '{header[li]}'", where)
    splits = _split_pool(x, y, seed, fr, names, where)
    pre = Preprocessing(
        scale=1.0, layout="NC",
        note=f"CSV features as stored ({len(feat_idx)} columns), label column '{header[li]}'",
    )
    return _finish(path.name, splits, pre, where=where, class_names=names, given_splits=False, seed=seed)


# --------------------------------------------------------------------------- idx folders


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four MNIST idx files in ``folder`` (plain or .gz; '-' or '.' before idx accepted)."""
    if not folder.is_dir():
        return None
    found: dict[str, Path] = {}
    for key, base in _IDX_FILES.items():
        alt = base.replace("-idx", ".idx")
        for cand in (base, base + ".gz", alt, alt + ".gz"):
            p = folder / cand
            if p.is_file():
                found[key] = p
                break
    if not found:
        return None
    if len(found) < len(_IDX_FILES):
        missing = [_IDX_FILES[k] for k in _IDX_FILES if k not in found]
        raise UserError(
            f"idx folder '{folder}' lacks {', '.join(missing)} (plain or .gz): "
            "put all four MNIST-format files there"
        )
    return found


def _load_idx_folder(folder: Path, seed: int, val_fraction: float, *, name: str) -> Dataset:
    files = _find_idx_files(folder)
    assert files is not None
    where = f"'{folder}'"
    arrays = {}
    for key, p in files.items():
        try:
            arrays[key] = read_idx(p)
        except IdxError as exc:
            raise UserError(f"'{p}' is not a valid idx file ({exc}): replace it with an intact copy") from None
        except OSError as exc:
            raise UserError(f"cannot read '{p}' ({exc.strerror or exc}): check the file and its permissions") from None
    for key in ("x_train", "x_test"):
        a = arrays[key]
        if a.ndim != 3 or a.dtype != np.uint8:
            raise UserError(
                f"'{files[key].name}' holds {a.dtype} data of shape {a.shape}: "
                "idx images must be unsigned bytes of shape (N, H, W)"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise UserError(
            f"train images are {arrays['x_train'].shape[1:]} but t10k images are "
            f"{arrays['x_test'].shape[1:]} in {where}: use images of one size"
        )
    xs, ys = {}, {}
    for split in ("train", "test"):
        raw = arrays[f"x_{split}"]
        y = _labels(arrays[f"y_{split}"], files[f"y_{split}"].name, where)
        _check_pair(raw, y, files[f"x_{split}"].name, files[f"y_{split}"].name, where)
        x = raw.reshape(raw.shape[0], 1, *raw.shape[1:]).astype(np.float32)
        x *= np.float32(1 / 255)
        xs[split], ys[split] = x, y
    names = FASHION_MNIST_CLASSES if "fashion" in name.lower() else None
    if names is None:
        top = int(max(ys["train"].max(), ys["test"].max()))
        names = [str(i) for i in range(top + 1)]
    elif max(ys["train"].max(), ys["test"].max()) >= len(names):
        names = None  # not really Fashion-MNIST labels: fall back to numbers
    xtr, ytr, xva, yva = _carve_val(xs["train"], ys["train"], seed, val_fraction, names, where)
    pre = Preprocessing(
        scale=1 / 255, layout="NCHW",
        note="idx uint8 images scaled by 1/255; validation carved from train",
    )
    return _finish(
        name, (xtr, ytr, xva, yva, xs["test"], ys["test"]), pre,
        where=where, class_names=names, given_splits=True, seed=seed,
    )


# --------------------------------------------------------------------------- ImageFolder


def _load_image_folder(
    folder: Path, seed: int, fr: tuple[float, float], image_size: tuple[int, int] | None
) -> Dataset:
    where = f"'{folder}'"
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(
            f"unknown --data '{folder}' (a folder with neither idx files nor class sub-folders): {_KNOWN}"
        )
    files: list[Path] = []
    labels: list[int] = []
    for ci, d in enumerate(class_dirs):
        imgs = sorted(
            p for p in d.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not imgs:
            raise UserError(
                f"class folder '{d.name}' in {where} has no PNG/JPEG images: add images or remove the folder"
            )
        files += imgs
        labels += [ci] * len(imgs)
    if image_size is not None:
        if len(image_size) != 2 or any(int(v) != v or v < 1 for v in image_size):
            raise UserError(f"image size {image_size!r} is invalid: give two positive integers (height, width)")
        size_hw = (int(image_size[0]), int(image_size[1]))
    else:
        size_hw = None

    from PIL import Image, UnidentifiedImageError  # lazy: not on devices

    modes = []
    for p in files:
        try:
            with Image.open(p) as im:
                modes.append(im.mode)
                if size_hw is None:
                    size_hw = (im.height, im.width)
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read image '{p}' ({type(exc).__name__}): replace or remove it") from None
    gray = all(m in ("L", "1") for m in modes)
    mode = "L" if gray else "RGB"
    h, w = size_hw
    channels = 1 if gray else 3
    x = np.empty((len(files), channels, h, w), dtype=np.float32)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read image '{p}' ({type(exc).__name__}): replace or remove it") from None
        x[i] = a[None] if gray else a.transpose(2, 0, 1)
    x *= np.float32(1 / 255)
    y = np.asarray(labels, dtype=np.int64)
    names = [d.name for d in class_dirs]
    pre = Preprocessing(
        scale=1 / 255, layout="NCHW",
        note=f"ImageFolder, {'grayscale' if gray else 'RGB'}, resized to {h}x{w} (bilinear)",
    )
    return _finish(
        folder.resolve().name, _split_pool(x, y, seed, fr, names, where), pre,
        where=where, class_names=names, given_splits=False, seed=seed,
    )
