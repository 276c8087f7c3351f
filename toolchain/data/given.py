"""--val FILE / --test FILE: held-out rows the user chose, in place of cwtool's split.

For a model trained elsewhere only the user knows which rows it has not seen. Given rows replace
cwtool's validation and/or test split; the rows of --data that cwtool would have put there train
instead. Each is an .npz with x and y (every row, in file order) or, when --data is an ImageFolder, a
folder laid out like it. They get --data's preprocessing, since the promise is judged on them and the
device feeds the exported file the same way: a folder's images are decoded, resized, cropped and
normalized as --data's were; an .npz's 8-bit pixels are scaled and normalized as they were; an .npz's
float rows are taken as already prepared, and the data line says so. With a CSV --data, a CSV of the same columns.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from toolchain.data.assemble import check_every_class_trained
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.images import normalize_channels
from toolchain.data.samples import Samples, concat, is_lazy, row_files
from toolchain.errors import UserError
from toolchain.input_paths import absent

__all__ = ["check_held_out", "load_with_given_rows", "with_given_rows"]


class Normalized(Samples):
    """Rows read on demand, then normalized per channel like --data's images (an .npz of 8-bit pixels, mapped)."""

    def __init__(self, base, mean, std):
        self.base, self.mean, self.std = base, mean, std
        self.shape = base.shape

    @property
    def held_bytes(self) -> int:
        return self.base.held_bytes

    def read(self, index: np.ndarray) -> np.ndarray:
        return normalize_channels(self.base.read(index), self.mean, self.std)  # a fresh batch: normalized in place

    def row_files(self) -> list[str] | None:
        return self.base.row_files()


def _normalized(x, pre: Preprocessing):
    return Normalized(x, pre.mean, pre.std) if is_lazy(x) else normalize_channels(x, pre.mean, pre.std)


def _rows(path: str, flag: str, dataset: Dataset) -> tuple[np.ndarray | Samples, np.ndarray, str]:
    """(x, y, how they were prepared) of one --val or --test."""
    from toolchain.data.rows import is_pool_npz, load_prepared_rows

    pre = dataset.preprocessing
    if not Path(path).exists():
        raise UserError(f"{flag} '{path}' {absent(path)}: check the path")
    if Path(path).is_dir():
        if not pre.color:
            raise UserError(f"{flag} '{path}' is a folder: a folder of images goes with an ImageFolder --data; for --data "
                            f"'{dataset.name}' give an .npz with x and y arrays")
        from toolchain.data.sources.image_folder import image_folder_rows

        x, y, notes = image_folder_rows(Path(path), pre, tuple(dataset.input_shape[1:]), list(dataset.class_names), flag)
        return x, y, "images prepared as --data's" + (f"; {notes}" if notes else "")
    if Path(path).suffix.lower() == ".csv":
        from toolchain.data.options import reshaped
        from toolchain.data.sources.csv_file import held_out_csv_rows

        x, y = held_out_csv_rows(Path(path), flag, dataset)
        n_columns = x.shape[1]
        if tuple(x.shape[1:]) != tuple(dataset.input_shape):  # --input-shape: flat rows fed to an image model, as --data's
            x = reshaped(x, tuple(dataset.input_shape), f"{flag} '{path}'")
        return x, y, f"CSV rows of --data's {n_columns:,} columns"
    if not is_pool_npz(path):
        raise UserError(f"{flag} '{path}' is not an .npz with x and y arrays: save it with numpy.savez(file, x=..., y=...)"
                        + (", or give a folder of class sub-folders like --data's" if pre.color else "")
                        + (", or name the CSV file .csv" if pre.columns else ""))
    x, y, names, given = load_prepared_rows(path)
    if names is not None and names != list(dataset.class_names)[: len(names)]:
        raise UserError(f"{flag} '{path}' names its classes {', '.join(names[:12])}; --data numbers them "
                        f"{', '.join(dataset.class_names[:12])}: give rows labelled as --data's")
    if tuple(x.shape[1:]) != dataset.input_shape:
        raise UserError(f"{flag} '{path}' has samples of shape {tuple(x.shape[1:])}, --data {dataset.input_shape}: give rows of the same data")
    if len(y) and int(y.max()) >= dataset.num_classes:
        raise UserError(f"{flag} '{path}' has label {int(y.max())}, beyond --data's {dataset.num_classes} classes")
    how = given.note.split(";")[0]
    if pre.mean and len(pre.mean) == x.shape[1] and x.ndim == 4:  # --data's images were normalized
        if given.scale != 1.0:  # 8-bit pixels, scaled by 1/255 like --data's: normalized like them too
            x, how = _normalized(x, pre), f"{how}, normalized as --data's"
        else:
            how = f"{how}, taken as already normalized like --data's"
    return x, y, how


def _overlapping(a: str, b: str) -> bool:
    """Whether two paths name the same rows: the same file or folder (by any path), one inside the other, or files of
    the same bytes."""
    try:
        ra, rb = Path(a).resolve(), Path(b).resolve()
    except (OSError, RuntimeError):  # a loop of links: no rows to overlap, and reading them says so (not exit 3 here)
        return False
    if ra == rb or ra in rb.parents or rb in ra.parents:
        return True
    if ra.is_file() and rb.is_file() and ra.stat().st_size == rb.stat().st_size:
        from toolchain.provenance import file_sha256

        return file_sha256(ra) == file_sha256(rb)
    return False


def check_held_out(data: str, val: str | None, test: str | None) -> None:
    """--val and --test are rows compress neither retrains on nor chooses twice with: not --data (or inside it), and
    not each other."""
    for flag, given in (("--val", val), ("--test", test)):
        if given is not None and _overlapping(given, data):
            raise UserError(f"{flag} '{given}' holds rows of --data '{data}', which the model is (re)trained on: held-out rows "
                            f"must be held out; give {flag} rows that are not in --data")
    if val is not None and test is not None and _overlapping(val, test):
        raise UserError(f"--val '{val}' and --test '{test}' hold the same rows: the test rows re-check a point chosen on "
                        "validation, so they must be others")


def _fingerprints(x, y: np.ndarray) -> tuple[str, np.ndarray]:
    """("files", a fingerprint of each row's image file and label) where every row is decoded from a file of its own, else
    ("rows", a fingerprint of each row's input and label)."""
    from toolchain.data.identity import file_fingerprints, row_fingerprints

    files = row_files(x)
    return ("files", file_fingerprints(files, y)) if files is not None else ("rows", row_fingerprints(x, y))


def _check_rows_held_out(x_train, y_train: np.ndarray, given: dict, kept: dict | None = None) -> None:
    """Rows of --val or --test that are also training rows, in both, or in the held-out split cwtool keeps beside one given
    alone (``kept``: its words -> rows; a --test of the validation rows re-checked the point they chose, and a --val of
    the test rows chose what they then judged, nothing said): files of other bytes (a subset, a re-save) and folders of
    other names (an all/ folder beside train/, val/ and test/) can hold the same rows. Arrays are compared row by row;
    image folders file by file, by their bytes (a copy), without decoding them. An image folder against an array (a
    folder's rows saved as an .npz, by verify --save-rows or by hand) is compared on a sample of its images, decoded."""
    from toolchain.data.identity import OVERLAP_TOLERANCE

    rows = {flag: xy for flag, xy in given.items() if len(xy[1])}
    prints = {flag: _fingerprints(x, y) for flag, (x, y) in rows.items()}
    if not prints:
        return
    against = {"--data's training rows": (x_train, y_train), **{words: xy for words, xy in (kept or {}).items() if len(xy[1])}}
    pairs = [(flag, other) for flag in list(prints) for other in against]
    if len(prints) == 2:
        pairs.append(("--test", "--val"))
    rows.update(against)
    prints.update({words: _fingerprints(x, y) for words, (x, y) in against.items()})
    for flag, other in pairs:
        (kind, fingerprints), (other_kind, theirs) = prints[flag], prints[other]
        if kind != other_kind:  # image files against arrays: the files' rows, decoded, against the arrays' fingerprints
            _check_decoded_sample(flag, rows[flag], rows[other], fingerprints if kind == "rows" else theirs, other,
                                  OVERLAP_TOLERANCE)
            continue
        shared = int(np.isin(fingerprints, theirs).sum())
        if shared > OVERLAP_TOLERANCE * len(fingerprints):  # a few exact duplicates occur in real data sets
            what = "images" if kind == "files" else "rows"
            same = "same file bytes and label" if kind == "files" else "same input and label"
            raise UserError(f"{shared:,} of the {len(fingerprints):,} {what} of {flag} are also in {other} ({same}): "
                            f"held-out rows must be held out; give {flag} rows that are not there")


DECODED_SAMPLE = 1024  # images of a folder decoded to compare it with an array's rows: seconds, not the whole folder


def _check_decoded_sample(flag: str, rows, other_rows, array_prints: np.ndarray, other: str, tolerance: float) -> None:
    """``flag``'s held-out rows against ``other``'s, one side image files and the other an array (``array_prints``: its
    rows' fingerprints): up to DECODED_SAMPLE of the files' rows are decoded (a seeded sample of a larger folder) and
    looked up among the array's. Held-out images found in the array count as the arrays' rule counts them (a sample must
    show twice the tolerance); held-out rows found among a sample of the other side's images are at least that many
    shared, however many copies that side holds."""
    from toolchain.data.identity import row_fingerprints
    from toolchain.data.samples import subset

    held_files = row_files(rows[0]) is not None
    fx, fy = rows if held_files else other_rows
    pick = np.sort(np.random.default_rng(0).choice(len(fy), size=min(DECODED_SAMPLE, len(fy)), replace=False))
    decoded = row_fingerprints(subset(fx, pick), fy[pick])
    whole = len(pick) == len(fy)
    looked = f"all {len(fy):,} of its images, decoded" if whole else f"{len(pick):,} of its {len(fy):,} images, decoded"
    if held_files:
        shared = int(np.isin(decoded, array_prints).sum())
        if shared > (1 if whole else 2) * tolerance * len(pick):
            raise UserError(f"{shared:,} of {'the' if whole else 'a sample of'} {len(pick):,} images of {flag} are also in {other} "
                            f"(same input and label, {looked}): held-out rows must be held out; give {flag} rows that are not there")
    else:
        shared = int(np.isin(array_prints, decoded).sum())
        if shared > tolerance * len(array_prints):
            raise UserError(f"{'' if whole else 'at least '}{shared:,} of the {len(array_prints):,} rows of {flag} are also in {other} (same "
                            f"input and label; {looked}): held-out rows must be held out; give {flag} rows that are not there")


def with_given_rows(dataset: Dataset, val: str | None = None, test: str | None = None) -> Dataset:
    if val is None and test is None:
        return dataset
    parts = {"train": [dataset.split("train")]}
    new, said = {}, []
    for name, given, flag in (("val", val, "--val"), ("test", test, "--test")):
        if given is None:
            new[name] = dataset.split(name)
        else:
            x, y, how = _rows(given, flag, dataset)
            _check_scale(x, dataset, flag, given)
            new[name] = (x, y)
            said.append(f"{flag} {given} ({how})")
            parts["train"].append(dataset.split(name))  # cwtool's own held-out rows train instead
    x_train = concat([x for x, _ in parts["train"]])  # lazy when the splits are
    y_train = np.concatenate([y for _, y in parts["train"]])
    kept_split = {f"the {'validation' if name == 'val' else 'test'} rows cwtool keeps from --data '{dataset.name}'": new[name]
                  for name, given in (("val", val), ("test", test)) if given is None}
    _check_rows_held_out(x_train, y_train, {flag: new[name] for name, given, flag in
                                            (("val", val, "--val"), ("test", test, "--test")) if given is not None}, kept_split)
    check_every_class_trained(y_train, {f"{flag} '{given}'": new[name][1] for name, given, flag in
                                        (("val", val, "--val"), ("test", test, "--test")) if given is not None},
                              dataset.class_names, f"--data '{dataset.name}'")
    kept = [part for part in dataset.preprocessing.note.split("; ")  # --val's rows replace the carved ones: not said
            if not (val is not None and part.startswith("validation carved from"))]
    note = f"{'; '.join(kept)}; held-out rows from {', '.join(said)}"
    return replace(dataset, x_train=x_train, y_train=y_train, x_val=new["val"][0], y_val=new["val"][1], x_test=new["test"][0],
                   y_test=new["test"][1], given_splits=True, preprocessing=replace(dataset.preprocessing, note=note),
                   held_out_from={name: str(path) for name, path in (("val", val), ("test", test)) if path},
                   held_out_origin={name: "given" if path else (dataset.held_out_origin or {}).get(name, "source")
                                    for name, path in (("val", val), ("test", test))})


def _check_scale(x, dataset: Dataset, flag: str, given: str) -> None:
    """Image rows given as arrays whose values reach 50 times --data's or more (0..255 against 0..1; rows reaching less may
    be dark images, not another scale): a --val .npz of raw
    pixels beside an image folder ran compress to a +30.8 protected-logit offset and a failed gate, nothing said why."""
    import math

    from toolchain.data.identity import SCALE_APART, largest_value

    here = largest_value(x)
    pre = dataset.preprocessing
    if pre.color and pre.scale:  # an image folder: pixels 0..255 times the scale, normalized: known without decoding any
        top = 255.0 * pre.scale
        there = max(max(abs(m), abs(top - m)) / s for m, s in zip(pre.mean or [0.0], pre.std or [1.0]))
    else:
        there = largest_value(dataset.x_train)
    if not (here and there and math.isfinite(there)) or here / there < SCALE_APART:  # dark images reach little: no scale
        return
    raise UserError(f"{flag} '{given}' holds values reaching {here:g} where the rows of --data reach {there:g}: pixels scaled "
                    f"otherwise (0..255 against 0..1?); give {flag} rows prepared as --data's are")


def load_with_given_rows(data: str, val: str | None, test: str | None, **load_args) -> Dataset:
    """``load_data(data, **load_args)`` with --val/--test in place of its held-out splits, once they are checked to be
    held out: what compress, train and calibrate read."""
    from toolchain.data import load_data

    check_held_out(data, val, test)
    return with_given_rows(load_data(data, **load_args), val, test)


def check_no_copies_across_splits(dataset, *, refuse: bool, note) -> None:
    """Where cwtool carved validation or test rows from --data itself, those that are copies of training rows (the same image
    file's bytes and label under another name): compress retrains on the training rows, so the promise and the test
    numbers would rest on rows it has seen. A third of a folder's files copied under other names put 50 of 113
    validation and 53 of 112 test rows beside their twins, said nowhere. Refused (``refuse``, compress) or warned of
    above OVERLAP_TOLERANCE of a split and two rows, noted below (real data sets hold a few exact duplicates). Rows of
    arrays with a training row's input and label are noted only: a table's discrete features repeat."""
    from toolchain.data.identity import OVERLAP_TOLERANCE

    origin = dataset.held_out_origin or {}
    carved = [split for split in ("val", "test")  # given rows (--val, an .npz's own splits) were judged where they were read
              if origin.get(split, "source" if dataset.given_splits else "pool") in ("pool", "train")]
    if not carved:
        return
    x_train, y_train = dataset.split("train")
    kind, train = _fingerprints(x_train, y_train)
    shared = {}
    for name, split in (("validation", "val"), ("test", "test")):
        if split not in carved:
            continue
        x, y = dataset.split(split)
        if len(y):
            shared[name] = (int(np.isin(_fingerprints(x, y)[1], train).sum()), len(y))
    if not any(n for n, _ in shared.values()):
        return
    where = " and ".join(f"{n:,} of the {total:,} {name} rows" for name, (n, total) in shared.items() if n)
    what = "byte-identical copies of training images (the same file bytes and label under another name)"
    if kind == "rows":  # discrete features repeat in real tables (81 distinct rows of four 3-level features): said only
        note(f"note: {where} of --data have the input and label of a training row: where they are copies rather than "
             "repeated values, the FN promise and test numbers rest on rows the model has seen (then give held-out rows "
             "with --val and --test)")
        return
    if any(n > max(OVERLAP_TOLERANCE * total, 2) for n, total in shared.values()):  # a duplicate or two of a small split: said
        message = (f"{where} of --data are {what}: compress retrains on the training rows, so its FN promise and test "
                   "numbers would rest on rows the model has seen; remove the copies from --data, or give held-out rows "
                   "with --val and --test")
        if refuse:
            raise UserError(message)
        note(f"warning: {message}")
    else:
        note(f"note: {where} of --data are {what} (a few exact duplicates, as real data sets hold)")
