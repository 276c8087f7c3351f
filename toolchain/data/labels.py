"""Labels and class names: the rules every --data source shares -- numpy only.

Labels are class indices, one integer per sample below MAX_CLASSES (whole-number floats and
booleans are accepted). String labels (a CSV label column, ImageFolder folder names) are numbered
alphabetically unless --class-names gives the order; a source that stores its own names must
agree with the user's. Every problem is a one-line `UserError`.
"""

from __future__ import annotations

import numpy as np

from toolchain.errors import UserError, one_line
from toolchain.limits import MAX_CLASSES

__all__ = [
    "agree_names", "check_labels", "check_pair", "declared_names", "given_names", "mapping_note", "numbered_apart", "short_names", "string_labels",
]


def check_labels(y: np.ndarray, what: str, where: str) -> np.ndarray:
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


def composed(text: str) -> str:
    """``text`` in Unicode's composed form (NFC): a folder made on a Mac names 'Mélanome' with a decomposed é, which a
    name typed elsewhere ('-p Mélanome', --class-names) would otherwise never equal."""
    import unicodedata

    return unicodedata.normalize("NFC", text)


def given_names(class_names) -> list[str] | None:
    """Validate a user-given class-name list (None: not given). A string is split at commas, or read as a JSON list of
    strings where it starts with '[' (names that hold a comma: '["naevus, benign", "melanoma"]')."""
    if class_names is None:
        return None
    if isinstance(class_names, str) and class_names.lstrip().startswith("["):
        import json

        try:
            parsed = json.loads(class_names)
        except (ValueError, RecursionError):
            parsed = None
        if not (isinstance(parsed, list) and all(isinstance(n, str) for n in parsed)):
            raise UserError("--class-names starting with '[' is read as a JSON list of strings, and this is not one: give "
                            "'[\"a, b\", \"c\"]' or plain names split at commas")
        class_names = parsed
    elif isinstance(class_names, str):
        class_names = class_names.split(",")
    try:
        names = [composed(str(n).strip()) for n in class_names]
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


def class_names_value(names: list[str]) -> str:
    """``names`` as --class-names takes them: split at commas, or a JSON list where a name holds a comma."""
    import json

    return json.dumps(list(names), ensure_ascii=False) if any("," in n for n in names) else ",".join(names)


def short_names(names: list[str], k: int = 10) -> str:
    shown = ", ".join(names[:k])
    return shown + (f", ... ({len(names)} names)" if len(names) > k else "")


def agree_names(stored: list[str] | None, given: list[str] | None, where: str) -> list[str] | None:
    """The class names to use when a source stores its own and the user may give some."""
    if given is None:
        return stored
    if stored is None:
        return given
    if stored != given:
        raise UserError(
            f"--class-names ({short_names(given)}) does not match the class names stored in {where} "
            f"({short_names(stored)}): the source fixes its labels' order; drop --class-names or give "
            "the same names in the same order"
        )
    return stored


def declared_names(class_names: list[str] | None) -> list[str] | None:
    """The data's class names when it names its classes (an ImageFolder's folders, --class-names), None for indices."""
    return list(class_names) if class_names and list(class_names) != [str(i) for i in range(len(class_names))] else None


def numbered_apart(names: list[str], other: list[str]) -> bool:
    """Whether a class name in both lists has another index in each (NFC forms compared): labels of one mean another
    output of the other. A folder renamed ("3" to "three") moves every class after it down one."""
    import unicodedata

    index = {unicodedata.normalize("NFC", n): i for i, n in enumerate(other)}
    return any(index.get(unicodedata.normalize("NFC", n), i) != i for i, n in enumerate(names))


def mapping_note(names: list[str], how: str) -> str:
    """'labels: benign=0, malignant=1 (how)' -- at most 20 pairs shown."""
    pairs = [f"{one_line(n)}={i}" for i, n in enumerate(names)]  # names come from the data: no line of their own
    shown = ", ".join(pairs[:20]) + (f", ... ({len(pairs)} classes)" if len(pairs) > 20 else "")
    return f"labels: {shown} ({how})"


def string_labels(
    raw: list[str], given: list[str] | None, where: str, kind: str
) -> tuple[list[str], dict[str, int], str]:
    """(class names, {label: index}, note) for distinct string labels ``raw``.

    Without ``given`` the labels are numbered alphabetically; with it, each label gets its index
    in ``given`` (a label not in it is an error; names in it that never occur are classes
    without samples).
    """
    if given is None:
        names = sorted(set(raw))
        note = mapping_note(names, f"{kind}alphabetical; set --class-names to change")
    else:
        missing = sorted(set(raw) - set(given))
        if missing:
            raise UserError(
                f"label {missing[0]!r} in {where} is not one of --class-names ({short_names(given)}): "
                f"add it to --class-names in its place, or fix the data"
                + (f" ({len(missing)} labels are missing)" if len(missing) > 1 else "")
            )
        names = list(given)
        note = mapping_note(names, f"{kind}order from --class-names")
    return names, {n: i for i, n in enumerate(names)}, note


def check_pair(x: np.ndarray, y: np.ndarray, xk: str, yk: str, where: str) -> None:
    """One label per sample, and at least one sample (``xk``/``yk`` name the arrays in messages)."""
    if len(x) != len(y):
        raise UserError(
            f"{xk} has {len(x)} samples but {yk} has {len(y)} labels in {where}: give one label per sample"
        )
    if len(x) == 0:
        raise UserError(f"{xk} in {where} is empty: store at least one sample per class")
