"""A .csv --data file: a header row, numeric feature columns and one label column (the last, or
--label-column), streamed so that memory stays bounded by the data itself."""

from __future__ import annotations

import csv
import shlex
from array import array
from pathlib import Path

import numpy as np

from toolchain import limits
from toolchain.data.assemble import assemble_dataset
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.features import check_finite
from toolchain.data.labels import check_labels, mapping_note, short_names, string_labels
from toolchain.data.splits import split_pool
from toolchain.errors import UserError, one_line
from toolchain.limits import MAX_CLASSES, MAX_CSV_LINE, MAX_LABEL_CHARS, format_bytes

__all__ = ["load_csv"]


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


def load_csv(
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
                                + ("a missing value: impute it or drop the row" if not v.strip() or v.strip().lower() in
                                 ("na", "n/a", "null", "none", "?") else "features must be numeric (encode or drop that column)"
                                   + ("" if label_column is not None else  # the last column is the label unless told
                                      f"; if it holds the labels, give --label-column {shlex.quote(col)}"))
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
    feature_names = [h for i, h in enumerate(header) if i != li]
    check_finite(x, "the features", where,  # numbered as the CSV's other messages number rows (the header is row 1)
                 place=lambda row, col: f"row {row + 2}, column '{feature_names[col]}'")
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
        numeric = [v for v in distinct if _is_number(v)]
        if given is None and len(numeric) * 2 >= len(distinct):
            odd = next(v for v in distinct if not _is_number(v))
            raise UserError(f"label column '{header[li]}' of {where} holds numbers and {one_line(odd)[:40]!r} (row "
                            f"{first_row[label_code[odd]]}): one label that is not a number would make every label a name, "
                            f"numbered alphabetically (10 before 2); fix or drop those rows, or give --class-names to order "
                            "the names yourself")
        names, lookup, label_note = string_labels(distinct, given, where, "")
        y = np.array([lookup[v] for v in distinct], dtype=np.int64)[code_arr]
        mapping = {v: lookup[v] for v in distinct}
        note += "; " + label_note
    else:
        y = check_labels(values, f"label column '{header[li]}'", where)[code_arr]  # checks each distinct value
        if given is not None:
            names = given
            note += "; " + mapping_note(given, "numeric labels, named by --class-names")
    splits = split_pool(x, y, seed, fr, names, where)
    pre = Preprocessing(scale=1.0, layout="NC", note=note, columns=feature_names)
    return assemble_dataset(
        path.name, splits, pre, where=where, class_names=names, given_splits=False, seed=seed,
        label_mapping=mapping,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
