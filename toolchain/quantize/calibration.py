"""Calibration sets for static int8 quantization: class-stratified, protected classes enriched, seeded.

The caller passes the TRAINING split (never the held-out test split: the gate reads test, so
calibrating on it would leak it into the artifact). The same (data, size, protected, seed) always
gives the same rows, and save_calibration writes the same bytes for them, so a saved .npz plus its
recipe reproduces a quantized artifact.

Reusable sets live in calibration/ at the repository root (calibration/README.md), found by name
like targets/ profiles: ``--calibration digits`` is calibration/digits.npz. An installed wheel
carries them as toolchain/calibration_data/ (pyproject's package-dir); ``CWTOOL_CALIBRATION_DIR``
adds a folder in front. Anything with a path separator or an .npz suffix is a path.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from toolchain.bundled import bundled_files
from toolchain.errors import UserError
from toolchain.io import cannot_write, staged_path
from toolchain.input_paths import absent, user_path

CALIBRATION_FORMAT = 1
CALIBRATION_ROWS_HASH = b"cwtool-calibration-rows/1"
SETS_README = "calibration/README.md"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same rows give the same file bytes


def _as_list(protected) -> list[int]:
    if protected is None:
        return []
    if isinstance(protected, (int, np.integer)):
        return [int(protected)]
    return sorted({int(p) for p in protected})


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to weights that sum to total."""
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=int)
    exact = weights / weights.sum() * total
    base = np.floor(exact).astype(int)
    rest = total - base.sum()
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return base


def calibration_quotas(
    counts: dict[int, int], size: int, protected: Iterable[int] = (), protected_share: float = 0.3
) -> dict[int, int]:
    """Rows to draw per class: proportional to class frequency, except that the protected classes
    together get at least ``protected_share`` of the set (more only if their natural share is larger).
    Quotas never exceed what a class has; a shortfall is handed to classes with rows to spare."""
    classes = sorted(counts)
    avail = np.array([counts[c] for c in classes], dtype=float)
    size = int(min(size, avail.sum()))
    prot = np.array([c in set(protected) for c in classes])
    if prot.any() and not prot.all():
        natural = avail[prot].sum() / avail.sum()
        p_total = int(round(size * max(float(protected_share), natural)))
        quota = np.zeros(len(classes), dtype=int)
        quota[prot] = _largest_remainder(avail[prot], p_total)
        quota[~prot] = _largest_remainder(avail[~prot], size - p_total)
    else:
        quota = _largest_remainder(avail, size)
    # cap at availability and redistribute the shortfall (protected classes first)
    quota = np.minimum(quota, avail.astype(int))
    while quota.sum() < size:
        spare = avail.astype(int) - quota
        if spare.sum() == 0:
            break
        for group in (prot, ~prot):
            idx = np.where(group & (spare > 0))[0]
            if len(idx) == 0:
                continue
            need = size - quota.sum()
            add = np.minimum(_largest_remainder(spare[idx].astype(float), need), spare[idx])
            quota[idx] += add
            if quota.sum() >= size:
                break
    return {c: int(q) for c, q in zip(classes, quota)}


def sample_calibration_indices(
    y_train: np.ndarray, size: int, protected=(), seed: int = 0, protected_share: float = 0.3
) -> np.ndarray:
    """Row indices into the training split (see sample_calibration), in a seeded random order."""
    y = np.asarray(y_train).reshape(-1)
    if len(y) == 0:
        raise UserError("cannot sample a calibration set from an empty training split")
    if size <= 0:
        raise UserError(f"calibration size must be positive, got {size}")
    prot = _as_list(protected)
    if not 0.0 <= protected_share <= 1.0:
        raise UserError(f"protected_share must be between 0 and 1, got {protected_share}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quotas = calibration_quotas(dict(zip(classes.tolist(), counts.tolist())), size, prot, protected_share)
    chosen = []
    for c in sorted(quotas):
        rows = np.flatnonzero(y == c)
        chosen.append(rng.choice(rows, size=quotas[c], replace=False))
    idx = np.concatenate(chosen) if chosen else np.zeros(0, dtype=int)
    return idx[rng.permutation(len(idx))]


def sample_calibration(
    x_train: np.ndarray,
    y_train: np.ndarray,
    size: int,
    protected=(),
    seed: int = 0,
    protected_share: float = 0.3,
) -> np.ndarray:
    """A calibration set of ``size`` rows drawn from the TRAINING split (caller's duty: never test).

    Class-stratified (each class in proportion to its frequency); the protected classes together
    make up at least ``protected_share`` of it, since their activations are the ranges quantization
    must not clip. Seeded: same inputs, same rows. Returns float32 rows in x_train's layout.
    """
    x = x_train if hasattr(x_train, "shape") else np.asarray(x_train)  # an array or rows read on demand
    if len(x) != len(np.asarray(y_train)):
        raise UserError(f"x_train has {len(x)} rows but y_train has {len(y_train)}: pass matching arrays")
    idx = sample_calibration_indices(y_train, size, protected, seed, protected_share)
    return x[idx].astype(np.float32)


def calibration_recipe(dataset, protected, size: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows compress and export draw for int8 calibration -- from ``dataset``'s train split -- and
    their recipe (the meta saved with them). `cwtool calibrate` writes the same rows for the same
    data, --seed, --calibration-size and protected classes."""
    from toolchain.data.identity import preprocessing_record

    x = sample_calibration(dataset.x_train, dataset.y_train, size, protected, seed=seed)
    meta = {"split": "train", "size": int(len(x)), "protected": _as_list(protected), "seed": int(seed), "data": dataset.name}
    if dataset.preprocessing.color:  # decoded image files: a set is for images prepared this way only (arrays come prepared)
        meta["preprocessing"] = preprocessing_record(dataset.preprocessing)
    return x, meta


def save_calibration(path: str | Path, x: np.ndarray, meta: dict[str, Any] | None = None) -> Path:
    """Write x and its recipe (meta: seed, size, protected, source hash...) to a .npz, atomically.

    A plain numpy .npz (``np.load(path)["x"]``, no pickles) whose bytes depend only on the rows and
    the recipe (fixed zip timestamps), so a regenerated set has the same sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": CALIBRATION_FORMAT, **(meta or {})}
    arrays = {"x": np.ascontiguousarray(x, dtype=np.float32), "meta": np.array(json.dumps(meta, sort_keys=True, default=str))}
    with staged_path(path) as tmp:
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for key, value in arrays.items():
                    info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    # zip64 headers only where a member may need them: Python 3.11.4 changed how it writes forced ones,
                    # and the same rows made other bytes under 3.11.2
                    large = value.nbytes * 1.05 + (1 << 20) > zipfile.ZIP64_LIMIT
                    with zf.open(info, "w", force_zip64=large) as member:
                        np.lib.format.write_array(member, value, allow_pickle=False)
        except OSError as exc:  # a full disk, a file-size limit: said with the file's name
            raise cannot_write(path, exc) from exc
    return path


def is_calibration_set(path: str | Path) -> bool:
    """Whether ``path`` is a .npz that save_calibration wrote (its members are x and meta): read as a zip
    listing only, nothing unpickled or loaded."""
    try:
        with zipfile.ZipFile(path) as zf:
            return sorted(zf.namelist()) == ["meta.npy", "x.npy"]
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def calibration_rows_sha256(x: np.ndarray) -> str:
    """The identity of calibration rows (float32, shape and order), whatever file holds them."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    h = hashlib.sha256(CALIBRATION_ROWS_HASH)
    h.update(repr(tuple(x.shape)).encode())
    h.update(memoryview(x).cast("B"))
    return h.hexdigest()


# ---- reusable sets, found by name like targets/ ----------------------------------------------------------


def calibration_sets() -> dict[str, Path]:
    """Every set found by name: name -> file."""
    return bundled_files("CWTOOL_CALIBRATION_DIR", "calibration", "calibration_data", ".npz")


def _set_names() -> str:
    return ", ".join(sorted(calibration_sets())) or "(none found)"


def resolve_calibration(name_or_path: str | Path) -> tuple[Path, str | None]:
    """(the file, the set's name or None) for ``--calibration``: a name from calibration/ or a path to a
    saved .npz (RUN/calibration.npz). A missing file or an unknown name is a one-line UserError."""
    text = str(name_or_path)
    path = user_path(text)
    if path.suffix.lower() == ".npz" or os.sep in text or "/" in text or text.startswith("~"):
        if path.is_dir():
            raise UserError(f"--calibration '{text}' is a folder: give the calibration .npz file")
        if path.exists() and not path.is_file():  # a pipe or a device: read more than once, so never a stream
            raise UserError(f"--calibration '{text}' is a pipe or device, not a file: save the set to an .npz file first")
        if not path.is_file():
            raise UserError(f"--calibration file '{text}' {absent(text)}: give a set name ({_set_names()}) or a saved .npz")
        return path, None
    sets = calibration_sets()
    if text in sets:
        if sets[text].exists() and not sets[text].is_file():  # a pipe, a device or a folder by the set's name (a link to
            # nothing is said as such where the file is read)
            raise UserError(f"calibration set {text!r} is '{sets[text]}', which is not a file (a pipe, a device or a folder): "
                            "put the saved .npz there, or give its path")
        return sets[text], text
    if path.is_file():  # a file in the working folder named without .npz
        return path, None
    if path.is_dir():  # a folder in the working folder, named without a slash: not an unknown set's name
        raise UserError(f"--calibration '{text}' is a folder: give the calibration .npz file")
    raise UserError(f"unknown calibration set {text!r}: use one of {_set_names()} ({SETS_README}) or a path to a .npz")


def calibration_record(path: str | Path, x: np.ndarray, meta: dict[str, Any], name: str | None, shown: str) -> dict[str, Any]:
    """What report.json / export.json say about the set used: its recipe, then which set (name or
    None), the file as shown to the user, its sha256 and the rows' own fingerprint."""
    from toolchain.provenance import file_sha256

    return {**checked_recipe(meta, x), "name": name, "file": shown, "sha256": file_sha256(path),
            "rows_sha256": calibration_rows_sha256(x)}


RECIPE_TEXT = 200  # characters of a recipe's data name kept in a record
RECIPE_JSON = 65_536  # bytes of a recipe's preprocessing record kept


def checked_recipe(meta: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    """The recipe a set's file records, as far as it is what `cwtool calibrate` writes: a given file's meta is untrusted
    (a set of 10 rows said "size": 256 in report.json and export.json; any field, of any size and type, was copied into
    both). ``size`` is the rows' own count; a field of another type or range, or one cwtool does not write, is left out."""
    from toolchain.errors import one_line
    from toolchain.limits import MAX_CLASSES

    def whole(v, low=0, high=2**31 - 1) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    recipe: dict[str, Any] = {"size": int(len(x))}
    if whole(meta.get("format"), 1, 1_000):
        recipe["format"] = meta["format"]
    if meta.get("split") in ("train", "val"):
        recipe["split"] = meta["split"]
    if whole(meta.get("seed")):
        recipe["seed"] = meta["seed"]
    protected = meta.get("protected")
    if isinstance(protected, list) and len(protected) <= 1_000 and all(whole(k, 0, MAX_CLASSES) for k in protected):
        recipe["protected"] = protected
    if isinstance(meta.get("data"), str) and meta["data"].strip():
        recipe["data"] = one_line(meta["data"])[:RECIPE_TEXT]
    preprocessing = meta.get("preprocessing")
    if isinstance(preprocessing, dict) and len(json.dumps(preprocessing, default=str)) <= RECIPE_JSON:
        recipe["preprocessing"] = preprocessing
    return recipe


def load_calibration(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(x float32, meta dict) from a file written by save_calibration."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"calibration set {path} {absent(path)}: check the path or re-create it")
    from toolchain.data.npz import read_npz  # sizes checked before reading: the file is untrusted

    _, arrays = read_npz(path, {"x", "meta"})
    bad = UserError(f"calibration set {path} holds no float array x of model inputs (cwtool calibrate writes one; its meta "
                    "is optional): give such an .npz")
    x = arrays.get("x")
    if x is not None and x.ndim >= 2 and len(x) == 0:
        raise UserError(f"calibration set {path} holds no rows (x has shape {x.shape}): re-create it with rows")
    if x is None or x.dtype.kind not in "fiu" or x.ndim < 2:
        raise bad
    if x.dtype.kind != "f":  # raw pixels, say: quantization ranges taken from them would not be the model's
        raise UserError(f"calibration set {path} holds {x.dtype} rows: a calibration set holds model inputs, prepared as --data's "
                        "are (float, scaled and normalized); re-create it with cwtool calibrate")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"calibration set {path} holds NaN or infinite values (as float32): give finite rows")
    meta = {}
    if "meta" in arrays:  # optional (a set of rows alone is one): where present, the recipe cwtool calibrate writes
        not_recipe = UserError(f"calibration set {path} holds a meta that is not a JSON object (the recipe cwtool calibrate "
                               "writes): re-create it with cwtool calibrate, or save x alone")
        try:
            meta = json.loads(str(arrays["meta"]), parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
        except (ValueError, RecursionError) as e:
            raise not_recipe from e
        if not isinstance(meta, dict):
            raise not_recipe
    return x, meta
