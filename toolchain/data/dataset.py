"""The dataset every stage works on, and the record of how it was preprocessed.

A split's inputs are a float32 array or, for large sources, rows read on demand (`toolchain.data.samples`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from toolchain.data.samples import Samples, concat, is_lazy

SPLITS = ("train", "val", "test")


@dataclass
class Preprocessing:
    """How raw samples were turned into model inputs, so exported models can be fed the same way.

    A model input is ``((raw * scale) - mean) / std`` laid out as ``layout``; ``mean``/``std`` are
    per-feature (tabular) or per-channel (images) lists, empty when not applied. Image files are first
    decoded to ``color`` ("L" or "RGB"), resized (``resize``: [h, w] exactly, or [s] the shorter side to s
    keeping the aspect; empty: not resized) with ``interpolation`` and center-cropped to ``crop`` [h, w]
    (empty: no crop); those fields are empty for sources that are arrays already.
    """

    scale: float = 1.0
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    layout: str = "NCHW"  # "NCHW" for images, "NC" for feature vectors
    note: str = ""  # "; "-joined, e.g. "uint8 images scaled by 1/255; labels: a=0, b=1 (...)"
    color: str = ""
    resize: list[int] = field(default_factory=list)
    crop: list[int] = field(default_factory=list)
    interpolation: str = ""
    columns: list[str] = field(default_factory=list)  # a CSV's feature columns in order: features are read by position

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Augment:
    """Training augmentation (train split, training only; never evaluation, calibration or the gate): a random
    resized crop (a share of the area in ``crop_scale``, an aspect ratio in ``crop_ratio``, resized back to the
    input size, bilinear) and/or a horizontal flip with probability 1/2, drawn per sample from the training seed."""

    crop_scale: tuple[float, float] | None = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def to_dict(self) -> dict:
        return {"random_resized_crop": None if self.crop_scale is None else {"scale": list(self.crop_scale), "ratio": list(self.crop_ratio)},
                "horizontal_flip": self.flip}


@dataclass
class Dataset:
    """Arrays as the model sees them (float32 inputs, int64 labels), split three ways.

    ``given_splits`` is True when the source defined the splits itself (an .npz with x_train...,
    or a set with a fixed train/test split); False when cwtool split one pool with a seed.
    ``label_mapping`` is {label as written in the source: class index} for sources whose labels
    are strings (a CSV label column, ImageFolder folder names); None where labels are indices.
    ``augment`` and ``workers`` say how training reads the train split (augmentation, DataLoader worker
    processes for inputs read on demand; None: chosen by `toolchain.models.batches`).
    """

    name: str
    x_train: np.ndarray | Samples
    y_train: np.ndarray
    x_val: np.ndarray | Samples
    y_val: np.ndarray
    x_test: np.ndarray | Samples
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    preprocessing: Preprocessing
    given_splits: bool = False
    seed: int = 0
    label_mapping: dict[str, int] | None = None
    augment: Augment | None = None
    workers: int | None = None
    held_out_from: dict[str, str] | None = None  # {"val"/"test": the --val/--test path} where the user gave those rows
    # {"val"/"test": where its rows came from}: "pool" (cwtool split the source's rows with ``seed``), "train" (carved from
    # the source's own train split with ``seed``), "source" (the source's own split), "given" (--val/--test); None: an older
    # record, read from ``given_splits``
    held_out_origin: dict[str, str] | None = None

    def split(self, name: str) -> tuple[np.ndarray | Samples, np.ndarray]:
        """(x, y) of one split: "train", "val", "test", or "all" (every row, in that order; lazy when the
        splits are)."""
        if name == "all":
            return (
                concat([self.x_train, self.x_val, self.x_test]),
                np.concatenate([self.y_train, self.y_val, self.y_test]),
            )
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (without the batch dimension)."""
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
            "sizes": {s: int(len(self.split(s)[1])) for s in SPLITS},
            "given_splits": self.given_splits,
            "seed": self.seed,
            "preprocessing": self.preprocessing.to_dict(),
            "label_mapping": self.label_mapping,
            **({"held_out_from": self.held_out_from} if self.held_out_from else {}),
            **({"held_out_origin": self.held_out_origin} if self.held_out_origin else {}),
            "streamed": is_lazy(self.x_train),
            "augment": self.augment.to_dict() if self.augment else None,
        }
