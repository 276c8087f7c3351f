"""The last step of every --data source: six split arrays and class names -> a checked `Dataset`."""

from __future__ import annotations

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
) -> Dataset:
    """Check what no source may break (names cover the labels, no split empty, two classes at
    least, or ``min_classes``) and build the `Dataset`; without ``class_names`` the classes are named by number.
    ``val_from_train``: validation was carved with ``seed`` from the source's own train split (its test split is its own)."""
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
    if len(present) < min_classes:
        raise UserError(
            f"{where} has only one class (label {int(present[0])}): a classifier needs at least two"
        )
    if min_classes >= 2:
        check_every_class_trained(y_train, {"validation": y_val, "test": y_test}, class_names, f"the train split of {where}")
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
