"""The in-memory dataset every stage works on, and the record of how it was preprocessed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Preprocessing:
    """How raw samples were turned into model inputs, so exported models can be fed the same way.

    A model input is ``((raw * scale) - mean) / std`` laid out as ``layout``; ``mean``/``std`` are
    per-feature (tabular) or per-channel (images) lists, empty when not applied.
    """

    scale: float = 1.0
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    layout: str = "NCHW"  # "NCHW" for images, "NC" for feature vectors
    note: str = ""  # "; "-joined, e.g. "uint8 images scaled by 1/255; labels: a=0, b=1 (...)"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Dataset:
    """Arrays as the model sees them (float32 inputs, int64 labels), split three ways.

    ``given_splits`` is True when the source defined the splits itself (an .npz with x_train...,
    or a set with a fixed train/test split); False when cwtool split one pool with a seed.
    ``label_mapping`` is {label as written in the source: class index} for sources whose labels
    are strings (a CSV label column, ImageFolder folder names); None where labels are indices.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    preprocessing: Preprocessing
    given_splits: bool = False
    seed: int = 0
    label_mapping: dict[str, int] | None = None

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of one split: "train", "val", "test", or "all" (every row, in that order)."""
        if name == "all":
            return (
                np.concatenate([self.x_train, self.x_val, self.x_test]),
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
        }
