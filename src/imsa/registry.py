"""The one registry type behind methods, datasets, file formats and text sources.

A registry maps names to entries. Entries are added by a decorator in the module that
defines them, and the registry finds those modules itself: on first use it imports every
module of its package, so adding a method, dataset or format is one new file and nothing
else to edit. A file outside imsa registers the same way, named in ``$IMSA_PLUGINS`` or by
an ``imsa.plugins`` entry point (:func:`plugin_modules`). Duplicate names are refused; an
unknown name is an error that lists the valid ones.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, unknown_name

T = TypeVar("T")

PLUGINS_VAR = "IMSA_PLUGINS"
PLUGIN_GROUP = "imsa.plugins"


@functools.cache  # read once per process: every registry's discovery and the CLI's listing ask
def plugin_modules() -> tuple[str, ...]:
    """Modules outside imsa that register methods, datasets or formats of their own.

    ``$IMSA_PLUGINS`` (module names separated by commas, importable from ``sys.path``),
    and the entry points of the ``imsa.plugins`` group of installed packages
    (``[project.entry-points."imsa.plugins"] mine = "my_package.my_method"``). Worker
    processes of grids and tuning inherit the variable, so they find the same entries.
    """
    from importlib.metadata import entry_points

    names = [n.strip() for n in os.environ.get(PLUGINS_VAR, "").split(",") if n.strip()]
    names += [e.value for e in entry_points(group=PLUGIN_GROUP)]
    return tuple(dict.fromkeys(names))


def import_plugins() -> None:
    """Import every plugin module (once each; Python caches modules), naming one that fails."""
    for name in plugin_modules():
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"Plugin module {name!r} (from ${PLUGINS_VAR} or an imsa.plugins entry point) cannot be imported: {e}.") from None


class Registry(Generic[T]):
    """Names to entries of one kind, filled by the modules of ``package``.

    Parameters
    ----------
    kind : str
        What an entry is, for error messages (``"method"``, ``"dataset"``, ...).
    package : str
        Dotted name of the package whose modules register entries when imported.
    """

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}
        self._discovered = False

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name registered twice is a bug, refused."""
        if not name:
            raise RuntimeError(f"a {self.kind} needs a name")
        if name in self._entries:
            raise RuntimeError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def discover(self) -> None:
        """Import every module of the package once, and the plugins (:func:`plugin_modules`),
        so that their decorators register."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")
        import_plugins()

    def __getitem__(self, name: str) -> T:
        self.discover()
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.discover()
        return len(self._entries)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self.discover()
        return sorted(self._entries)

    def entries(self) -> list[T]:
        """Every entry, sorted by name."""
        return [self._entries[name] for name in self.names()]
