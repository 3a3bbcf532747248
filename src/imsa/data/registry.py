"""The dataset registry: one name per dataset, filled by a decorator in each loader module.

A dataset registers its loader together with its family (which packaged method configs
apply, see :mod:`imsa.data.families`) and the remote files it reads (what
``imsa data download NAME`` fetches); nothing else lists datasets.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataError
from ..registry import Registry
from .checks import check_loaded
from .dataset import Dataset
from .families import check_family, detect_family
from .paths import resolve_data_dir


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset.

    Attributes
    ----------
    name : str
    loader : callable
        ``loader(root, **options) -> Dataset``.
    description : str
    family : str
        The dataset family (``mosi``, ``iemocap4``, ...; see :mod:`imsa.data.families`).
    files : tuple of RemoteFile
        The published files the loader reads (empty: built in).
    """

    name: str
    loader: Callable[..., Dataset]
    description: str
    family: str
    files: tuple = ()

    @property
    def needs_files(self) -> bool:
        return bool(self.files)

    @property
    def options(self) -> dict:
        """Keyword options of the loader with their defaults."""
        params = inspect.signature(self.loader).parameters
        return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


DATASETS: Registry[DatasetEntry] = Registry("dataset", "imsa.data")


def register_dataset(name: str, *, description: str, family: str, files: tuple = ()):
    """Register ``loader(root, **options) -> Dataset`` under ``name`` (duplicates refused).

    Parameters
    ----------
    family : str
        The dataset's family (see :data:`imsa.data.families.FAMILIES`).
    files : tuple of RemoteFile
        The published files it reads; empty for a built-in dataset.
    """
    check_family(family, f"dataset {name}")

    def decorate(loader):
        DATASETS.add(name, DatasetEntry(name, loader, description, family, tuple(files)))
        return loader

    return decorate


def dataset_entry(name: str) -> DatasetEntry:
    return DATASETS[name]


def list_datasets() -> list[DatasetEntry]:
    """The registered datasets (name, description, family, files), in registration order."""
    return DATASETS.entries()


def dataset_family(name: str) -> str | None:
    """The declared family of a registered dataset; None for a path (known once loaded)."""
    return DATASETS[name].family if name in DATASETS else None


# Options every dataset takes, whatever its loader (see load_dataset).
COMMON_OPTIONS = {"family": "", "label_range": [], "shared_videos": "refuse"}


def data_location(name: str, data_dir=None) -> dict:
    """Where ``load_dataset(name, data_dir)`` reads from, as model files record it for ``predict``.

    ``data_dir``: the absolute data root; ``dataset_path``: the absolute path of a dataset
    given by path (relative to the working directory or the data root), so that a model
    finds its data again from any directory.
    """
    root = resolve_data_dir(data_dir).expanduser().resolve()
    location = {"data_dir": str(root)}
    if name not in DATASETS:
        from .formats import resolve_path

        path = resolve_path(name, root)
        if path is not None:
            location["dataset_path"] = str(Path(path).resolve())
    return location


def load_dataset(
    name: str,
    data_dir=None,
    *,
    format: str | None = None,
    family: str | None = None,
    label_range=None,
    shared_videos: str = "refuse",
    **options,
) -> Dataset:
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
    family : str, optional
        The dataset family (which packaged method configs apply). Default: declared by
        the registry, or detected from a file's content (sizes, ids, labels).
    label_range : [low, high], optional
        The scale of regression labels; default the family's ([-3, 3]; CH-SIMS [-1, 1]).
        Labels outside it are refused.
    shared_videos : {"refuse", "allow"}
        A split that divides a video between train, valid and test is refused as
        leakage unless allowed (to reproduce a published split that does so).
    **options
        Loader options (e.g. ``num_videos`` for ``synthetic``); unknown ones are an error.
    """
    if family is not None:
        check_family(family, "the family option")
    if format is not None or name not in DATASETS:
        from .formats import load_file, resolve_path

        path = resolve_path(name, resolve_data_dir(data_dir))
        if path is not None:
            dataset = load_file(path, format=format, **options)
            if family is not None:
                dataset.family, dataset.family_source = family, "given"
            elif not dataset.family and not dataset.family_source:  # a loader may say why there is none
                dataset.family, dataset.family_source = detect_family(dataset)
            check_loaded(dataset, label_range=label_range, shared_videos=shared_videos)
            return dataset
        if format is not None:
            raise DataError(f"{name}: file not found (looked in the working directory and under the data root {resolve_data_dir(data_dir)}).")
    entry = dataset_entry(name)
    from .formats import check_options

    check_options(f"dataset {name}", entry.options, options)
    dataset = entry.loader(resolve_data_dir(data_dir), **options)
    dataset.family, dataset.family_source = (family, "given") if family is not None else (entry.family, "registered")
    check_loaded(dataset, label_range=label_range, shared_videos=shared_videos)
    return dataset
