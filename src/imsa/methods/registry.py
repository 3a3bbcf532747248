"""The method registry: filled by ``@register_method`` in each method module; the CLI,
grids and docs read it. There is no other list of method names."""

from __future__ import annotations

from ..errors import unknown_name

_METHODS: dict[str, type] = {}


def register_method(cls):
    """Class decorator: register ``cls`` under ``cls.name`` (duplicates refused)."""
    if not cls.name:
        raise RuntimeError(f"{cls.__qualname__} has no name")
    if cls.name in _METHODS:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type:
    _import_methods()
    if name not in _METHODS:
        raise unknown_name("method", name, _METHODS)
    return _METHODS[name]


def list_methods() -> list[str]:
    _import_methods()
    return sorted(_METHODS)


def create_method(name: str, config=None, **overrides):
    """Build the registered method ``name`` with its config (defaults updated by ``config``/``overrides``)."""
    return method_class(name)(config, **overrides)


def _import_methods():
    # Importing the method modules fills the registry.
    from . import cmad, early_fusion, late_fusion, momke  # noqa: F401
