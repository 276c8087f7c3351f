"""Which rows a model was trained on, so that cwtool never validates or tests it on them.

`cwtool train` stores, in the checkpoint, the data's source, split seed and a 64-bit fingerprint of
every training row (8 bytes a row). `compress` refuses, and `evaluate` warns, when the rows it would
validate or test on are among them: a model trained with one split seed and compressed with another
has seen part of cwtool's validation and test splits, and every promise made on them is void. A model
from elsewhere carries no such record: then cwtool says that its validation and test rows must be
unseen by it, and how to give them (--val / --test, or an .npz with its own splits).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from toolchain.data.dataset import Dataset
from toolchain.data.samples import batches
from toolchain.errors import UserError, listed, one_line

__all__ = ["row_fingerprints", "training_record", "seen_rows", "check_unseen", "check_preprocessing", "preprocessing_record"]

MAX_RECORDED_ROWS = 5_000_000  # 40 MB of fingerprints; beyond, the record keeps the source and seed only
OVERLAP_TOLERANCE = 0.005  # exact duplicates across a data set's own splits exist (Fashion-MNIST has some)


def row_fingerprints(x, y: np.ndarray) -> np.ndarray:
    """One 64-bit fingerprint per row (its model input and label), read a batch at a time."""
    y = np.asarray(y, dtype=np.int64)
    out = np.empty(len(x), dtype=np.uint64)
    i = 0
    for batch in batches(x):
        batch = np.ascontiguousarray(batch, dtype=np.float32).reshape(len(batch), -1)
        for row in batch:
            h = hashlib.blake2b(row.tobytes(), digest_size=8)
            h.update(int(y[i]).to_bytes(8, "little", signed=True))
            out[i] = int.from_bytes(h.digest(), "little")
            i += 1
    return out


def file_fingerprints(files: list[str], y: np.ndarray) -> np.ndarray:
    """One 64-bit fingerprint per image file (its bytes and label), read in chunks and never decoded: the rows of two
    ImageFolders compared at the speed of the disk (a copy of a validation image among the training images)."""
    from toolchain.provenance import file_sha256

    y = np.asarray(y, dtype=np.int64)
    out = np.empty(len(files), dtype=np.uint64)
    for i, path in enumerate(files):
        try:
            h = hashlib.blake2b(file_sha256(path).encode("ascii"), digest_size=8)
        except OSError as exc:
            raise UserError(f"cannot read image '{one_line(path)}' ({exc.strerror or exc}): replace or remove it") from exc
        h.update(int(y[i]).to_bytes(8, "little", signed=True))
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def training_record(spec: str, dataset: Dataset) -> dict:
    """What a checkpoint stores about the data its model was trained on (all plain values and bytes)."""
    record = {"spec": str(spec), "name": dataset.name, "seed": dataset.seed, "given_splits": dataset.given_splits,
              "train_rows": int(len(dataset.y_train)), "class_names": [str(n) for n in dataset.class_names],
              "preprocessing": preprocessing_record(dataset.preprocessing)}
    if len(dataset.y_train) <= MAX_RECORDED_ROWS:
        record["train_row_fingerprints"] = row_fingerprints(dataset.x_train, dataset.y_train).tobytes()
    largest = largest_value(dataset.x_train) if not dataset.preprocessing.color else None
    if largest is not None:  # arrays of images, scaled by their user: the scale new rows must share
        record["largest_value"] = largest
    return record


RANGE_ROWS = 256  # rows spread over an array whose largest value is read: a mapped array is not read whole
SCALE_APART = 50.0  # 255 (0..255 against 0..1) and more is another scale; data's own spread stays well inside


def largest_value(x) -> float | None:
    """The largest absolute value of up to RANGE_ROWS rows spread over ``x``, an array of images (N, C, H, W); None for
    other rows (a CSV's features) or none at all."""
    if isinstance(x, np.ndarray) and x.ndim == 4 and len(x):
        rows = np.unique(np.linspace(0, len(x) - 1, min(len(x), RANGE_ROWS)).astype(np.int64))
        value = float(np.max(np.abs(np.asarray(x[rows], dtype=np.float64))))
        return value if math.isfinite(value) else None
    return None


def scale_mismatch(record: dict | None, x, model: str | Path) -> str | None:
    """Where the checkpoint records the largest value of its training's image arrays and these rows reach another by
    50 times or more (0..255 against 0..1), the warning: such a model scored 42.9% with exit 0 and no word, its uint8
    copy of the same rows 99.9% (a data reviewer's finding)."""
    there = record.get("largest_value") if isinstance(record, dict) else None
    here = largest_value(x)
    if not (isinstance(there, (int, float)) and not isinstance(there, bool) and math.isfinite(there) and there > 0 and here):
        return None
    if max(here / there, there / here) < SCALE_APART:
        return None
    return (f"these rows' values reach {here:g} where '{model}' was trained on rows reaching {there:g} (its checkpoint records "
            "it): pixels scaled otherwise (0..255 against 0..1?) make its numbers here mean little; give rows scaled as its "
            "training's were")


def seen_rows(record: dict | None, x: np.ndarray, y: np.ndarray) -> int | None:
    """How many of these rows the model was trained on; None when its checkpoint cannot tell."""
    if not isinstance(record, dict) or not isinstance(record.get("train_row_fingerprints"), bytes):
        return None
    blob = record["train_row_fingerprints"]
    if len(blob) % 8:
        return None
    trained = np.frombuffer(blob, dtype=np.uint64)
    return int(np.isin(row_fingerprints(x, y), trained).sum())


def check_class_order(record: dict | None, class_names, model: str | Path, order_fixed: bool | None = None) -> None:
    """The model's outputs are its classes in the order it was trained with: the same names in another order (string
    labels numbered alphabetically here, by --class-names there), or a name of both at another index (a class folder
    renamed or missing), would score every prediction against another label.
    ``order_fixed``: the data's source numbers its classes itself (an .npz's class_names, a named set), so --class-names
    cannot renumber them; None where the caller cannot tell."""
    trained = record.get("class_names") if isinstance(record, dict) else None
    if not isinstance(trained, list) or not all(isinstance(n, str) for n in trained) or class_names is None:
        return
    from toolchain.data.labels import declared_names, numbered_apart

    names = [str(n) for n in class_names]
    if names != trained and (sorted(names) == sorted(trained) or (declared_names(names) and numbered_apart(names, trained))):
        order = ", ".join(trained)
        flag = f"give --class-names \"{one_line(order)[:300]}\""
        resave = "save the data with its labels numbered in the model's order"
        fix = (resave + " (its source fixes the numbering)" if order_fixed else flag if order_fixed is False
               else f"{flag} where the labels are written as names (a CSV, folders of images), else {resave}")
        only = [n for n in names if n not in trained]
        renamed = f" (not among its classes: {one_line(', '.join(only[:5]))[:200]})" if only else ""
        raise UserError(f"'{model}' was trained with its classes in the order {one_line(order)[:300]}; this data numbers them "
                        f"{one_line(', '.join(names))[:300]}{renamed}: {fix}")


IMAGE_STEPS = ("color", "resize", "crop", "mean", "std")  # what an image file goes through before the model sees it


def preprocessing_record(preprocessing) -> dict:
    """The steps a checkpoint records of its data's preprocessing (no note: it names files)."""
    return {k: v for k, v in preprocessing.to_dict().items() if k != "note"}


def preprocessing_flags(recorded: dict) -> str:
    """The flags that prepare image files as ``recorded`` says, as compress, export, evaluate and verify take them."""
    flags = [f"--color {'gray' if recorded['color'] == 'L' else 'rgb'}"]
    resize, crop = recorded.get("resize") or [], recorded.get("crop") or []
    if len(resize) == 1:
        flags.append(f"--resize {resize[0]}" + (f" --image-size {crop[0]}x{crop[1]}" if len(crop) == 2 and crop != [resize[0]] * 2 else ""))
    elif len(resize) == 2:
        flags.append(f"--image-size {resize[0]}x{resize[1]}")
    mean, std = recorded.get("mean") or [], recorded.get("std") or []
    flags.append("--normalize " + (f"{','.join(f'{float(v):g}' for v in mean)}:{','.join(f'{float(v):g}' for v in std)}" if mean else "none"))
    return " ".join(flags)


def preprocessing_advice(recorded: dict, input_shape=None) -> str:
    """``preprocessing_flags`` as advice: where ``recorded`` resized nothing, its images were all of the model's size
    (``input_shape``'s sides, where known): other images take --image-size of that size, and no other."""
    flags = preprocessing_flags(recorded)
    if recorded.get("resize"):
        return flags
    sides = _sides(input_shape)
    if sides:
        return f"{flags}, and --image-size {sides[0]}x{sides[1]} (the model's own size) for images of another size, no --resize"
    return f"{flags}, and no --image-size or --resize (or --image-size of the model's own size)"


def check_preprocessing(record: dict | None, here: dict | None, model: str | Path, input_shape=None) -> str | None:
    """Where the model's checkpoint records how its training images were prepared and this data's images were prepared
    otherwise (flags left out: another normalization, no resize), the problem in one line; else None. A model fed other
    inputs than it learnt on misses a protected class for that reason alone: compress and export refuse, evaluate warns.
    ``here``: this data's Preprocessing, as a dict; ``input_shape``: the checkpoint's sample shape, where it has one."""
    recorded = record.get("preprocessing") if isinstance(record, dict) else None
    columns = column_differences(recorded, here)
    if columns is not None:
        return (f"'{model}' was trained on rows of other feature columns ({columns}; its checkpoint records them): features "
                "are read by position, so give the rows with its training's columns, in their order")
    found = preprocessing_differences(recorded, here, input_shape)
    if found is None:
        return None
    shown, flags = found
    return f"'{model}' was trained on images prepared otherwise than these ({shown}; its checkpoint records it): give {flags}"


def column_differences(recorded, here) -> str | None:
    """Where both records name a CSV's feature columns (``recorded`` read from a file: untrusted) and they differ, how,
    in words: the same columns in another order, or columns missing and new. None where they agree or either names none."""
    def names(record) -> list[str] | None:
        cols = record.get("columns") if isinstance(record, dict) else None
        ok = isinstance(cols, list) and 0 < len(cols) <= 1_000_000 and all(isinstance(c, str) for c in cols)
        return cols if ok else None

    there, this = names(recorded), names(here)
    if there is None or this is None or there == this:
        return None
    if sorted(there) == sorted(this):
        i = next(i for i, (a, b) in enumerate(zip(there, this)) if a != b)
        return (f"the same {len(there):,} columns in another order: column {i + 1} is '{one_line(there[i])[:60]}' there, "
                f"'{one_line(this[i])[:60]}' here")
    these, those = set(this), set(there)  # up to a million names: looked up, not rebuilt per column
    missing = [c for c in there if c not in these]
    new = [c for c in this if c not in those]
    shown = lambda cols: listed((f"'{one_line(c)[:40]}'" for c in cols), 3)
    return "; ".join(part for part in (f"missing here: {shown(missing)}" if missing else "",
                                       f"new here: {shown(new)}" if new else "",
                                       "" if missing or new else "the same names, some repeated otherwise") if part)


def preprocessing_differences(recorded, here: dict | None, input_shape=None) -> tuple[str, str] | None:
    """Where ``recorded`` (read from a file: untrusted) and ``here`` are both image-file preprocessing and differ: (what
    differs, in words; the flags that repeat the recorded). None where they agree, either is not of image files, or the
    record holds what cwtool never writes (an edited file: nothing to compare, and no flags to advise). A record that
    resized nothing was trained on images all of the model's size (``input_shape``, where known): a plain resize to that
    size here is the same preparation for them (held-out images of another size need it)."""
    if not (_readable_record(recorded) and isinstance(here, dict) and here.get("color")):
        return None  # not recorded (older files, other tools), arrays on either side, or unreadable: nothing to compare
    here = as_recorded_size(recorded, here, input_shape)

    def same(a, b) -> bool:
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return all(abs(float(x) - float(y)) <= 1e-6 for x, y in zip(a, b))
        return a == b

    differ = [k for k in IMAGE_STEPS if not same(recorded.get(k, [] if k != "color" else ""), here.get(k))]
    if not differ:
        return None
    shown = ", ".join(f"{k} {step_words(recorded.get(k))} there, {step_words(here.get(k))} here" for k in differ)
    return shown, preprocessing_advice(recorded, input_shape)


def as_recorded_size(recorded: dict, here: dict, input_shape) -> dict:
    """``here`` with a plain resize to the model's own size (``input_shape``'s sides) read as none, where ``recorded``
    resized nothing: its images were all of that size, and the resize is the same preparation for them."""
    sides = _sides(input_shape)
    if sides and not recorded.get("resize") and not recorded.get("crop") and here.get("resize") == sides and not here.get("crop"):
        return {**here, "resize": [], "crop": []}
    return here


def _sides(input_shape) -> list[int] | None:
    """[height, width] of a model's (C, H, W) input, or None for another shape or none known."""
    return [int(d) for d in input_shape[-2:]] if input_shape is not None and len(input_shape) == 3 else None


def step_words(value) -> str:
    """A preprocessing step's value as said in a message: "none" for a step not applied ("[]" read as a value). Read from a
    file: shortened, so a 5 MB value cannot become a 5 MB report."""
    if value in ([], "", None):
        return "none"
    said = repr(value)
    return said if len(said) <= 80 else said[:77] + "..."


def recorded_flags(record, input_shape=None) -> str | None:
    """The flags that prepare images as a checkpoint's training record says (``record``: its extra["data"]), or None where
    it records no readable image preprocessing: what a shape error names before "give the data it was trained on"."""
    recorded = record.get("preprocessing") if isinstance(record, dict) else None
    return preprocessing_advice(recorded, input_shape) if _readable_record(recorded) else None


def _readable_record(recorded) -> bool:
    """Whether a recorded preprocessing is image-file steps as cwtool writes them: a color, sides as positive whole numbers
    (a resize of one or two, a crop of two), finite means and positive finite stds of one length."""
    if not (isinstance(recorded, dict) and recorded.get("color") in ("L", "RGB")):
        return False
    resize, crop, mean, std = (recorded.get(k, []) for k in ("resize", "crop", "mean", "std"))
    side = lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65_536  # noqa: E731
    real = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 and math.isfinite(v)  # noqa: E731
    return (isinstance(resize, list) and len(resize) in (0, 1, 2) and all(map(side, resize))
            and isinstance(crop, list) and len(crop) in (0, 2) and all(map(side, crop))
            and isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) <= 4
            and all(map(real, mean)) and all(real(v) and v > 0 for v in std))


OWN_ROWS = "with --val and --test, or as an .npz with its own splits"  # how this command takes held-out rows


def check_unseen(record: dict | None, model: str | Path, dataset: Dataset, *, refuse: bool, note, own_rows: str = OWN_ROWS) -> None:
    """Refuse (compress) or warn (export) when the validation or test rows were training rows of the model; without a
    record, and where cwtool split the data itself, say what the user must make sure of (``own_rows``: how, with the
    command's own options, after "give them")."""
    held_out = {"validation": dataset.split("val"), "test": dataset.split("test")}
    counts = {name: seen_rows(record, x, y) for name, (x, y) in held_out.items()}
    if any(v is None for v in counts.values()):
        if not dataset.given_splits:  # the user chose the held-out rows (--val, --test, an .npz's splits): theirs to know
            note(f"note: cwtool cannot tell which rows trained '{model}': the validation and test rows it split from the "
                 f"data must be unseen by the model (give them {own_rows})")
        return
    total = sum(len(y) for _, y in held_out.values())
    seen = sum(counts.values())
    if seen == 0:
        return
    given = {"validation": ("--val", (dataset.held_out_from or {}).get("val")), "test": ("--test", (dataset.held_out_from or {}).get("test"))}
    where = ", ".join(f"{n} of the {len(held_out[k][1]):,} {k} rows" + (f" of {given[k][0]} '{one_line(given[k][1])[:200]}'" if given[k][1] else "")
                      for k, n in counts.items() if n)
    of_data = not any(given[k][1] for k, n in counts.items() if n)  # seen rows only among cwtool's split of --data
    # the record is read from the model file: only plain values of the types cwtool writes are used
    seed = record.get("seed") if isinstance(record.get("seed"), int) and not isinstance(record.get("seed"), bool) else None
    own_splits = record.get("given_splits") is True
    spec = one_line(record["spec"])[:200] if isinstance(record.get("spec"), str) else "unknown data"
    trained_with = "its own splits" if own_splits else f"split seed {seed if seed is not None else 'unknown'}"
    if not of_data:  # the flags this user gave: held-out rows come from them
        fix = "give " + " and ".join(f"{given[k][0]} rows it has not seen" for k, n in counts.items() if n)
    elif not own_splits and seed is not None and seed != dataset.seed:
        fix = f"pass --seed {seed}"
    elif not own_splits and seed == dataset.seed:  # the same split of the same data leaves none seen but copies of its rows
        fix = (f"if --data is the data it was trained on, these are copies of its training rows (the same file or row more "
               f"than once in --data): remove the copies, or give rows it has not seen {own_rows}")
    else:
        fix = f"give rows it has not seen {own_rows}"
    if seen > OVERLAP_TOLERANCE * total:
        origin = (f"of --data ({spec}, trained with {trained_with}; this run splits with seed {dataset.seed})" if of_data
                  else f"(its checkpoint records training on {spec}, with {trained_with})")
        message = f"'{model}' was trained on {where} {origin}: results on them would not hold for new data; {fix}"
        if refuse:
            raise UserError(message)
        note(f"warning: {message}")
    else:
        note(f"note: {where} are exact copies of rows '{model}' was trained on (duplicates within the data set)")
