"""Turn a ``--data`` spec into a `Dataset`.

Specs: ``digits``, ``breast-cancer`` (bundled with scikit-learn), ``fashion-mnist`` (the Debian
package ``dataset-fashion-mnist``), a ``.npz`` file, a ``.csv`` file, a folder of MNIST-format
idx files, or an ImageFolder-layout folder (one sub-folder per class).

Only numpy is imported at module level: scikit-learn and Pillow are imported inside the loaders
that need them, so `cwtool verify` on a device can read an .npz with numpy alone. Every problem
with the user's data is raised as a one-line `UserError`.

Nothing in a data file is trusted (see `toolchain.limits`):
  * labels must be class indices below MAX_CLASSES (100,000); class-name lists at most that long;
  * declared sizes (.npy headers, zip members, idx headers, image dimensions) are checked against
    the memory available before anything is allocated, and every large array a loader builds
    (float32 features, split copies, the ImageFolder tensor) is checked the same way;
  * CSV lines longer than MAX_CSV_LINE characters and string labels longer than
    MAX_LABEL_CHARS are refused.

Preprocessing rules (recorded in `Preprocessing.note`, which the CLI prints):
  * .npz: uint8 images ((N,H,W), (N,C,H,W), (N,H,W,C)) are scaled by 1/255; every other integer
    array is kept as stored and cast to float32 (no scaling: tabular ages, counts, 0-16 digits,
    16-bit images); floats are kept (float64 -> float32); booleans become 0/1.
  * idx folders and ImageFolder hold 8-bit images: scaled by 1/255.
  * ImageFolder: every image must have the same size unless ``image_size`` is given, which
    resizes all of them (bilinear); 16-bit and float images are refused.
  * String labels (CSV label column, ImageFolder folder names) are numbered alphabetically
    unless ``class_names`` gives the order; the mapping is in the note and `Dataset.label_mapping`.
"""

from __future__ import annotations

import csv
import math
import warnings
from array import array
from pathlib import Path

import numpy as np

from toolchain import limits
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.idx import IdxError, read_idx
from toolchain.limits import MAX_CLASSES, MAX_CSV_LINE, MAX_LABEL_CHARS, check_fits, format_bytes
from toolchain.data.npz import read_npz
from toolchain.data.splits import stratified_split
from toolchain.errors import UserError
from toolchain.io import user_path

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
    class_names: list[str] | None = None,
) -> Dataset:
    """Load the dataset named by ``spec`` with train/val/test splits.

    One pool of samples (digits, breast-cancer, .npz with x/y, CSV, ImageFolder) is split
    stratified with ``seed`` into ``1 - val - test`` / ``val_fraction`` / ``test_fraction``.
    Sources with their own test split (.npz with x_train..., idx folders) keep it; when they have
    no validation split, ``val_fraction`` of their train split is carved off (seeded, stratified).
    ``label_column`` (a column name) applies to CSV only. ``image_size`` (height, width) applies
    to ImageFolder only: every image is resized to it (bilinear); without it all images must have
    the same size.

    ``class_names`` (one distinct name per class, in label order):
      * string labels (CSV label column, ImageFolder folder names) get their index in this list
        (a label missing from it is an error); without it they are numbered alphabetically;
      * numeric labels (CSV, .npz, idx, digits) are class indices: the list names them and must
        cover the largest label;
      * a source that stores its own names (.npz class_names, breast-cancer) must agree with it.
    """
    spec = str(spec).strip()
    _check_fractions(val_fraction, test_fraction)
    fr = (val_fraction, test_fraction)
    given = _given_names(class_names)
    is_csv = spec.lower().endswith(".csv")
    if label_column is not None and not is_csv:
        raise UserError(
            f"--label-column only applies to a .csv file, not to --data '{spec}': drop it"
        )
    if spec == "digits":
        return _load_digits(seed, fr, given)
    if spec == "breast-cancer":
        return _load_breast_cancer(seed, fr, given)
    if spec == "fashion-mnist":
        if not _find_idx_files(FASHION_MNIST_DIR):
            raise UserError(
                f"Fashion-MNIST is not installed (no idx files in {FASHION_MNIST_DIR}): "
                "run `apt-get install dataset-fashion-mnist` or pass a folder of idx files"
            )
        return _load_idx_folder(FASHION_MNIST_DIR, seed, val_fraction, name="fashion-mnist", given=given)

    path = user_path(spec)
    lower = path.name.lower()
    if lower.endswith(".npz"):
        return _load_npz(_existing_file(path, spec), seed, fr, given)
    if is_csv:
        return _load_csv(_existing_file(path, spec), seed, fr, label_column, given)
    if path.is_dir():
        if _find_idx_files(path):
            return _load_idx_folder(path, seed, val_fraction, name=path.resolve().name, given=given)
        return _load_image_folder(path, seed, fr, image_size, given)
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
    check_fits(x.nbytes, f"splitting {where} ({len(x)} samples, {format_bytes(x.nbytes)} as float32)")
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
    check_fits(x.nbytes, f"splitting {where} ({len(x)} samples, {format_bytes(x.nbytes)} as float32)")
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
    if len(y) and y.max() >= MAX_CLASSES:  # checked before the int64 cast (1e300 would wrap)
        top = y.max().item()
        raise UserError(
            f"{what} in {where} has label {int(top) if top < 1e18 else top!r}, beyond cwtool's limit of "
            f"{MAX_CLASSES:,} classes: labels must be class indices 0..{MAX_CLASSES - 1} "
            "(is this the label column?)"
        )
    return y.astype(np.int64)


def _given_names(class_names) -> list[str] | None:
    """Validate a user-given class-name list (None: not given). A string is split at commas."""
    if class_names is None:
        return None
    if isinstance(class_names, str):
        class_names = class_names.split(",")
    try:
        names = [str(n).strip() for n in class_names]
    except TypeError:
        raise UserError(f"class names {class_names!r} are not a list: give one name per class, in label order") from None
    if not names:
        raise UserError("--class-names is empty: give one name per class, in label order")
    if len(names) > MAX_CLASSES:
        raise UserError(f"--class-names gives {len(names):,} names, beyond cwtool's limit of {MAX_CLASSES:,} classes")
    for i, n in enumerate(names):
        if not n:
            raise UserError(f"--class-names has an empty name at position {i + 1}: give every class a name")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UserError(f"--class-names names {n!r} twice: give each class a distinct name")
        seen.add(n)
    return names


def _short(names: list[str], k: int = 10) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} names)" if len(names) > k else "")


def _agree(stored: list[str] | None, given: list[str] | None, where: str) -> list[str] | None:
    """The class names to use when a source stores its own and the user may give some."""
    if given is None:
        return stored
    if stored is None:
        return given
    if stored != given:
        raise UserError(
            f"--class-names ({_short(given)}) does not match the class names stored in {where} "
            f"({_short(stored)}): the source fixes its labels' order; drop --class-names or give "
            "the same names in the same order"
        )
    return stored


def _mapping_note(names: list[str], how: str) -> str:
    """'labels: benign=0, malignant=1 (how)' -- at most 20 pairs shown."""
    pairs = [f"{n}={i}" for i, n in enumerate(names)]
    shown = ", ".join(pairs[:20]) + (f", ... ({len(pairs)} classes)" if len(pairs) > 20 else "")
    return f"labels: {shown} ({how})"


def _string_labels(
    raw: list[str], given: list[str] | None, where: str, kind: str
) -> tuple[list[str], dict[str, int], str]:
    """(class names, {label: index}, note) for distinct string labels ``raw``.

    Without ``given`` the labels are numbered alphabetically; with it, each label gets its index
    in ``given`` (a label not in it is an error; names in it that never occur are classes
    without samples).
    """
    if given is None:
        names = sorted(set(raw))
        note = _mapping_note(names, f"{kind}alphabetical; set --class-names to change")
    else:
        missing = sorted(set(raw) - set(given))
        if missing:
            raise UserError(
                f"label {missing[0]!r} in {where} is not one of --class-names ({_short(given)}): "
                f"add it to --class-names in its place, or fix the data"
                + (f" ({len(missing)} labels are missing)" if len(missing) > 1 else "")
            )
        names = list(given)
        note = _mapping_note(names, f"{kind}order from --class-names")
    return names, {n: i for i, n in enumerate(names)}, note


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
    label_mapping: dict[str, int] | None = None,
) -> Dataset:
    x_train, y_train, x_val, y_val, x_test, y_test = splits
    if class_names is not None and len(class_names) > MAX_CLASSES:
        raise UserError(
            f"{where} names {len(class_names):,} classes, beyond cwtool's limit of {MAX_CLASSES:,}: "
            "store one name per class"
        )
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
        label_mapping=dict(label_mapping) if label_mapping is not None else None,
    )


# --------------------------------------------------------------------------- builtin sets


def _sklearn_datasets(spec: str):
    try:
        from sklearn import datasets  # lazy: not on devices
    except ImportError:
        raise UserError(
            f"--data {spec} needs scikit-learn, which is not installed: run `pip install scikit-learn` "
            '(or `pip install "cwtool[compress]"`), or give a .npz, .csv, idx or ImageFolder dataset'
        ) from None
    return datasets


def _load_digits(seed: int, fr: tuple[float, float], given: list[str] | None = None) -> Dataset:
    d = _sklearn_datasets("digits").load_digits()
    x = d.data.reshape(-1, 1, 8, 8).astype(np.float32) * np.float32(1 / 16)
    y = d.target.astype(np.int64)
    names = given if given is not None else [str(i) for i in range(10)]
    note = "sklearn load_digits, pixels 0..16 scaled by 1/16"
    if given is not None:
        note += "; " + _mapping_note(names, "digit labels, named by --class-names")
    pre = Preprocessing(scale=1 / 16, layout="NCHW", note=note)
    return _finish(
        "digits", _split_pool(x, y, seed, fr, names, "digits"), pre,
        where="digits", class_names=names, given_splits=False, seed=seed,
    )


def _load_breast_cancer(seed: int, fr: tuple[float, float], given: list[str] | None = None) -> Dataset:
    d = _sklearn_datasets("breast-cancer").load_breast_cancer()
    x_raw = np.asarray(d.data, dtype=np.float64)
    y = d.target.astype(np.int64)
    names = [str(n) for n in d.target_names]  # ["malignant", "benign"]: target 0 = malignant
    names = _agree(names, given, "breast-cancer")
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
        note="sklearn load_breast_cancer, standardized with the train split's mean/std; "
        + _mapping_note(names, "fixed by scikit-learn"),
    )
    return _finish(
        "breast-cancer", (norm(xtr), ytr, norm(xva), yva, norm(xte), yte), pre,
        where="breast-cancer", class_names=names, given_splits=False, seed=seed,
    )


# --------------------------------------------------------------------------- .npz


def _npz_features(
    arrays: dict[str, np.ndarray], keys: list[str], where: str
) -> tuple[list[np.ndarray], Preprocessing]:
    """Convert the x arrays of an npz to float32 model inputs (all with the same rules).

    uint8 images (ndim >= 3: (N,H,W), (N,C,H,W), (N,H,W,C)) are scaled by 1/255; every other
    integer array (tabular values, counts, 16-bit images...) is kept as stored, cast to float32.
    """
    xs = [np.asarray(arrays[k]) for k in keys]
    kinds = {x.dtype.kind for x in xs}
    for k, x in zip(keys, xs):
        if x.dtype.kind not in "fiub":
            raise UserError(f"{k} in {where} has dtype {x.dtype}: store numbers (float or integer)")
        if x.ndim < 2 or x.ndim > 4:
            raise UserError(
                f"{k} in {where} has shape {x.shape}: store (N, features), (N, H, W) or (N, C, H, W)"
            )
        if x.size == 0:
            raise UserError(f"{k} in {where} is empty (shape {x.shape}): store at least one sample per class")
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
    dtype = xs[0].dtype
    image = len(sample) >= 2
    nhwc = len(sample) == 3 and sample[-1] in (1, 3, 4) and min(sample[0], sample[1]) > 4
    if nhwc or dtype != np.dtype(np.float32) or not all(x.flags.c_contiguous for x in xs):
        total = sum(x.size for x in xs)  # a float32 copy will be made
        check_fits(4 * total, f"{where} as float32 ({total:,} values)")
    notes = []
    if nhwc:
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
        if dtype == np.uint8 and image:
            out = []
            for x in xs:
                a = x.astype(np.float32)
                a *= np.float32(1 / 255)
                out.append(a)
            return out, Preprocessing(
                scale=1 / 255, layout=layout, note="; ".join(["uint8 images scaled by 1/255", *notes])
            )
        out = [np.ascontiguousarray(x, dtype=np.float32) for x in xs]
        what = "integer images" if image else "integer features"
        note = "; ".join([f"{what} ({dtype}) kept as stored, cast to float32", *notes])
        return out, Preprocessing(scale=1.0, layout=layout, note=note)
    out = []
    for k, x in zip(keys, xs):
        a = np.ascontiguousarray(x, dtype=np.float32)  # float32 stays bit-for-bit as stored
        _check_finite(a, k, where)
        out.append(a)
    if dtype != np.float32:
        notes.append(f"{dtype} converted to float32")
    return out, Preprocessing(scale=1.0, layout=layout, note="; ".join(["as stored", *notes]))


def _npz_class_names(arrays: dict[str, np.ndarray], where: str) -> list[str] | None:
    """The class_names array of an npz as a list of str, validated; None when absent."""
    if "class_names" not in arrays:
        return None
    cn = arrays["class_names"]
    if cn.ndim != 1 or cn.dtype.kind not in "USiu" or len(cn) == 0:
        raise UserError(
            f"class_names in {where} must be a 1-D string array: save np.array(names, dtype=str)"
        )
    if len(cn) > MAX_CLASSES:
        raise UserError(
            f"class_names in {where} has {len(cn):,} entries, beyond cwtool's limit of {MAX_CLASSES:,} classes"
        )
    if cn.dtype.kind == "S":
        names = [b.decode("utf-8", "replace") for b in cn.tolist()]
    else:
        names = [str(n) for n in cn.tolist()]
    if len(set(names)) != len(names):
        raise UserError(f"class_names in {where} has duplicates: give each class a distinct name")
    return names


def _load_npz(path: Path, seed: int, fr: tuple[float, float], given: list[str] | None = None) -> Dataset:
    where = f"'{path}'"
    keys, arrays = read_npz(path, {"x", "y", "class_names", *SPLIT_KEYS})
    names = _agree(_npz_class_names(arrays, where), given, where)

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
        y = _labels(arrays["y"], "y", where)
        (x,), pre = _npz_features(arrays, ["x"], where)
        _check_pair(x, y, "x", "y", where)
        del arrays
        splits = _split_pool(x, y, seed, fr, names, where)
        if given is not None and "class_names" not in keys:
            pre.note += "; " + _mapping_note(given, "numeric labels, named by --class-names")
        return _finish(path.name, splits, pre, where=where, class_names=names, given_splits=False, seed=seed)
    if not has_splits:
        found = ", ".join(sorted(keys)[:20]) or "none"
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
    yd = {}
    for xk in xkeys:
        yk = "y" + xk[1:]
        yd[yk] = _labels(arrays[yk], yk, where)
    xs, pre = _npz_features(arrays, xkeys, where)
    del arrays
    xd = dict(zip(xkeys, xs))
    for xk in xkeys:
        _check_pair(xd[xk], yd["y" + xk[1:]], xk, "y" + xk[1:], where)
    if "x_val" in xd:
        splits = (xd["x_train"], yd["y_train"], xd["x_val"], yd["y_val"], xd["x_test"], yd["y_test"])
    else:
        xtr, ytr, xva, yva = _carve_val(xd["x_train"], yd["y_train"], seed, fr[0], names, where)
        splits = (xtr, ytr, xva, yva, xd["x_test"], yd["y_test"])
        pre.note += "; validation carved from x_train"
    if given is not None and "class_names" not in keys:
        pre.note += "; " + _mapping_note(given, "numeric labels, named by --class-names")
    return _finish(path.name, splits, pre, where=where, class_names=names, given_splits=True, seed=seed)


def _check_pair(x: np.ndarray, y: np.ndarray, xk: str, yk: str, where: str) -> None:
    if len(x) != len(y):
        raise UserError(
            f"{xk} has {len(x)} samples but {yk} has {len(y)} labels in {where}: give one label per sample"
        )
    if len(x) == 0:
        raise UserError(f"{xk} in {where} is empty: store at least one sample per class")


# --------------------------------------------------------------------------- CSV


def _csv_lines(fh, where: str):
    """The lines of a text file, refusing any longer than MAX_CSV_LINE characters."""
    n = 0
    while True:
        line = fh.readline(MAX_CSV_LINE + 1)
        if not line:
            return
        n += 1
        if len(line) > MAX_CSV_LINE:
            raise UserError(
                f"line {n} of {where} is longer than {MAX_CSV_LINE:,} characters: a CSV of features holds "
                "one sample per line (is this a CSV file?)"
            )
        yield line


def _load_csv(
    path: Path,
    seed: int,
    fr: tuple[float, float],
    label_column: str | None,
    given: list[str] | None = None,
) -> Dataset:
    """Stream a CSV: features straight into a float32 buffer, labels as codes of distinct strings.

    Memory is bounded by the data itself (4 bytes a feature, 8 a row) and checked as it grows.
    """
    where = f"'{path}'"
    fix = "save it as UTF-8 text with a header row"
    feats = array("f")
    codes = array("q")
    label_code: dict[str, int] = {}  # distinct label text -> code, in order of first appearance
    first_row: list[int] = []  # code -> first row it appears in
    header: list[str] | None = None
    li = 0
    n_feat = 0
    row_no = 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for r in csv.reader(_csv_lines(fh, where)):
                if not r or not any(c.strip() for c in r):
                    continue
                if header is None:
                    header = [h.strip() for h in r]
                    if len(header) < 2:
                        raise UserError(
                            f"{where} has {len(header)} column: give at least one feature column and a label column"
                        )
                    if label_column is None:
                        li = len(header) - 1
                    elif label_column in header:
                        li = header.index(label_column)
                    else:
                        raise UserError(
                            f"--label-column '{label_column}' is not a column of {where}: "
                            f"pick one of {_short(header, 30)}"
                        )
                    n_feat = len(header) - 1
                    continue
                row_no += 1
                if len(r) != len(header):
                    raise UserError(
                        f"row {row_no} of {where} has {len(r)} fields but the header has {len(header)}: fix that row"
                    )
                lab = r[li].strip()
                code = label_code.get(lab)
                if code is None:
                    if len(lab) > MAX_LABEL_CHARS:
                        raise UserError(
                            f"row {row_no} of {where} has a label of {len(lab):,} characters in column "
                            f"'{header[li]}': labels are class names or indices (pick the label column with --label-column)"
                        )
                    if len(label_code) >= MAX_CLASSES:
                        raise UserError(
                            f"column '{header[li]}' of {where} has more than {MAX_CLASSES:,} distinct labels, "
                            "beyond cwtool's class limit: is it the label column? (pick it with --label-column)"
                        )
                    code = label_code[lab] = len(label_code)
                    first_row.append(row_no)
                codes.append(code)
                vals = r[:li] + r[li + 1 :]
                try:
                    feats.extend([float(v) for v in vals])
                except ValueError:
                    for i, v in enumerate(vals):
                        try:
                            float(v)
                        except ValueError:
                            col = header[i if i < li else i + 1]
                            raise UserError(
                                f"row {row_no} of {where}, column '{col}' holds {v[:50]!r}, not a number: "
                                "features must be numeric (encode or drop that column)"
                            ) from None
                    raise  # pragma: no cover - every value parsed one by one
                if row_no % 8192 == 0:  # what is held must leave as much again for the split copies
                    held = 4 * len(feats) + 8 * len(codes)
                    avail = limits.available_memory()
                    if avail is not None and held > avail[0]:
                        raise UserError(
                            f"{where} holds more than {row_no - 1:,} rows ({format_bytes(held)} as float32 so far, "
                            f"as much again to split them), more than the {format_bytes(avail[0])} of memory "
                            f"available ({avail[1]}): use fewer rows or a machine with more memory"
                        )
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {where} as CSV ({' '.join(str(exc).split())[:200]}): {fix}") from None
    if header is None:
        raise UserError(f"{where} is empty: give a header row and one row per sample")
    if not codes:
        raise UserError(f"{where} has a header but no data rows: add one row per sample")
    x = np.frombuffer(feats, dtype=np.float32).reshape(len(codes), n_feat)
    _check_finite(x, "the features", where)
    code_arr = np.frombuffer(codes, dtype=np.int64)
    distinct = list(label_code)

    names: list[str] | None = None
    mapping: dict[str, int] | None = None
    note = f"CSV features as stored ({n_feat} columns), label column '{header[li]}'"
    try:
        values = np.array([float(v) for v in distinct], dtype=np.float64)
    except ValueError:
        values = None
    if values is None:
        if "" in label_code:
            n = first_row[label_code[""]]
            raise UserError(f"row {n} of {where} has an empty label in column '{header[li]}': give every row a label")
        names, lookup, label_note = _string_labels(distinct, given, where, "")
        y = np.array([lookup[v] for v in distinct], dtype=np.int64)[code_arr]
        mapping = {v: lookup[v] for v in distinct}
        note += "; " + label_note
    else:
        y = _labels(values, f"label column '{header[li]}'", where)[code_arr]  # checks each distinct value
        if given is not None:
            names = given
            note += "; " + _mapping_note(given, "numeric labels, named by --class-names")
    splits = _split_pool(x, y, seed, fr, names, where)
    pre = Preprocessing(scale=1.0, layout="NC", note=note)
    return _finish(
        path.name, splits, pre, where=where, class_names=names, given_splits=False, seed=seed,
        label_mapping=mapping,
    )


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


def _load_idx_folder(
    folder: Path, seed: int, val_fraction: float, *, name: str, given: list[str] | None = None
) -> Dataset:
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
        y = _labels(arrays[f"y_{split}"], files[f"y_{split}"].name, where)
        _check_pair(arrays[f"x_{split}"], y, files[f"x_{split}"].name, files[f"y_{split}"].name, where)
        ys[split] = y
    n_values = arrays["x_train"].size + arrays["x_test"].size
    check_fits(4 * n_values, f"the images of {where} as float32 ({n_values:,} values)")
    for split in ("train", "test"):
        raw = arrays.pop(f"x_{split}")
        x = raw.reshape(raw.shape[0], 1, *raw.shape[1:]).astype(np.float32)
        del raw
        x *= np.float32(1 / 255)
        xs[split] = x
    top = int(max(ys["train"].max(), ys["test"].max()))
    note = "idx uint8 images scaled by 1/255; validation carved from train"
    if given is not None:
        names = given
        note += "; " + _mapping_note(given, "numeric labels, named by --class-names")
    else:
        names = FASHION_MNIST_CLASSES if "fashion" in name.lower() else None
        if names is None:
            names = [str(i) for i in range(top + 1)]
        elif top >= len(names):
            names = None  # not really Fashion-MNIST labels: fall back to numbers
    xtr, ytr, xva, yva = _carve_val(xs["train"], ys["train"], seed, val_fraction, names, where)
    pre = Preprocessing(scale=1 / 255, layout="NCHW", note=note)
    return _finish(
        name, (xtr, ytr, xva, yva, xs["test"], ys["test"]), pre,
        where=where, class_names=names, given_splits=True, seed=seed,
    )


# --------------------------------------------------------------------------- ImageFolder


_PIL_FORMATS = ("PNG", "JPEG")  # what the extensions promise (JPEG covers MPO); no other decoder: EPS runs Ghostscript
_PIL_BAD_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # 16-bit / 32-bit integer and float images


def _pillow():
    try:
        from PIL import Image  # lazy: not on devices
    except ImportError:
        raise UserError(
            "an ImageFolder --data needs Pillow, which is not installed: run `pip install pillow` "
            '(or `pip install "cwtool[compress]"`), or give the images as a .npz'
        ) from None
    return Image


def _pil_errors(Image) -> tuple[type[BaseException], ...]:
    """What Pillow raises on a bad file (decoders are third-party parsers of untrusted bytes)."""
    import struct
    import zlib

    return (
        OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error,
        Image.DecompressionBombError, Image.DecompressionBombWarning,
    )


def _image_problem(p: Path, exc: BaseException, Image) -> UserError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return UserError(
            f"image '{p}' is too large to decode safely ({' '.join(str(exc).split())[:160]}): "
            "it may be a decompression bomb; resize it or remove it"
        )
    return UserError(
        f"cannot read image '{p}' ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}): replace or remove it"
    )


def _load_image_folder(
    folder: Path,
    seed: int,
    fr: tuple[float, float],
    image_size: tuple[int, int] | None,
    given: list[str] | None = None,
) -> Dataset:
    """Class sub-folders of PNG/JPEG images -> (N, C, H, W) float32 in 0..1.

    Rule: every image must have the same size, unless ``image_size`` (height, width) is given,
    which resizes all of them (bilinear). Images are grayscale (1 channel) when every one is
    1-bit or 8-bit gray, else RGB (3 channels; alpha dropped, palettes and CMYK converted).
    16-bit and float images are refused. Each image's decoded size and the whole tensor are
    checked against the memory available before decoding; Pillow's decompression-bomb limit
    applies (its warning is an error here).
    """
    where = f"'{folder}'"
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(
            f"unknown --data '{folder}' (a folder with neither idx files nor class sub-folders): {_KNOWN}"
        )
    if len(class_dirs) > MAX_CLASSES:
        raise UserError(
            f"{where} has {len(class_dirs):,} class folders, beyond cwtool's limit of {MAX_CLASSES:,} classes"
        )
    names, lookup, label_note = _string_labels([d.name for d in class_dirs], given, where, "folder names, ")
    files: list[Path] = []
    labels: list[int] = []
    for d in class_dirs:
        imgs = sorted(
            p for p in d.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not imgs:
            raise UserError(
                f"class folder '{d.name}' in {where} has no PNG/JPEG images: add images or remove the folder"
            )
        files += imgs
        labels += [lookup[d.name]] * len(imgs)
    size_hw: tuple[int, int] | None = None
    if image_size is not None:
        try:
            ok = len(image_size) == 2 and all(int(v) == v and v >= 1 for v in image_size)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"image size {image_size!r} is invalid: give two positive integers (height, width)")
        size_hw = (int(image_size[0]), int(image_size[1]))

    Image = _pillow()
    errors = _pil_errors(Image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency ..." on convert
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pass 1: headers only (Image.open does not decode): modes and sizes.
        modes: list[str] = []
        sizes: list[tuple[int, int]] = []
        for p in files:
            try:
                with Image.open(p, formats=_PIL_FORMATS) as im:
                    modes.append(im.mode)
                    sizes.append((im.height, im.width))
                    bands = len(im.getbands())
            except errors as exc:
                raise _image_problem(p, exc, Image) from None
            if modes[-1] in _PIL_BAD_MODES:
                raise UserError(
                    f"image '{p}' is a {modes[-1]} (16-bit or float) image; cwtool reads 8-bit images: "
                    "convert it to 8-bit PNG/JPEG (or give the data as a .npz)"
                )
            h, w = sizes[-1]
            # Decoding holds the image, its converted copy and the array: about 4 bytes a band a pixel.
            check_fits(h * w * max(bands, 3) * 4, f"decoding image '{p}' ({w}x{h} pixels)")
        if size_hw is None:
            first = sizes[0]
            other = next((i for i, hw in enumerate(sizes) if hw != first), None)
            if other is not None:
                n_diff = sum(hw != first for hw in sizes)
                raise UserError(
                    f"images in {where} differ in size: '{files[0].relative_to(folder)}' is "
                    f"{first[0]}x{first[1]} (height x width) but '{files[other].relative_to(folder)}' is "
                    f"{sizes[other][0]}x{sizes[other][1]} ({n_diff} of {len(files)} images differ from the first): "
                    "give an image size (--image-size HEIGHTxWIDTH) to resize all of them, or resize them yourself"
                )
            size_hw = first
        gray = all(m in ("L", "1") for m in modes)
        mode = "L" if gray else "RGB"
        h, w = size_hw
        channels = 1 if gray else 3
        total = len(files) * channels * h * w * 4
        check_fits(
            total,
            f"{len(files)} images of {h}x{w} pixels, {channels} channel{'s' if channels > 1 else ''}, "
            f"from {where} as float32",
            fix="give a smaller image size (--image-size), use fewer images, or a machine with more memory",
        )
        x = np.empty((len(files), channels, h, w), dtype=np.float32)
        for i, p in enumerate(files):
            try:
                with Image.open(p, formats=_PIL_FORMATS) as im:
                    im = im.convert(mode)
                    if im.size != (w, h):
                        im = im.resize((w, h), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
            except errors as exc:
                raise _image_problem(p, exc, Image) from None
            if a.shape != ((h, w) if gray else (h, w, 3)):  # pragma: no cover - Pillow gave another size
                raise UserError(f"image '{p}' decoded to shape {a.shape}, not {h}x{w}: replace or remove it")
            x[i] = a[None] if gray else a.transpose(2, 0, 1)
    x *= np.float32(1 / 255)
    y = np.asarray(labels, dtype=np.int64)
    size_note = f"resized to {h}x{w} (bilinear)" if image_size is not None else f"all {h}x{w}, not resized"
    pre = Preprocessing(
        scale=1 / 255, layout="NCHW",
        note=f"ImageFolder, {'grayscale' if gray else 'RGB'}, {size_note}, 8-bit pixels scaled by 1/255; "
        + label_note,
    )
    return _finish(
        folder.resolve().name, _split_pool(x, y, seed, fr, names, where), pre,
        where=where, class_names=names, given_splits=False, seed=seed,
        label_mapping={d.name: lookup[d.name] for d in class_dirs},
    )
