"""The method registry: filled by ``@register_method`` in each method module (found by
:class:`imsa.registry.Registry`, no list to edit); the CLI, grids and docs read it."""

from __future__ import annotations

from ..registry import Registry

METHODS: Registry[type] = Registry("method", "imsa.methods")


def register_method(cls):
    """Class decorator: register ``cls`` under ``cls.name`` (duplicates refused)."""
    return METHODS.add(cls.name, cls)


def method_class(name: str) -> type:
    return METHODS[name]


def list_methods() -> list[str]:
    """The names of the registered methods (plugins included), sorted."""
    return METHODS.names()


def create_method(name: str, config=None, **overrides):
    """Build the registered method ``name`` with its config (defaults updated by ``config``/``overrides``)."""
    return method_class(name)(config, **overrides)
