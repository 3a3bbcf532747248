"""The dataset registry: one name per dataset, filled by a decorator in each loader module."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError, invalid_parameter, unknown_name
from .dataset import Dataset
from .paths import resolve_data_dir


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., Dataset]
    description: str
    needs_files: bool

    @property
    def options(self) -> dict:
        """Keyword options of the loader with their defaults."""
        params = inspect.signature(self.loader).parameters
        return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, description: str, needs_files: bool = True):
    """Register ``loader(root, **options) -> Dataset`` under ``name`` (duplicates refused)."""

    def decorate(loader):
        if name in _DATASETS:
            raise RuntimeError(f"dataset {name!r} registered twice")
        _DATASETS[name] = DatasetEntry(name, loader, description, needs_files)
        return loader

    return decorate


def dataset_entry(name: str) -> DatasetEntry:
    _import_loaders()
    if name not in _DATASETS:
        raise unknown_name("dataset", name, _DATASETS)
    return _DATASETS[name]


def list_datasets() -> list[DatasetEntry]:
    _import_loaders()
    return [_DATASETS[k] for k in sorted(_DATASETS)]


def load_dataset(name: str, data_dir=None, **options) -> Dataset:
    """Load a registered dataset.

    Parameters
    ----------
    name : str
        Registry name (see ``imsa data list``).
    data_dir : path, optional
        Data root; defaults to ``$IMSA_DATA`` or the user cache.
    **options
        Loader options (e.g. ``num_videos`` for ``synthetic``); unknown ones are an error.
    """
    entry = dataset_entry(name)
    valid = entry.options
    for key, value in options.items():
        if key not in valid:
            raise ConfigError(f"Unknown option {key!r} for dataset {name}. Valid options: {', '.join(sorted(valid)) or 'none'}.")
        default = valid[key]
        if default is not None and not isinstance(value, type(default)) and not (isinstance(default, float) and isinstance(value, int)):
            raise invalid_parameter(key, f"dataset {name}", f"of type {type(default).__name__}", value)
    return entry.loader(resolve_data_dir(data_dir), **options)


def _import_loaders():
    # Importing the loader modules fills the registry.
    from . import mosi_bclstm, synthetic  # noqa: F401
