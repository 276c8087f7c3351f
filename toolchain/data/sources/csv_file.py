"""A .csv --data file: a header row, numeric feature columns and one label column (the last, or
--label-column), streamed so that memory stays bounded by the data itself."""

from __future__ import annotations

import csv
import re
import shlex
from array import array
from pathlib import Path

import numpy as np

from toolchain import limits
from toolchain.data.assemble import assemble_dataset
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.features import check_finite
from toolchain.data.identity import column_differences
from toolchain.data.labels import check_labels, mapping_note, short_names, string_labels
from toolchain.data.splits import split_pool
from toolchain.errors import UserError, one_line
from toolchain.limits import MAX_CLASSES, MAX_CSV_LINE, MAX_LABEL_CHARS, format_bytes

__all__ = ["csv_rows_in_file_order", "held_out_csv_rows", "load_csv"]


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


def _number(text: str) -> float:
    """``text`` as a number as a CSV writes one: Python's float() also reads "1_0" as 10 and Arabic-Indic digits, which
    pandas and numpy read as text (a label "0_3" became class 3)."""
    if "_" in text or not text.isascii():
        raise ValueError(text)
    return float(text)


def _is_number(text: str) -> bool:
    try:
        _number(text)
    except ValueError:
        return False
    return True


class _Table:
    """A CSV's rows as read: the features as float32, each row's label as a code of its distinct text."""

    def __init__(self, x, codes, distinct, first_line, header, li, feature_names):
        self.x, self.codes, self.distinct, self.first_line = x, codes, distinct, first_line
        self.header, self.li, self.feature_names = header, li, feature_names

    @property
    def label_name(self) -> str:
        return self.header[self.li]

    def first_line_of(self, text: str) -> int:
        return self.first_line[self.distinct.index(text)]


def _read_table(path: Path, label_column: str | None, pick_label=None) -> _Table:
    """Stream a CSV: features straight into a float32 buffer, labels as codes of distinct strings. The label column is
    ``label_column``, else what ``pick_label(header)`` says (an index), else the last.

    Memory is bounded by the data itself (4 bytes a feature, 8 a row) and checked as it grows.
    """
    where = f"'{path}'"
    fix = "save it as UTF-8 text with a header row"
    feats = array("f")
    codes = array("q")
    label_code: dict[str, int] = {}  # distinct label text -> code, in order of first appearance
    first_line: list[int] = []  # code -> the line it first appears on
    lines = array("q")  # each row's line in the file: what an editor shows (blank lines and quoted line breaks count)
    header: list[str] | None = None
    li = 0
    n_feat = 0
    row_no = 1
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(_csv_lines(fh, where))
            for r in reader:
                if not r or not any(c.strip() for c in r):
                    continue
                if header is None:
                    header = [h.strip() for h in r]
                    if len(header) < 2:
                        sep = next((s for s in (";", "\t", "|") if s in r[0]), None)  # European Excel saves with ';'
                        raise UserError(
                            f"{where} has {len(header)} column: give at least one feature column and a label column"
                            + (f" (its header is split by {sep!r}, not by commas: save it comma-separated)" if sep else "")
                        )
                    if "" in header:  # an unnamed column: a trailing comma, or a saved pandas index (row numbers, no feature)
                        i = header.index("")
                        raise UserError(f"column {i + 1} of {where} has no name"
                                        + (" (the header ends in a comma, as Excel writes)" if i == len(header) - 1 else
                                           " (pandas writes its index so: to_csv(index=False) leaves it out)" if i == 0 else "")
                                        + ": name it, or remove the column")
                    if all(_is_number(h) for h in header):  # read as names, the first sample would vanish
                        raise UserError(f"the first row of {where} is all numbers ({one_line(','.join(r))[:80]}): it reads as a "
                                        "sample, not a header; add a header row naming the columns")
                    if pick_label is not None:
                        li = pick_label(header)
                        label_column = header[li]
                    elif label_column is None:
                        li = len(header) - 1
                        if header.count(header[li]) > 1:  # its twin would be read as a feature: likely the labels again
                            raise UserError(f"the label column '{one_line(header[li])[:40]}' (the last) of {where} has the "
                                            f"name of column {header.index(header[li]) + 1} too: give the columns distinct names "
                                            "(a copy of the labels among the features would be learnt as one)")
                    elif header.count(label_column) > 1:  # which one holds the labels is a guess: not made
                        raise UserError(f"--label-column '{label_column}' names {header.count(label_column)} columns of {where}: "
                                        "give the columns distinct names")
                    elif label_column in header:
                        li = header.index(label_column)
                    else:
                        raise UserError(
                            f"--label-column '{label_column}' is not a column of {where}: "
                            f"pick one of {short_names(header, 30)}"
                        )
                    n_feat = len(header) - 1
                    continue
                row_no += 1
                line = reader.line_num
                if len(r) != len(header):
                    raise UserError(
                        f"line {line} of {where} has {len(r)} fields but the header has {len(header)}: fix that row"
                    )
                lab = r[li].strip()
                code = label_code.get(lab)
                if code is None:
                    if len(lab) > MAX_LABEL_CHARS:
                        raise UserError(
                            f"line {line} of {where} has a label of {len(lab):,} characters in column "
                            f"'{header[li]}': labels are class names or indices (pick the label column with --label-column)"
                        )
                    if len(label_code) >= MAX_CLASSES:
                        raise UserError(
                            f"column '{header[li]}' of {where} has more than {MAX_CLASSES:,} distinct labels, "
                            "beyond cwtool's class limit: is it the label column? (pick it with --label-column)"
                        )
                    code = label_code[lab] = len(label_code)
                    first_line.append(line)
                codes.append(code)
                lines.append(line)
                vals = r[:li] + r[li + 1 :]
                try:
                    joined = "".join(vals)  # one look per row: a cell float() reads but a CSV reader would not
                    if "_" in joined or not joined.isascii():
                        raise ValueError(joined)
                    feats.extend([float(v) for v in vals])
                except ValueError:
                    for i, v in enumerate(vals):
                        try:
                            _number(v)
                        except ValueError:
                            col = header[i if i < li else i + 1]
                            raise UserError(f"line {line} of {where}, column '{col}' holds {v[:50]!r}, not a number: "
                                            + _why_not_a_number(v, col, label_column)) from None
                    raise  # pragma: no cover - every value parsed one by one
                if row_no % 8192 == 0:  # what is held must leave as much again for the split copies
                    held = 4 * len(feats) + 16 * len(codes)
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
    feature_names = [h for i, h in enumerate(header) if i != li]
    check_finite(x, "the features", where, place=lambda row, col: f"line {lines[row]}, column '{feature_names[col]}'")
    return _Table(x, np.frombuffer(codes, dtype=np.int64), list(label_code), first_line, header, li, feature_names)


def load_csv(
    path: Path,
    seed: int,
    fr: tuple[float, float],
    label_column: str | None,
    given: list[str] | None = None,
    min_classes: int = 2,
    small_classes_ok: bool = False,
) -> Dataset:
    """A CSV --data file, split into train, validation and test (``min_classes`` 1: rows to judge, one class will do;
    ``small_classes_ok``: judged whole, see split_pool)."""
    x, y, names, mapping, note, feature_names = _labelled(path, label_column, given)
    if names is None and min_classes >= 2 and len(y) and int(y.min()) > 0:  # classes counted from 1 (R, SPSS): class 0 empty
        labels = np.unique(y)
        raise UserError(f"the labels of '{path}' have no 0 (they are {', '.join(map(str, labels[:6]))}{', ...' if len(labels) > 6 else ''}): "
                        "labels are class indices from 0, so class 0 would have no row; subtract 1 from every label, or give "
                        "--class-names naming class 0 too")
    splits = split_pool(x, y, seed, fr, names, f"'{path}'", small_classes_ok)
    pre = Preprocessing(scale=1.0, layout="NC", note=note, columns=feature_names)
    return assemble_dataset(
        path.name, splits, pre, where=f"'{path}'", class_names=names, given_splits=False, seed=seed,
        label_mapping=mapping, min_classes=min_classes, small_classes_ok=small_classes_ok,
    )


def csv_rows_in_file_order(path: Path, label_column: str | None, given: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every row of a CSV in file order, labelled as load_csv labels them: what a compress run's --test CSV was judged
    on, judged again."""
    x, y, *_ = _labelled(path, label_column, given)
    return x, y


def _labelled(path: Path, label_column: str | None, given: list[str] | None):
    """(x, y, class names, {label text: index} or None, the data note, the feature columns) of a CSV, in file order."""
    where = f"'{path}'"
    table = _read_table(path, label_column)
    x, code_arr, distinct, header, li, feature_names = (table.x, table.codes, table.distinct, table.header, table.li,
                                                         table.feature_names)
    n_feat = len(feature_names)
    label_code = {text: i for i, text in enumerate(distinct)}
    first_line = table.first_line

    names: list[str] | None = None
    mapping: dict[str, int] | None = None
    note = f"CSV features as stored ({n_feat} columns), label column '{header[li]}'"
    identifier = _identifier_column(x, feature_names)
    if identifier:
        note += (f"; column '{one_line(identifier)[:60]}' holds a different whole number on every row, like a record "
                 "number: a model learns nothing from it that holds for new rows (drop the column if it is one)")
    try:
        values = np.array([_number(v) for v in distinct], dtype=np.float64)
    except ValueError:
        values = None
    if values is None:
        if "" in label_code:
            n = first_line[label_code[""]]
            raise UserError(f"line {n} of {where} has an empty label in column '{header[li]}': give every row a label")
        numeric = [v for v in distinct if _is_number(v)]
        if given is None and len(numeric) * 2 >= len(distinct):
            odd = next(v for v in distinct if not _is_number(v))
            raise UserError(f"label column '{header[li]}' of {where} holds numbers and {one_line(odd)[:40]!r} (line "
                            f"{first_line[label_code[odd]]}): one label that is not a number would make every label a name, "
                            f"numbered alphabetically (10 before 2); fix or drop those rows, or give --class-names to order "
                            "the names yourself")
        folded: dict[str, str] = {}
        for v in distinct if given is None else []:  # 'Benign' and 'benign' became two classes without a word
            twin = folded.setdefault(v.casefold(), v)
            if twin != v:
                raise UserError(f"label column '{header[li]}' of {where} holds {one_line(twin)[:40]!r} (line "
                                f"{first_line[label_code[twin]]}) and {one_line(v)[:40]!r} (line {first_line[label_code[v]]}), "
                                "which differ only in case: write each class one way, or give --class-names naming both "
                                "as classes of their own")
        names, lookup, label_note = string_labels(distinct, given, where, "")
        y = np.array([lookup[v] for v in distinct], dtype=np.int64)[code_arr]
        mapping = {v: lookup[v] for v in distinct}
        note += "; " + label_note
    else:
        try:
            y = check_labels(values, f"label column '{header[li]}'", where)[code_arr]  # checks each distinct value
        except UserError as exc:
            if label_column is not None:
                raise
            # the last column is the label unless told: a CSV with its labels first read a feature as them
            raise UserError(f"{exc} (the last column is read as the labels unless --label-column names another)") from exc
        if given is not None:
            names = given
            note += "; " + mapping_note(given, "numeric labels, named by --class-names")
    return x, y, names, mapping, note, feature_names



ID_WORDS = ("id", "index", "record", "row", "patient", "case", "sample", "subject", "mrn")


def _identifier_column(x: np.ndarray, feature_names: list[str]) -> str | None:
    """The first feature column that looks like a record number: a distinct whole number on each of 50 or more rows,
    numbered consecutively or under a name such as 'patient_id'. A hospital export's first column was learnt as a
    feature without a word."""
    if len(x) < 50:
        return None
    for j, name in enumerate(feature_names):
        head = np.asarray(x[:1000, j], dtype=np.float64)
        if not np.all(head == np.round(head)):  # most feature columns stop here, having read a thousand values
            continue
        col = np.asarray(x[:, j], dtype=np.float64)
        if not (np.all(np.isfinite(col)) and np.all(col == np.round(col))):
            continue
        ordered = np.sort(col)
        if np.any(ordered[1:] == ordered[:-1]):
            continue
        words = [w.casefold() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", name)]  # PatientID, case_no
        if ordered[-1] - ordered[0] == len(col) - 1 or any(w in ID_WORDS for w in words):
            return name
    return None


def held_out_csv_rows(path: Path, flag: str, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a CSV given as --val or --test with a CSV --data: --data's feature columns in its order, and one
    column more that holds the labels, written as --data's are (the same names, or indices below its class count)."""
    where = f"{flag} '{path}'"
    columns = dataset.preprocessing.columns
    if not columns:
        raise UserError(f"{where} is a CSV, but --data '{dataset.name}' is not: give an .npz with x and y arrays")
    known = set(columns)

    def pick_label(header: list[str]) -> int:
        extra = [i for i, name in enumerate(header) if name not in known]
        features = [name for name in header if name in known]
        if len(extra) == 1 and features == list(columns):
            return extra[0]
        if len(extra) == 1:
            how = column_differences({"columns": list(columns)}, {"columns": features}) or "the same names, some repeated"
        else:
            how = (f"{len(extra)} columns that --data does not have ({short_names([header[i] for i in extra], 5)}): one "
                   "holds the labels, the others are not --data's" if extra else "no column beside --data's to hold the labels")
        raise UserError(f"{where} has other columns than --data '{dataset.name}' ({how}): give --data's {len(columns):,} "
                        "feature columns, in its order, and its label column")

    table = _read_table(path, None, pick_label)
    label = f"label column '{table.label_name}' of {where}"
    if dataset.label_mapping is not None:
        known = dict(dataset.label_mapping)  # with every class --class-names names, those --data has no row of too
        for index, name in enumerate(dataset.class_names or []):
            known.setdefault(name, index)
        unknown = [text for text in table.distinct if text not in known]
        if unknown:
            raise UserError(f"{label} holds {one_line(unknown[0])[:40]!r} (line {table.first_line_of(unknown[0])}), not a "
                            f"label of --data '{dataset.name}' ({short_names(list(known), 12)})")
        lookup = np.array([known[text] for text in table.distinct], dtype=np.int64)
    else:
        try:
            values = np.array([_number(text) for text in table.distinct], dtype=np.float64)
        except ValueError:
            odd = next(text for text in table.distinct if not _is_number(text))
            raise UserError(f"{label} holds {one_line(odd)[:40]!r} (line {table.first_line_of(odd)}); --data "
                            f"'{dataset.name}' labels its rows by class index: label these the same way") from None
        lookup = check_labels(values, f"label column '{table.label_name}'", where)
        if int(lookup.max()) >= dataset.num_classes:
            raise UserError(f"{label} has label {int(lookup.max())}, beyond --data's {dataset.num_classes} classes")
    return table.x, lookup[table.codes]


MISSING_MARKS = ("na", "n/a", "#n/a", "nan", "null", "none", "?", "-", "--", "missing")  # spreadsheets' and R's
# digits with separators float() does not read: 4,399.004; 1'234; 12 345; 1.234,56; a decimal comma 0,500
_SEPARATED = re.compile(r"^[+-]?\d+([.,' \u00a0\u202f]\d+)+$")


def _why_not_a_number(value: str, column: str, label_column) -> str:
    """What a cell that is not a number most likely is, and what to do: a missing value, a number written with thousands
    separators, or text (Excel's "#N/A" and "4,399.004" were told to encode or drop the column)."""
    cell = value.strip()
    if not cell or cell.lower() in MISSING_MARKS:
        return "a missing value: impute it or drop the row"
    if cell.startswith("#"):  # #DIV/0!, #VALUE!, #REF!: a cell, not the column
        return "a spreadsheet's error value: fix or impute it, or drop the row"
    if _SEPARATED.match(cell):  # 3,141 may be either: said as both
        return ("a number written with thousands separators or a decimal comma: save the file with plain numbers and a point "
                "as the decimal mark (4399.004, 0.5)")
    return ("features must be numeric (encode or drop that column)"
            + ("" if label_column is not None else  # the last column is the label unless told
               f"; if it holds the labels, give --label-column {shlex.quote(column)}"))
