"""Which rows `cwtool evaluate` and `cwtool verify` judge, and how they say so (the same words in both, so that their
numbers can be compared): the test split of --data; but every row, in file order, when --data is an .npz with only x and
y (such a file is taken to be the evaluation set itself) -- unless the baseline's row count shows it was measured on that
file's seeded test split (`cwtool compress --data pool.npz`), then that split. --split overrides. numpy only."""

from __future__ import annotations

from pathlib import Path

from toolchain.errors import UserError
from toolchain.provenance import rows_sha256

__all__ = ["SPLITS", "load_rows_for", "describe_rows", "share_note", "the_run_s_test_rows", "given_test_record",
           "UnsplitRows", "the_run_s_unsplit_rows"]

SPLITS = ("auto", "train", "val", "test", "all")


class UnsplitRows(UserError):
    """The default's test split of --data cannot be drawn (a class of one or two rows), where every row can be judged:
    a compress run's own --test folder or file may be such (the_run_s_unsplit_rows). ``every_row()``: every row, read once."""

    def __init__(self, message: str, every_row):
        super().__init__(message)
        self._every_row, self._every_row_read = every_row, None

    def every_row(self) -> dict:
        if self._every_row_read is None:
            self._every_row_read = self._every_row()
        return self._every_row_read


def load_rows_for(data: str, split: str = "auto", seed: int = 0, label_column: str | None = None,
                  baseline_n: int | None = None, class_names: list[str] | None = None,
                  image_size: tuple[int, int] | None = None, input_shape: tuple[int, ...] | None = None,
                  resize: int | None = None, normalize=None, color: str | None = None) -> dict:
    """The rows to verify on: {"x", "y", "class_names", "split", "name", "seed", "note"}.

    split "auto": every row in file order for an x/y-only .npz -- unless a baseline was measured
    on that file's seeded test split (baseline_n equals that split's size and not the file's); every
    image of a folder where the baseline was measured on as many (a compress run's --test folder);
    every row of a CSV, in file order, likewise; the test split for everything else.
    """
    from toolchain.data.options import reshaped
    from toolchain.data.rows import is_pool_npz, load_rows

    too_small = None  # a class of a CSV or folder too small to split, where its rows are judged whole
    is_csv = str(data).strip().lower().endswith(".csv")
    if split in ("auto", "all") and is_pool_npz(data):
        if resize is not None or normalize not in (None, "auto") or color is not None or image_size is not None:
            raise UserError(f"--resize, --normalize, --color and --image-size only apply to an ImageFolder folder, not to --data "
                            f"'{data}': drop them")
        if label_column is not None:
            raise UserError(f"--label-column only applies to a .csv file, not to --data '{data}': drop it")
        x, y, names, note = load_rows(data, class_names=class_names)
        x = reshaped(x, input_shape, Path(data).name)
        whole = {"x": x, "y": y, "class_names": names, "split": "all", "name": Path(data).name, "seed": None, "note": note}
        if not (split == "auto" and baseline_n is not None and baseline_n != len(y)):
            return whole
        dataset = _seeded_test_split_of(data, seed, class_names, input_shape, baseline_n)
        if dataset is None:  # other rows than the baseline's, judged whole as the docs say; the rows' hash tells
            return whole
    else:
        from toolchain.data import load_data
        from toolchain.data.splits import SmallClassError

        options = dict(seed=seed, label_column=label_column, class_names=class_names, image_size=image_size,
                       input_shape=input_shape, resize=resize, normalize=normalize, color=color,
                       min_classes=1)  # rows to judge: one class will do
        try:
            dataset = load_data(data, **options)
        except SmallClassError as exc:  # a compress run's --test folder may hold a class of 2: judged whole, it needs no split
            if split not in ("auto", "all") or not (Path(data).is_dir() or is_csv):
                raise
            dataset, too_small = load_data(data, **options, small_classes_ok=True), exc
    if split == "auto" and baseline_n is not None and (Path(data).is_dir() or is_csv) \
            and len(dataset.split("test")[1]) != baseline_n == len(dataset.split("all")[1]):
        split = "all"  # a baseline measured on every row of the file or folder: a compress run's --test, judged again
    if split != "all" and too_small is not None:  # a split of it is wanted: it cannot be drawn
        def every_row() -> dict:
            return load_rows_for(data, "all", seed, label_column, class_names=class_names, image_size=image_size,
                                 input_shape=input_shape, resize=resize, normalize=normalize, color=color)
        raise UnsplitRows(f"{too_small} (--split all judges every row as it is)", every_row) from too_small
    used = "test" if split == "auto" else split
    if split == "all" and is_csv:  # every row in file order, as a --test CSV is read
        from toolchain.data.labels import given_names
        from toolchain.data.sources.csv_file import csv_rows_in_file_order
        from toolchain.input_paths import user_path

        x, y = csv_rows_in_file_order(user_path(str(data).strip()), label_column, given_names(class_names))
        x = reshaped(x, input_shape, Path(data).name)  # --input-shape, as the split's rows were
        return {"x": x, "y": y, "class_names": list(dataset.class_names), "split": "all", "name": dataset.name, "seed": None,
                "note": dataset.preprocessing.note, "preprocessing": dataset.preprocessing.to_dict()}
    if split == "all" and dataset.preprocessing.color and Path(data).is_dir():
        # every image in listing order, as --val/--test folders are read: a compress run's --test folder is judged again
        from toolchain.data.sources.image_folder import image_folder_rows

        x, y, _ = image_folder_rows(Path(data), dataset.preprocessing, tuple(dataset.input_shape[1:]), list(dataset.class_names), "--data")
        return {"x": x, "y": y, "class_names": list(dataset.class_names), "split": "all", "name": dataset.name, "seed": None,
                "note": dataset.preprocessing.note, "preprocessing": dataset.preprocessing.to_dict()}  # the note counts what was left out
    x, y = dataset.split(used)
    if split == "all":
        used = "all"
    pooled = sum(len(dataset.split(s)[1]) for s in ("train", "val", "test"))  # a share of a folder the user may see as a split
    # an .npz holds rows prepared already: its scale is the file's, not a preprocessing to compare with an artifact's
    prepared = {} if str(data).strip().lower().endswith(".npz") else {"preprocessing": dataset.preprocessing.to_dict()}
    seeded = not (dataset.given_splits and used in ("test", "all"))  # a source's own test split was drawn by no seed of ours
    return {"x": x, "y": y, "class_names": list(dataset.class_names), "split": used, "name": dataset.name,
            "seed": seed if seeded else None, "note": dataset.preprocessing.note,
            **prepared, **({"of_rows": pooled} if seeded and used != "all" and pooled > len(y) else {}),
            "every_row": lambda: dict(zip(("x", "y"), dataset.split("all")))}  # the rows these were drawn from, read once asked


def given_test_record(dataset, sha256: str) -> dict | None:
    """What a file or checkpoint records of a run's --test file or folder (its row count and ``sha256``, the test rows'
    rows_sha256), for the_run_s_test_rows; None where the test rows were a split cwtool drew (the seed draws them again)."""
    if (dataset.held_out_origin or {}).get("test") != "given":
        return None
    return {"rows": int(len(dataset.split("test")[1])), "sha256": sha256}


def the_run_s_test_rows(rows: dict, recorded: list, every_row, tested: str) -> tuple[dict, str | None]:
    """Every row of --data, where the rows judged are a seeded share of it and it is the very --test file or folder a
    compress run tested its model on (``recorded``: the records, given_test_record's, of the files or checkpoint; each
    may be anything, an edited file's): a device given the files and that folder alone was judged on 51 of its 340
    images ("0 of 6 missed, passed" where every row misses 11 of 40). The rows' own sha256 decides, not the record: a
    record of other rows, or an edited one, changes nothing. ``every_row()``: --data's every row, as --split all reads
    them. Returns the rows to judge and what to say of them (None where unchanged)."""
    if rows["split"] != "test" or not isinstance(rows.get("of_rows"), int) or _recorded_sum(recorded, rows["of_rows"]) is None:
        return rows, None
    try:
        whole = every_row()
    except UserError:  # the whole read refuses what the seeded one did not (a size that --split all cannot take): not the run's rows
        return rows, None
    if not _is_recorded(whole, recorded):
        return rows, None
    return whole, (f"every row of {rows['name']} is judged, not a seeded test split of it: they are the rows {tested} "
                   f"({len(whole['y']):,} rows, the sha256 recorded)")


def the_run_s_unsplit_rows(refusal: UnsplitRows, recorded: list, tested: str) -> tuple[dict, str]:
    """Every row of --data, where its default test split cannot be drawn (``refusal``) and it is the very --test folder or
    file every record names (as the_run_s_test_rows): a run's --test folder with two images of a class was refused by
    the check its report printed, unless --split all was given. Else ``refusal`` is raised."""
    try:
        whole = refusal.every_row()
    except UserError:
        raise refusal from None
    if not _is_recorded(whole, recorded):
        raise refusal
    return whole, (f"every row of {whole['name']} is judged (a test split of it cannot be drawn): they are the rows {tested} "
                   f"({len(whole['y']):,} rows, the sha256 recorded)")


def _recorded_sum(recorded: list, rows: int) -> str | None:
    """The sha256 every record names for that many rows; None where one names another set, or none (each record may be
    anything, an edited file's): another's rows (a run trained on this folder) are judged as they would be without."""
    sums = {r.get("sha256") if isinstance(r, dict) and r.get("rows") == rows else None for r in recorded}
    only = next(iter(sums)) if len(sums) == 1 else None
    return only if isinstance(only, str) else None


def _is_recorded(whole: dict, recorded: list) -> bool:
    """The rows' own sha256 decides, not the record: a record of other rows, or an edited one, changes nothing."""
    expected = _recorded_sum(recorded, len(whole["y"]))
    return expected is not None and rows_sha256(whole["x"], whole["y"]) == expected


def _seeded_test_split_of(data: str, seed: int, class_names, input_shape, baseline_n: int):
    """An x/y .npz as `cwtool compress --data pool.npz` split it, where its seeded test split has the baseline's row count
    (the baseline was measured on that split); else None: the file is judged whole."""
    from toolchain.data import load_data

    try:
        dataset = load_data(data, seed=seed, class_names=class_names, input_shape=input_shape, min_classes=1)
    except UserError:  # too few rows of a class to split: not a pool compress split
        return None
    return dataset if len(dataset.split("test")[1]) == baseline_n else None


def describe_rows(rows: dict, digest: str | None = None) -> str:
    """Which rows a command judged, in words (printed by evaluate and verify, so both can be compared)."""
    n = len(rows["y"])
    if rows["split"] == "all" and rows.get("seed") is None:
        where = f"every row of {rows['name']}, in file order"
    elif rows["split"] == "all":
        where = f"every split of {rows['name']}"
    else:
        seed = "" if rows.get("seed") is None else f", split seed {rows['seed']}"
        where = f"the {rows['split']} split of {rows['name']}{seed}"
    pooled = rows.get("of_rows")
    count = f"{n:,} of its {pooled:,} rows (--split all: every row)" if isinstance(pooled, int) else f"{n:,} rows"
    return f"{where}: {count}, sha256 {(digest or rows_sha256(rows['x'], rows['y']))[:12]}"


def share_note(rows: dict) -> str | None:
    """Where the default judged a seeded share of --data, say so apart from the rows line: a user who named a folder of
    held-out images was judged on 27 of its 180 (a new user's finding). None where every row was judged."""
    pooled = rows.get("of_rows")
    if not isinstance(pooled, int) or rows["split"] != "test":
        return None
    return (f"judged the seeded test split of {rows['name']}, {len(rows['y']):,} of its {pooled:,} rows, as compress splits it; "
            "where it holds held-out rows only, --split all judges every one")
