"""--val FILE / --test FILE: held-out rows the user chose, in place of cwtool's split.

For a model trained elsewhere only the user knows which rows it has not seen. Given files replace
cwtool's validation and/or test split; the rows of --data that cwtool would have put there train
instead. Each file is an .npz with x and y (every row, in file order), preprocessed like --data.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from toolchain.data.dataset import Dataset
from toolchain.data.samples import concat
from toolchain.errors import UserError

__all__ = ["with_given_rows"]


def _rows(path: str, flag: str, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    from toolchain.data.rows import is_pool_npz, load_rows

    if not is_pool_npz(path):
        raise UserError(f"{flag} '{path}' is not an .npz with x and y arrays: save it with numpy.savez(file, x=..., y=...)")
    x, y, _, _ = load_rows(path)
    if tuple(x.shape[1:]) != dataset.input_shape:
        raise UserError(f"{flag} '{path}' has samples of shape {tuple(x.shape[1:])}, --data {dataset.input_shape}: give rows of the same data")
    if len(y) and int(y.max()) >= dataset.num_classes:
        raise UserError(f"{flag} '{path}' has label {int(y.max())}, beyond --data's {dataset.num_classes} classes")
    return x, y


def with_given_rows(dataset: Dataset, val: str | None = None, test: str | None = None) -> Dataset:
    if val is None and test is None:
        return dataset
    parts = {"train": [dataset.split("train")]}
    new = {}
    for name, given, flag in (("val", val, "--val"), ("test", test, "--test")):
        if given is None:
            new[name] = dataset.split(name)
        else:
            new[name] = _rows(given, flag, dataset)
            parts["train"].append(dataset.split(name))  # cwtool's own held-out rows train instead
    x_train = concat([x for x, _ in parts["train"]])  # lazy when the splits are
    y_train = np.concatenate([y for _, y in parts["train"]])
    given = ", ".join(f"{flag} {path}" for flag, path in (("--val", val), ("--test", test)) if path)
    note = f"{dataset.preprocessing.note}; held-out rows from {given}"
    return replace(dataset, x_train=x_train, y_train=y_train, x_val=new["val"][0], y_val=new["val"][1], x_test=new["test"][0],
                   y_test=new["test"][1], given_splits=True, preprocessing=replace(dataset.preprocessing, note=note))
