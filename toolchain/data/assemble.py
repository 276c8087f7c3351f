"""The last step of every --data source: six split arrays and class names -> a checked `Dataset`."""

from __future__ import annotations

import dataclasses

import numpy as np

from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.errors import UserError, one_line
from toolchain.limits import MAX_CLASSES

__all__ = ["assemble_dataset"]


def check_every_class_trained(y_train: np.ndarray, held_out: dict, class_names: list[str], train: str) -> None:
    """Refuse held-out rows (``held_out``: split name -> labels) of a class no training row has: the model never shown it
    misses every one of them, by construction."""
    for split, y in held_out.items():
        unlearnt = np.setdiff1d(np.unique(y), y_train)
        if len(unlearnt):
            k = int(unlearnt[0])
            named = f"class {k}" if class_names[k] == str(k) else f"class '{one_line(class_names[k])[:60]}' (label {k})"
            raise UserError(f"{train} has no row of {named}, which the {split} rows hold: a model cannot learn a class it "
                            "never sees; give training rows of every class")


def _said_empty_classes(pre: Preprocessing, present: np.ndarray, class_names: list[str], numbered: bool, where: str) -> Preprocessing:
    """A class with no row in any split (labels 0 and 2, or --class-names naming a class no folder holds) is said in the data
    note: a model trained on it keeps an output it never learns. Labels that leave most classes empty are codes, not class
    indices (0 and 99,999 asked for a 100,000-class model), and are refused."""
    empty = np.setdiff1d(np.arange(len(class_names)), present)
    if not len(empty):
        return pre
    if numbered and len(empty) > max(100, 10 * len(present)):
        raise UserError(f"the labels of {where} run to {len(class_names) - 1:,} but only {len(present):,} values occur "
                        f"({', '.join(map(str, present[:6].tolist()))}{', ...' if len(present) > 6 else ''}): labels are class "
                        "indices 0..K-1; number the classes from 0 without gaps")
    shown = ", ".join(n if numbered else f"'{one_line(n)[:40]}'" for n in (class_names[int(k)] for k in empty[:6]))
    more = f", ... ({len(empty):,} in all)" if len(empty) > 6 else ""
    said = (f"warning: class{'es' if len(empty) > 1 else ''} {shown}{more} {'have' if len(empty) > 1 else 'has'} no row in any "
            "split: a model trained on this data keeps an output it never learns")
    return dataclasses.replace(pre, note=f"{pre.note}; {said}" if pre.note else said)


def assemble_dataset(
    name: str,
    splits: tuple[np.ndarray, ...],
    preprocessing: Preprocessing,
    *,
    where: str,
    class_names: list[str] | None,
    given_splits: bool,
    seed: int,
    val_from_train: bool = False,
    label_mapping: dict[str, int] | None = None,
    min_classes: int = 2,
    small_classes_ok: bool = False,
) -> Dataset:
    """Check what no source may break (names cover the labels, no split empty, two classes at
    least, or ``min_classes``) and build the `Dataset`; without ``class_names`` the classes are named by number.
    ``val_from_train``: validation was carved with ``seed`` from the source's own train split (its test split is its own).
    ``small_classes_ok``: a pool to be judged whole (splits.split_pool), whose splits may be empty."""
    x_train, y_train, x_val, y_val, x_test, y_test = splits
    if class_names is not None and len(class_names) > MAX_CLASSES:
        raise UserError(
            f"{where} names {len(class_names):,} classes, beyond cwtool's limit of {MAX_CLASSES:,}: "
            "store one name per class"
        )
    for s, x, y in (("train", x_train, y_train), ("val", x_val, y_val), ("test", x_test, y_test)):
        if len(y) == 0 and not small_classes_ok:
            raise UserError(f"the {s} split of {where} is empty: give more samples or other fractions")
    top = int(np.concatenate([y_train, y_val, y_test]).max())
    if class_names is not None:
        if top >= len(class_names):
            raise UserError(
                f"{where} has label {top} but only {len(class_names)} class name{'s' if len(class_names) != 1 else ''}: "
                "give one name per class index 0..max label"
            )
        num_classes = len(class_names)
    else:
        num_classes = top + 1
        class_names = [str(i) for i in range(num_classes)]
    numbered = class_names == [str(i) for i in range(num_classes)]
    present = np.unique(np.concatenate([y_train, y_val, y_test]))
    if len(present) < min_classes:
        raise UserError(
            f"{where} has only one class (label {int(present[0])}): a classifier needs at least two"
        )
    if min_classes >= 2:
        check_every_class_trained(y_train, {"validation": y_val, "test": y_test}, class_names, f"the train split of {where}")
        preprocessing = _said_empty_classes(preprocessing, present, class_names, numbered, where)
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        class_names=[one_line(n) for n in class_names],  # from files: printed inside console and report lines
        preprocessing=preprocessing,
        given_splits=given_splits,
        seed=seed,
        held_out_origin={"val": "train" if val_from_train else "source" if given_splits else "pool",
                         "test": "source" if given_splits else "pool"},
        label_mapping=dict(label_mapping) if label_mapping is not None else None,
    )
