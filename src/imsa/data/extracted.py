"""The folder ``imsa extract`` writes, read as a dataset (format ``extracted``).

Files (see the media tutorial for their columns):

* ``features.npz``: plain arrays (no pickles): ``utterance_ids``, ``video_ids``, ``present``
  ``(N, 3)`` (text, audio, visual as extraction decided them), utterance vectors
  ``vectors_<m>``, sequences ``sequence_<m>`` with ``lengths_<m>``;
* ``utterances.csv``: ``utterance_id, video_id, media, start, end, text, label, split``
  (labels may be added or edited here);
* ``missingness.csv``: every segment, also those with nothing present, and why a modality
  is missing;
* ``extraction.json``: the extraction configuration (recorded in every model trained on
  the folder, so that ``imsa predict --media`` extracts new media the same way).

Modalities a segment lacks at the source stay missing under every protocol: the dataset
carries the ``present`` mask as the ``source_present`` annotation, which batches apply on
top of the protocol's masks. Folds: one fold from the ``split`` column when every
utterance has one, else ``folds`` folds grouped by video (test fold k, valid fold k+1);
without labels (a prediction-only folder), one fold that tests every video.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import SOURCE_PRESENT, SPLITS, Dataset, Fold
from .formats import file_checksum, register_format

FEATURES_FILE = "features.npz"
UTTERANCES_FILE = "utterances.csv"
MISSINGNESS_FILE = "missingness.csv"
EXTRACTION_FILE = "extraction.json"
MODALITIES = ("l", "a", "v")
UTTERANCE_COLUMNS = ("utterance_id", "video_id", "media", "start", "end", "text", "label", "split")
MISSINGNESS_COLUMNS = ("utterance_id", "video_id", "start", "end", "text", "audio", "visual", "reason")
FEATURE_KINDS = ("sequences", "vectors")


def _is_extracted(path: Path, content) -> bool:
    return path.is_dir() and (path / EXTRACTION_FILE).is_file()


def grouped_folds(videos: list[str], count: int, seed: int) -> list[Fold]:
    """``count`` folds over shuffled videos: fold k tests group k, validates on group k+1, trains on the rest."""
    order = [videos[i] for i in np.random.default_rng(seed).permutation(len(videos))]
    groups = [tuple(sorted(g)) for g in np.array_split(np.asarray(order, dtype=object), count)]
    folds = []
    for k in range(count):
        valid = (k + 1) % count
        train = tuple(sorted(v for j, g in enumerate(groups) if j not in (k, valid) for v in g))
        folds.append(Fold(train=train, valid=groups[valid], test=groups[k]))
    return folds


def _labels(path: Path, rows: list[dict]) -> tuple[np.ndarray, str, tuple | None, bool]:
    values = [r["label"].strip() for r in rows]
    given = [v for v in values if v]
    if not given:
        return np.zeros(len(rows), np.float32), "regression", None, False
    if len(given) != len(values):
        missing = [r["utterance_id"] for r, v in zip(rows, values) if not v]
        raise DataError(
            f"{path}: {len(missing)} utterance(s) have no label, e.g. {', '.join(missing[:3])}; label every utterance or none (for prediction only)."
        )
    try:
        return np.asarray([float(v) for v in values], np.float32), "regression", None, True
    except ValueError:
        names = tuple(sorted(set(values)))
        return np.asarray([names.index(v) for v in values], np.int64), "classification", names, True


def _folds(path: Path, rows: list[dict], videos: list[str], folds: int, fold_seed: int) -> list[Fold]:
    splits = [r["split"].strip() for r in rows]
    if all(splits):
        by_split: dict[str, set] = {s: set() for s in SPLITS}
        for row, split in zip(rows, splits):
            if split not in SPLITS:
                raise DataError(f"{path}: utterance {row['utterance_id']} has split {split!r}; valid splits: {', '.join(SPLITS)}.")
            by_split[split].add(row["video_id"])
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            shared = by_split[a] & by_split[b]
            if shared:
                raise DataError(f"{path}: video {sorted(shared)[0]} has utterances in both {a} and {b}; a video's utterances belong to one split.")
        return [Fold(*(tuple(sorted(by_split[s])) for s in SPLITS))]
    unique = sorted(set(videos))
    if len(unique) < 3:
        raise DataError(
            f"{path}: {len(unique)} video(s); folds grouped by video need at least 3 (train, valid, test). Add a split column to {UTTERANCES_FILE}."
        )
    return grouped_folds(unique, min(folds, len(unique)), fold_seed)


@register_format("extracted", description="a folder written by imsa extract (features.npz, utterances.csv, extraction.json)", detect=_is_extracted)
def load_extracted(path: Path, content, *, features: str = "vectors", folds: int = 5, fold_seed: int = 0) -> Dataset:
    """Read an ``imsa extract`` folder: ``features`` picks utterance vectors (default) or time sequences."""
    if features not in FEATURE_KINDS:
        raise DataError(f"{path}: features={features!r}; choose one of {', '.join(FEATURE_KINDS)}.")
    try:
        extraction = json.loads((path / EXTRACTION_FILE).read_text())
        with np.load(path / FEATURES_FILE, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        with open(path / UTTERANCES_FILE, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError as e:
        raise DataError(f"{path}: {Path(e.filename).name} is missing; run imsa extract again into this folder.") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable extraction ({e}); run imsa extract again into this folder.") from None
    ids = [str(u) for u in arrays["utterance_ids"]]
    if [r.get("utterance_id") for r in rows] != ids:
        raise DataError(f"{path}: {UTTERANCES_FILE} does not list the utterances of {FEATURES_FILE} in the same order; restore it or run imsa extract again.")
    labels, task, class_names, labelled = _labels(path / UTTERANCES_FILE, rows)
    videos = [str(v) for v in arrays["video_ids"]]
    if features == "vectors":
        feats = {m: arrays[f"vectors_{m}"] for m in MODALITIES}
        lengths = {}
    else:
        feats = {m: arrays[f"sequence_{m}"] for m in MODALITIES}
        lengths = {"l": arrays["lengths_l"], "a": arrays["lengths_av"], "v": arrays["lengths_av"]}
    transcripts = [r["text"] for r in rows]
    return Dataset(
        name=path.name,
        modalities=MODALITIES,
        features=feats,
        labels=labels,
        utterance_ids=ids,
        video_ids=videos,
        # Without labels (prediction only) every video is a test video.
        folds=_folds(path / UTTERANCES_FILE, rows, videos, folds, fold_seed) if labelled else [Fold((), (), tuple(dict.fromkeys(videos)))],
        task=task,
        lengths=lengths,
        transcripts=transcripts,
        class_names=class_names,
        checksums={**file_checksum(path / FEATURES_FILE), **file_checksum(path / UTTERANCES_FILE)},
        description=f"extracted from media by imsa extract ({len(ids)} utterances)",
        annotations={SOURCE_PRESENT: arrays["present"].astype(bool)},
        # Not a corpus of the field's features: no packaged config is guessed (give one with data.family=...).
        family_source="none: features extracted from media",
        extraction={**extraction, "labelled": labelled, "features": features},
    )
