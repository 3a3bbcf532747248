"""Published file formats: one loader per format, chosen by name or detected from the file.

Every format module (``mmsa``, ``mult``, ``mag``, ``gcnet``) registers its loader with
:func:`register_format`, together with a test that recognises the format's content.
:func:`load_file` reads a user's file (or folder) with the named format, or detects the
format when exactly one test recognises it; ``imsa run --dataset PATH [--format F]`` and
``load_dataset(PATH, format=F)`` go through it. Pickles are read once, with the
restricted unpickler of :mod:`imsa.data.safe_pickle`, and handed to the loader.

This module also holds the small helpers that the format modules share: checks that
name the file and the key, utterance-id parsing, and padding of sequences.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, did_you_mean, invalid_parameter
from ..files import sha256_file
from ..registry import Registry
from .dataset import Dataset
from .safe_pickle import load_pickle

logger = logging.getLogger(__name__)

# Registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FormatEntry:
    """One file format.

    Attributes
    ----------
    name : str
        Format name, as given to ``--format``.
    loader : callable
        ``loader(path, content, **options) -> Dataset``; ``content`` is the unpickled
        object for a pickle file, None for a folder.
    detect : callable
        ``detect(path, content) -> bool``: whether the content looks like this format.
    description : str
    """

    name: str
    loader: Callable[..., Dataset]
    detect: Callable[[Path, Any], bool]
    description: str

    @property
    def options(self) -> dict:
        """Keyword options of the loader with their defaults."""
        params = inspect.signature(self.loader).parameters
        return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}


FORMATS: Registry[FormatEntry] = Registry("format", "imsa.data")


def register_format(name: str, *, description: str, detect: Callable[[Path, Any], bool]):
    """Register ``loader(path, content, **options) -> Dataset`` as format ``name``."""

    def decorate(loader):
        FORMATS.add(name, FormatEntry(name, loader, detect, description))
        return loader

    return decorate


def list_formats() -> list[FormatEntry]:
    """The registered formats, sorted by name."""
    return FORMATS.entries()


def format_entry(name: str) -> FormatEntry:
    return FORMATS[name]


def _read_content(path: Path):
    """The unpickled object of a file (through the restricted unpickler), None for a folder."""
    if path.is_dir():
        return None
    return load_pickle(path)


def detect_format(path: str | os.PathLike, content=None) -> str:
    """Name the format of ``path`` when exactly one registered format recognises it.

    Raises
    ------
    DataError
        If no format, or more than one, recognises the file; the message lists the
        formats and says to pass ``--format``.
    """
    path = Path(path)
    if content is None and not path.is_dir():
        content = _read_content(path)
    matches = [e.name for e in list_formats() if e.detect(path, content)]
    names = ", ".join(FORMATS.names())
    if not matches:
        raise DataError(f"{path}: not recognised as any known format ({names}). Name the format with --format (or format=...).")
    if len(matches) > 1:
        raise DataError(f"{path}: could be any of the formats {', '.join(matches)}. Name the format with --format (or format=...).")
    return matches[0]


def check_options(owner: str, valid: dict, options: dict) -> None:
    """Refuse unknown options and options of the wrong type; the message lists the valid ones."""
    for key, value in options.items():
        if key not in valid:
            raise ConfigError(f"Unknown option {key!r} for {owner}.{did_you_mean(key, valid)} Valid options: {', '.join(sorted(valid)) or 'none'}.")
        default = valid[key]
        if default is not None and not isinstance(value, type(default)) and not (isinstance(default, float) and isinstance(value, int)):
            raise invalid_parameter(key, owner, f"of type {type(default).__name__}", value)


def resolve_path(name: str | os.PathLike, root: Path | None = None) -> Path | None:
    """``name`` as an existing file or folder: as given, else under the data root; None if neither."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if root is not None and not path.is_absolute() and (root / path).exists():
        return root / path
    return None


def load_file(path: str | os.PathLike, format: str | None = None, **options) -> Dataset:
    """Load a user's file or folder in one of the published formats.

    Parameters
    ----------
    path : path
        A pickle (MMSA, MulT, MAG) or a GCNet label pickle / folder.
    format : str, optional
        ``"mmsa"``, ``"mult"``, ``"mag"`` or ``"gcnet"``; detected from the content when
        omitted and unambiguous.
    **options
        Options of that format's loader (see ``docs/datasets.md``); unknown ones are an error.

    Raises
    ------
    DataError
        If the file is missing, unsafe, of another format, or inconsistent.
    ConfigError
        If the format or an option is unknown.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    if format is not None:
        entry = format_entry(format)  # an unknown format fails before the file is read
        check_options(f"format {entry.name}", entry.options, options)
        content = _read_content(path)
        if not entry.detect(path, content):
            # A file of another format is named as such; otherwise the loader says which key is wrong.
            other = [e.name for e in list_formats() if e.name != entry.name and e.detect(path, content)]
            if other:
                raise DataError(
                    f"{path}: does not hold the {entry.name} format ({entry.description}); it looks like the {other[0]} format: use --format {other[0]}."
                )
    else:
        content = _read_content(path)
        entry = format_entry(detect_format(path, content))
        check_options(f"format {entry.name}", entry.options, options)
    return entry.loader(path, content, **options)


# Shared helpers ------------------------------------------------------------------------


def file_checksum(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` for a dataset's provenance."""
    return {path.name: sha256_file(path)}


def require_samples(count: int, where: str, split: str) -> None:
    """Refuse a split of a file with no samples: nothing could be trained, selected or scored on it."""
    if count == 0:
        raise DataError(f"{where}: the {split} split has no samples; every split needs utterances. Check how the file was made.")


def require_keys(mapping, keys: Sequence[str], where: str, fix: str = "") -> None:
    """Refuse a mapping that lacks any of ``keys``; the message names the file and the key."""
    if not isinstance(mapping, Mapping):
        raise DataError(f"{where}: expected a dict, found {type(mapping).__name__}. {fix}".strip())
    for key in keys:
        if key not in mapping:
            present = ", ".join(sorted(map(str, mapping))) or "none"
            raise DataError(f"{where}: missing key {key!r} (keys present: {present}). {fix}".strip())


def as_array(value, where: str, ndim: int | tuple[int, ...], rows: int | None = None, dtype=np.float32) -> np.ndarray:
    """``value`` as an array of the expected rank and row count, else a DataError naming ``where``."""
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: not a numeric array ({e}).") from None
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in ranks:
        raise DataError(f"{where}: shape {array.shape}, expected {' or '.join(f'{r} dimensions' for r in ranks)}.")
    if rows is not None and len(array) != rows:
        raise DataError(f"{where}: {len(array)} rows, expected {rows} (one per sample); the arrays of this split are inconsistent.")
    return array


def text(value) -> str:
    """A str from str, bytes or a numpy scalar of either."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


_BRACKET = re.compile(r"^(.*)\[(\w+)\]$")


def split_utterance_id(value) -> tuple[str, str]:
    """``(utterance id, video id)`` of an id as the formats write them.

    ``"video$_$clip"`` (MMSA), ``"video[clip]"``, ``("video", clip, ...)`` (MulT rows) or
    ``"video_clip"`` (GCNet, IEMOCAP ``Ses01F_impro01_F000``); an id without any of these
    is its own video.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [text(v).strip() for v in value]
        if not parts:
            raise DataError("empty utterance id")
        return "_".join(parts), parts[0]
    name = text(value).strip()
    if "$_$" in name:
        return name, name.split("$_$", 1)[0]
    match = _BRACKET.match(name)
    if match:
        return name, match.group(1)
    if "_" in name:
        return name, name.rsplit("_", 1)[0]
    return name, name


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def group_by_video(utterances: Sequence[str], videos: Sequence[str]) -> np.ndarray:
    """Order that makes each video's utterances contiguous (videos in first-seen order,
    utterances within a video in natural order of their ids)."""
    first: dict[str, int] = {}
    for i, v in enumerate(videos):
        first.setdefault(v, i)
    return np.asarray(sorted(range(len(utterances)), key=lambda i: (first[videos[i]], _natural_key(utterances[i]))), dtype=np.int64)


def split_qualified_videos(split_videos: dict[str, list[str]]) -> dict[str, list[str]]:
    """Video ids per split, prefixed with the split where a video appears in several splits.

    A :class:`Fold` assigns whole videos to splits; a published split that divides one
    video's clips between splits keeps its exact membership this way.
    """
    owners: dict[str, set[str]] = {}
    for split, videos in split_videos.items():
        for v in videos:
            owners.setdefault(v, set()).add(split)
    shared = {v for v, s in owners.items() if len(s) > 1}
    return {split: [f"{split}/{v}" if v in shared else v for v in videos] for split, videos in split_videos.items()}


def pad_sequences(rows: Sequence[np.ndarray], where: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``(T_i, D)`` arrays into a zero-padded ``(N, T, D)`` array and ``(N,)`` lengths."""
    lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
    dims = {r.shape[1] for r in rows if r.ndim == 2}
    if dim is not None:
        dims.add(dim)
    if len(dims) != 1 or any(r.ndim != 2 for r in rows):
        raise DataError(f"{where}: rows have different feature sizes or ranks ({sorted(dims)}); expected one (n, D) array per sample.")
    d = dims.pop()
    out = np.zeros((len(rows), max(int(lengths.max(initial=0)), 1), d), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, np.maximum(lengths, 1)


def zero_padding(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``x`` (N, T, D) with every step at or beyond its length set to 0."""
    steps = np.arange(x.shape[1])[None, :] < lengths[:, None]
    return np.where(steps[..., None], x, np.float32(0)).astype(np.float32, copy=False)


def published_split(path: Path, utterances: Sequence[str], videos: Sequence[str], splits: Sequence[str]):
    """Order, video ids and the one :class:`Fold` of a file that lists samples split by split.

    Parameters
    ----------
    utterances, videos, splits : sequence of str
        Per sample in file order: its utterance id, video id and split
        (``train``/``valid``/``test``).

    Returns
    -------
    order : ndarray
        (N,) indices that make each video's utterances contiguous.
    video_ids : list of str
        Per ordered sample; a video divided between splits is qualified by the split.
    fold : Fold
    utterance_ids : list of str
        Per ordered sample; a repeated id is numbered (``id#2``).
    """
    from .dataset import SPLITS, Fold

    qualified = split_qualified_videos({s: [v for v, sp in zip(videos, splits) if sp == s] for s in SPLITS})
    cursor = {s: iter(qualified[s]) for s in SPLITS}
    video_of = [next(cursor[s]) for s in splits]
    utterances = _unique(path, utterances)
    order = group_by_video(utterances, video_of)
    fold_videos: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i in order:
        v = video_of[i]
        if not fold_videos[splits[i]] or fold_videos[splits[i]][-1] != v:
            fold_videos[splits[i]].append(v)
    return order, [video_of[i] for i in order], Fold(**{s: tuple(fold_videos[s]) for s in SPLITS}), [utterances[i] for i in order]


def _unique(path: Path, utterances: Sequence[str]) -> list[str]:
    """Utterance ids made unique: a repeated id gets ``#2``, ``#3``, ... (with a warning)."""
    count: dict[str, int] = {}
    out = []
    for u in utterances:
        count[u] = count.get(u, 0) + 1
        out.append(u if count[u] == 1 else f"{u}#{count[u]}")
    repeated = [u for u, k in count.items() if k > 1]
    if repeated:
        logger.warning("%s: %d utterance ids occur more than once (e.g. %r); repeats are numbered %r.", path, len(repeated), repeated[0], f"{repeated[0]}#2")
    return out
