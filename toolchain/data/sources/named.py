"""The --data sets named by a word: ``digits`` and ``breast-cancer`` (bundled with scikit-learn,
imported only when one is asked for) and ``fashion-mnist`` (the Debian package
``dataset-fashion-mnist``, read as an idx folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.data.assemble import assemble_dataset
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.labels import agree_names, mapping_note
from toolchain.data.sources.idx_folder import find_idx_files, load_idx_folder
from toolchain.data.splits import split_pool
from toolchain.errors import IMPORT_FAILURES, UserError, import_failed, is_not_installed

__all__ = ["FASHION_MNIST_DIR", "load_breast_cancer", "load_digits", "load_fashion_mnist"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _sklearn_datasets(spec: str):
    try:
        from sklearn import datasets  # lazy: not on devices
    except IMPORT_FAILURES as exc:
        if not is_not_installed(exc, "sklearn"):  # there, but it does not load (a library it maps, memory): not "not installed"
            raise UserError(f"--data {spec}: {import_failed(exc, 'sklearn', 'scikit-learn', 'pip install scikit-learn')}") from exc
        raise UserError(
            f"--data {spec} needs scikit-learn, which is not installed: run `pip install scikit-learn` "
            '(or `pip install "cwtool[compress]"`), or give a .npz, .csv, idx or ImageFolder dataset'
        ) from None
    return datasets


def load_digits(seed: int, fr: tuple[float, float], given: list[str] | None = None) -> Dataset:
    d = _sklearn_datasets("digits").load_digits()
    x = d.data.reshape(-1, 1, 8, 8).astype(np.float32) * np.float32(1 / 16)
    y = d.target.astype(np.int64)
    names = given if given is not None else [str(i) for i in range(10)]
    note = "sklearn load_digits, pixels 0..16 scaled by 1/16"
    if given is not None:
        note += "; " + mapping_note(names, "digit labels, named by --class-names")
    pre = Preprocessing(scale=1 / 16, layout="NCHW", note=note)
    return assemble_dataset(
        "digits", split_pool(x, y, seed, fr, names, "digits"), pre,
        where="digits", class_names=names, given_splits=False, seed=seed,
    )


def load_breast_cancer(seed: int, fr: tuple[float, float], given: list[str] | None = None) -> Dataset:
    d = _sklearn_datasets("breast-cancer").load_breast_cancer()
    x_raw = np.asarray(d.data, dtype=np.float64)
    y = d.target.astype(np.int64)
    names = [str(n) for n in d.target_names]  # ["malignant", "benign"]: target 0 = malignant
    names = agree_names(names, given, "breast-cancer")
    xtr, ytr, xva, yva, xte, yte = split_pool(x_raw, y, seed, fr, names, "breast-cancer")
    mean = xtr.mean(axis=0)
    std = xtr.std(axis=0)
    std[std == 0] = 1.0

    def norm(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    pre = Preprocessing(
        scale=1.0,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        layout="NC",
        note="sklearn load_breast_cancer, standardized with the train split's mean/std; "
        + mapping_note(names, "fixed by scikit-learn"),
    )
    return assemble_dataset(
        "breast-cancer", (norm(xtr), ytr, norm(xva), yva, norm(xte), yte), pre,
        where="breast-cancer", class_names=names, given_splits=False, seed=seed,
    )


def load_fashion_mnist(seed: int, val_fraction: float, given: list[str] | None = None) -> Dataset:
    """The Debian package's idx files: its t10k split is the test split, validation is carved from train."""
    if not find_idx_files(FASHION_MNIST_DIR):
        raise UserError(
            f"Fashion-MNIST is not installed (no idx files in {FASHION_MNIST_DIR}): "
            "run `apt-get install dataset-fashion-mnist` or pass a folder of idx files"
        )
    return load_idx_folder(FASHION_MNIST_DIR, seed, val_fraction, name="fashion-mnist", given=given, fashion_mnist=True)
