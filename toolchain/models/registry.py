"""A registry of built-in architectures, addressable by name from --arch (timm-style)."""

from __future__ import annotations

from typing import Callable

_REGISTRY: dict[str, Callable] = {}


def register(name: str):
    """Class or factory decorator: ``@register("digits-cnn")``."""

    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> Callable:
    _load_builtins()
    return _REGISTRY[name]


def is_registered(name: str) -> bool:
    _load_builtins()
    return name in _REGISTRY


def create(name: str, **kwargs):
    return get(name)(**kwargs)


def _load_builtins() -> None:
    # Importing the module runs its @register decorators; deferred so the registry stays torch-free.
    import toolchain.models.architectures  # noqa: F401
