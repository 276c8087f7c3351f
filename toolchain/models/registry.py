"""Architectures addressable by name from --arch (timm-style).

The built-ins are a table of name -> "module:Class", imported on first use: listing names imports no torch,
and the architectures module does not import this one (no import cycle). `register` adds more at run time.
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
_added: dict[str, Callable] = {}  # registered at run time; a name here wins over a built-in


def register(name: str):
    """Class or factory decorator: ``@register("my-net")``."""

    def wrap(factory):
        _added[name] = factory
        return factory

    return wrap


def names() -> list[str]:
    return sorted({*BUILTINS, *_added})


def get(name: str) -> Callable:
    """The class or factory registered as ``name``; KeyError for an unknown name."""
    if name in _added:
        return _added[name]
    module, _, attr = BUILTINS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def is_registered(name: str) -> bool:
    return name in _added or name in BUILTINS


def create(name: str, **kwargs):
    return get(name)(**kwargs)
