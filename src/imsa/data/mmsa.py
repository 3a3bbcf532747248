"""MMSA pickles: ``aligned_50.pkl`` / ``unaligned_50.pkl`` (MOSI, MOSEI), ``unaligned_39.pkl`` (CH-SIMS).

Published by thuiar/MMSA (Yu et al., ACL 2020 / AAAI 2021). A pickled dict
``{split: {...}}`` with split in ``train``, ``valid``, ``test``; per split ``id``
(``"video$_$clip"``), ``raw_text``, ``text`` (N, T, 768) BERT features, ``text_bert``
(N, 3, T) token ids / attention mask / segment ids, ``audio`` (N, T_a, D_a), ``vision``
(N, T_v, D_v), ``audio_lengths`` / ``vision_lengths`` (unaligned files only),
``regression_labels`` (N,), ``classification_labels`` (N,) and ``annotations``.

The ``text_bert`` rows are kept as the annotation ``text_bert`` ((N, 3, T) int64), for
methods that fine-tune a BERT-family encoder on the tokens the other modalities are
aligned to (re-tokenising the transcripts would break that alignment). The text
sequence's first and last real steps are the [CLS] and [SEP] states, which frame-level
missing never drops (annotation ``protected_ends``; see :mod:`imsa.frames`).

Loaded as sequences: text length from the ``text_bert`` attention mask (else the full
length), audio and vision lengths from ``*_lengths`` (aligned files: the text length,
as their steps are the text's tokens). Steps beyond a length are zeroed; ``-inf`` (in
MOSI/MOSEI audio) becomes 0 with a logged count. The published split is kept: a video
whose clips sit in several splits is qualified by the split (``valid/<video>``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError, invalid_parameter
from ..frames import PROTECTED_ENDS
from .dataset import Dataset
from .formats import as_array, file_checksum, published_split, register_format, require_keys, require_samples, split_utterance_id, text, zero_padding

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MODALITY_KEYS = {"l": "text", "a": "audio", "v": "vision"}
REQUIRED = ("id", "text", "audio", "vision", "regression_labels")
# MMSA's classification labels of MOSI/MOSEI/SIMS: 0 negative, 1 neutral, 2 positive.
CLASS_NAMES = ("negative", "neutral", "positive")
FIX = "The file is not an intact MMSA pickle (aligned_50.pkl / unaligned_50.pkl)."


def _is_mmsa(path: Path, content) -> bool:
    return isinstance(content, dict) and all(isinstance(content.get(s), dict) and "regression_labels" in content[s] for s in SPLITS)


@register_format("mmsa", description="MMSA aligned_50.pkl / unaligned_50.pkl / unaligned_39.pkl (MOSI, MOSEI, CH-SIMS)", detect=_is_mmsa)
def load_mmsa(path: Path, content, *, task: str = "regression", name: str = "") -> Dataset:
    """Build a :class:`Dataset` from an MMSA pickle's content.

    Parameters
    ----------
    path : Path
        The pickle (for messages and provenance).
    content : dict
        Its unpickled content.
    task : {"regression", "classification"}
        ``regression_labels`` (sentiment in [-3, 3], SIMS [-1, 1]) or
        ``classification_labels`` (3 classes: negative, neutral, positive).
    name : str
        Dataset name (default: ``mmsa:<file stem>``).
    """
    if task not in ("regression", "classification"):
        raise invalid_parameter("task", "format mmsa", "'regression' or 'classification'", task)
    require_keys(content, SPLITS, str(path), FIX)
    columns: dict[str, list] = {k: [] for k in ("uid", "vid", "split", "label", "text")}
    features: dict[str, list] = {m: [] for m in MODALITY_KEYS}
    lengths: dict[str, list] = {m: [] for m in MODALITY_KEYS}
    annotations: dict[str, list] = {}
    for split in SPLITS:
        part = content[split]
        where = f"{path} [{split!r}]"
        require_keys(part, REQUIRED, where, FIX)
        ids = list(part["id"])
        n = len(ids)
        require_samples(n, where, split)
        x = {m: as_array(part[key], f"{where}[{key!r}]", 3, rows=n) for m, key in MODALITY_KEYS.items()}
        text_len = _text_lengths(part, where, n, x["l"].shape[1])
        lens = {"l": text_len}
        for m, key in (("a", "audio"), ("v", "vision")):
            if f"{key}_lengths" in part:
                lens[m] = as_array(part[f"{key}_lengths"], f"{where}[{key + '_lengths'!r}]", 1, rows=n, dtype=np.int64)
            elif x[m].shape[1] == x["l"].shape[1]:
                lens[m] = text_len.copy()  # aligned: one step per text token
            else:
                lens[m] = np.full(n, x[m].shape[1], dtype=np.int64)
            if np.any(lens[m] > x[m].shape[1]) or np.any(lens[m] < 0):
                raise DataError(f"{where}[{key + '_lengths'!r}]: lengths outside [0, {x[m].shape[1]}] for sequences of {x[m].shape[1]} steps.")
        label_key = "regression_labels" if task == "regression" else "classification_labels"
        require_keys(part, (label_key,), where, FIX)
        labels = as_array(part[label_key], f"{where}[{label_key!r}]", (1, 2), rows=n, dtype=np.float64).reshape(n, -1)[:, 0]
        if "text_bert" in part:
            annotations.setdefault("text_bert", []).append(as_array(part["text_bert"], f"{where}['text_bert']", 3, rows=n).astype(np.int64))
        for key in part:
            if isinstance(key, str) and key.startswith("regression_labels_"):  # SIMS: per-modality labels
                annotations.setdefault(key, []).append(as_array(part[key], f"{where}[{key!r}]", (1, 2), rows=n).reshape(n))
        raw = list(part.get("raw_text", [""] * n))
        if len(raw) != n:
            raise DataError(f"{where}['raw_text']: {len(raw)} entries for {n} samples.")
        for i, value in enumerate(ids):
            uid, vid = split_utterance_id(value)
            columns["uid"].append(uid)
            columns["vid"].append(vid)
            columns["split"].append(split)
            columns["label"].append(labels[i])
            columns["text"].append(text(raw[i]))
        for m in MODALITY_KEYS:
            features[m].append(x[m])
            lengths[m].append(np.maximum(lens[m], 1))
    return _assemble(path, content, columns, features, lengths, annotations, task, name or f"mmsa:{path.stem}")


def _text_lengths(part, where: str, n: int, steps: int) -> np.ndarray:
    if "text_bert" not in part:
        return np.full(n, steps, dtype=np.int64)
    tokens = as_array(part["text_bert"], f"{where}['text_bert']", 3, rows=n)
    if tokens.shape[1] != 3:
        raise DataError(f"{where}['text_bert']: shape {tokens.shape}, expected (N, 3, T): token ids, attention mask, segment ids.")
    return np.minimum(tokens[:, 1].sum(axis=1).astype(np.int64), steps)


def _assemble(path, content, columns, features, lengths, annotations, task, name) -> Dataset:
    for m in MODALITY_KEYS:
        dims = {x.shape[2] for x in features[m]}
        if len(dims) != 1:
            raise DataError(f"{path}: {MODALITY_KEYS[m]!r} has {sorted(dims)} features in different splits; expected one size.")
        steps = max(x.shape[1] for x in features[m])
        features[m] = np.concatenate([np.pad(x, ((0, 0), (0, steps - x.shape[1]), (0, 0))) for x in features[m]])
        lengths[m] = np.concatenate(lengths[m])
    order, video_ids, fold, utterance_ids = published_split(path, columns["uid"], columns["vid"], columns["split"])
    labels = np.asarray(columns["label"])[order]
    if task == "classification":
        if np.any(labels != np.round(labels)) or labels.min() < 0:
            raise DataError(f"{path}: 'classification_labels' must be non-negative integers.")
        labels = labels.astype(np.int64)
        k = max(int(labels.max()) + 1, 2)
        class_names = CLASS_NAMES if k == 3 else tuple(f"class{c}" for c in range(k))
    else:
        labels = labels.astype(np.float32)
        class_names = None
    return Dataset(
        name=name,
        modalities=tuple(MODALITY_KEYS),
        features={m: zero_padding(features[m][order], lengths[m][order]) for m in MODALITY_KEYS},
        lengths={m: lengths[m][order] for m in MODALITY_KEYS},
        labels=labels,
        utterance_ids=utterance_ids,
        video_ids=video_ids,
        folds=[fold],
        task=task,
        transcripts=[columns["text"][i] for i in order],
        class_names=class_names,
        checksums=file_checksum(path),
        description=f"MMSA pickle {path.name}",
        annotations={**{key: np.concatenate(v)[order] for key, v in annotations.items()}, PROTECTED_ENDS: [("l",)] * len(order)},
    )
