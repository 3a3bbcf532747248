"""The dataset registry: one name per dataset, filled by a decorator in each loader module."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ..errors import DataError, unknown_name
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


def load_dataset(name: str, data_dir=None, *, format: str | None = None, **options) -> Dataset:
    """Load a registered dataset, or a user's file in one of the published formats.

    Parameters
    ----------
    name : str or path
        Registry name (see ``imsa data list``), or the path of a file or folder in a
        published format (MMSA, MulT, MAG, GCNet; see :mod:`imsa.data.formats`),
        relative to the working directory or to the data root.
    data_dir : path, optional
        Data root; defaults to ``$IMSA_DATA`` or the user cache.
    format : str, optional
        The file format of a path; detected from the file when omitted and unambiguous.
    **options
        Loader options (e.g. ``num_videos`` for ``synthetic``); unknown ones are an error.
    """
    _import_loaders()
    if format is not None or name not in _DATASETS:
        from .formats import load_file, resolve_path

        path = resolve_path(name, resolve_data_dir(data_dir))
        if path is not None:
            return load_file(path, format=format, **options)
        if format is not None:
            raise DataError(f"{name}: file not found (looked in the working directory and under the data root {resolve_data_dir(data_dir)}).")
    entry = dataset_entry(name)
    from .formats import check_options

    check_options(f"dataset {name}", entry.options, options)
    return entry.loader(resolve_data_dir(data_dir), **options)


def _import_loaders():
    # Importing the loader modules fills the registry.
    from . import iemocap_text, mosi_bclstm, mosi_transcripts, synthetic  # noqa: F401
