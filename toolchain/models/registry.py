"""Architectures addressable by name from --arch (timm-style).

The built-ins are tables of name -> "module:Class", imported on first use: listing names imports no torch,
and the modules they name do not import this one (no import cycle). A name is recorded in checkpoints, so only
these tables give names: one registered at run time could not be rebuilt by another process.
"""

from __future__ import annotations

import importlib
from typing import Callable

BUILTINS: dict[str, str] = {
    "digits-cnn": "toolchain.models.architectures:DigitsCNN",
    "fmnist-cnn": "toolchain.models.architectures:FashionCNN",
    "mlp": "toolchain.models.architectures:MLP",
    "tiny-resnet": "toolchain.models.architectures:TinyResNet",
    "tiny-mobilenetv2": "toolchain.models.architectures:TinyMobileNetV2",
    "tiny-concatnet": "toolchain.models.architectures:TinyConcatNet",
}
# The mobile architectures at full scale (pytorchcv definitions, random init; toolchain.models.zoo). A table of
# their own: the tests parametrized over names() run every small built-in at 8x8 in milliseconds, these take
# seconds each at 64 px (tests/test_zoo.py covers them). --arch accepts both tables.
MOBILE: dict[str, str] = {
    "mobilenetv2": "toolchain.models.zoo:mobilenetv2",
    "mobilenetv3-large": "toolchain.models.zoo:mobilenetv3_large",
    "efficientnet-b0": "toolchain.models.zoo:efficientnet_b0",
    "shufflenetv2": "toolchain.models.zoo:shufflenetv2",
    "resnet18": "toolchain.models.zoo:resnet18",
    "resnet50": "toolchain.models.zoo:resnet50",
}


def names(mobile: bool = False) -> list[str]:
    """The small built-ins; with ``mobile``, the mobile architectures too."""
    return sorted({*BUILTINS, *(MOBILE if mobile else ())})


def get(name: str) -> Callable:
    """The class or factory registered as ``name``; KeyError for an unknown name."""
    module, _, attr = (BUILTINS.get(name) or MOBILE[name]).partition(":")
    return getattr(importlib.import_module(module), attr)


def is_registered(name: str) -> bool:
    return name in BUILTINS or name in MOBILE


def create(name: str, **kwargs):
    return get(name)(**kwargs)
