"""The registered methods as the command line lists them, read without importing torch.

Importing a method module imports torch (1-2 s), which ``imsa --help``, ``imsa run
--help`` and ``imsa methods`` should not wait for. Their names, one-line summaries and
config defaults are written in the method files themselves, so this module reads them
from the source: a class decorated with ``@register_method``, its ``name`` and
``Config``, and the fields of that dataclass with its bases' (a subclass's field keeps
its base's place, as :mod:`dataclasses` orders them). A default that is not a literal
(a constant's name, ``field(...)``) cannot be read without running code; the method is
then imported and listed from its class, so the listing is always the registry's
(``tests/test_first_hour.py`` checks the two agree). Methods of plugins
(:func:`imsa.registry.plugin_modules`) are listed by importing them.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .data.paths import default_cache_dir
from .registry import plugin_modules

METHODS_DIR = Path(__file__).parent / "methods"


@dataclass(frozen=True)
class MethodEntry:
    """A registered method as listed: its name, first docstring line and config defaults."""

    name: str
    summary: str
    defaults: tuple  # (field, repr of the default), in the dataclass's order


@dataclass
class _Class:
    bases: list
    fields: dict  # field -> repr of its default, None where it is not a literal
    doc: str
    attributes: dict  # class attribute -> its expression


def _classes() -> dict[str, _Class]:
    classes = {}
    for path in sorted(METHODS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            fields, attributes = {}, {}
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and "ClassVar" not in ast.unparse(item.annotation):
                    fields[item.target.id] = _literal_repr(item.value)
                elif isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
                    attributes[item.targets[0].id] = item.value
            if any(ast.unparse(d) == "register_method" for d in node.decorator_list):
                attributes["__registered__"] = True
            classes[node.name] = _Class([ast.unparse(b) for b in node.bases], fields, ast.get_docstring(node) or "", attributes)
    return classes


def _literal_repr(node) -> str | None:
    if node is None:
        return repr(dataclasses.MISSING)
    try:
        return repr(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _fields(classes: dict[str, _Class], name: str) -> dict | None:
    """The dataclass fields of class ``name`` with its bases', or None where a base is unknown."""
    if name not in classes:
        return None
    fields = {}
    for base in classes[name].bases:
        if base == "object":
            continue
        inherited = _fields(classes, base)
        if inherited is None:
            return None
        fields.update(inherited)
    fields.update(classes[name].fields)  # an overridden field keeps its base's place
    return fields


def _summary(doc: str) -> str:
    return doc.strip().splitlines()[0] if doc.strip() else ""


@functools.lru_cache(maxsize=1)
def method_entries() -> tuple[MethodEntry, ...]:
    """Every registered method, sorted by name; read from the source where it can be.

    Parsing the method files takes about 50 ms, so the listing is kept in the user cache
    under a key of the imsa version and every method file's size and modification time:
    any change to a method file reads them again.
    """
    if plugin_modules():  # methods outside imsa: only importing them lists them
        return imported_method_entries()
    key = [__version__, *[[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(METHODS_DIR.glob("*.py"))]]
    cache = default_cache_dir() / "method-catalogue.json"
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored["key"] == key:
            return tuple(MethodEntry(e["name"], e["summary"], tuple(map(tuple, e["defaults"]))) for e in stored["methods"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: read the sources
    entries = _read_entries()
    try:
        from .files import atomic_write_text

        atomic_write_text(cache, json.dumps({"key": key, "methods": [dataclasses.asdict(e) for e in entries]}))
    except OSError:
        pass  # a read-only cache: list from the sources every time
    return entries


def _read_entries() -> tuple[MethodEntry, ...]:
    classes = _classes()
    entries = []
    for cls in classes.values():
        if "__registered__" not in cls.attributes:
            continue
        name, config = cls.attributes.get("name"), cls.attributes.get("Config")
        fields = _fields(classes, config.id) if isinstance(config, ast.Name) else None
        if not isinstance(name, ast.Constant) or not isinstance(name.value, str) or fields is None or None in fields.values():
            return imported_method_entries()  # a name or default that only running the module gives
        entries.append(MethodEntry(name.value, _summary(cls.doc), tuple(fields.items())))
    return tuple(sorted(entries, key=lambda e: e.name))


def imported_method_entries() -> tuple[MethodEntry, ...]:
    """The same listing from the imported registry (imports every method, and torch)."""
    from .methods import list_methods, method_class

    entries = []
    for name in list_methods():
        cls = method_class(name)
        defaults = tuple((f.name, repr(f.default)) for f in dataclasses.fields(cls.Config))
        entries.append(MethodEntry(name, _summary(cls.__doc__ or ""), defaults))
    return tuple(entries)


def method_names() -> list[str]:
    """The registered method names, sorted."""
    return [entry.name for entry in method_entries()]
