"""MulT pickles: ``mosi_data.pkl``, ``mosei_senti_data.pkl``, ``iemocap_data.pkl`` (and ``*_noalign``).

Published with yaohungt/Multimodal-Transformer (Tsai et al., ACL 2019). A pickled dict
``{split: {...}}`` with split in ``train``, ``valid``, ``test`` and keys ``text`` (N, T,
300) GloVe, ``audio`` (N, T_a, D_a), ``vision`` (N, T_v, D_v), ``labels`` and ``id``.

Labels: MOSI/MOSEI ``(N, 1, 1)`` sentiment in [-3, 3] (regression). IEMOCAP ``(N, 4,
2)``: for each emotion (Neutral, Happy, Sad, Angry) a one-hot of absent/present. By
default that stays what it is, four binary tasks (``multilabel``, labels ``(N, 4)``),
scored per emotion as MulT and CMAD score it; ``emotions="classes"`` makes the one
present emotion each utterance's class (classification, 4 classes; an utterance with
none or several present is then an error).

The files carry no lengths: sequences are zero-padded at the start (MulT's own
preprocessing), so a sample's length is counted from its first non-zero step to the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, invalid_parameter
from .dataset import Dataset
from .formats import as_array, file_checksum, published_split, register_format, require_keys, require_samples, split_utterance_id

SPLITS = ("train", "valid", "test")
MODALITY_KEYS = {"l": "text", "a": "audio", "v": "vision"}
EMOTIONS = ("neutral", "happy", "sad", "angry")
FIX = "The file is not an intact MulT pickle (*_data.pkl / *_data_noalign.pkl)."


def _is_mult(path: Path, content) -> bool:
    return isinstance(content, dict) and all(
        isinstance(content.get(s), dict) and "labels" in content[s] and "vision" in content[s] and "regression_labels" not in content[s] for s in SPLITS
    )


def _start_padded_lengths(x: np.ndarray) -> np.ndarray:
    """Steps from the first step with any non-zero value to the end (at least 1)."""
    nonzero = np.any(x != 0, axis=2)  # (N, T)
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), x.shape[1] - 1)
    return (x.shape[1] - first).astype(np.int64)


@register_format("mult", description="MulT *_data.pkl / *_data_noalign.pkl (MOSI, MOSEI, IEMOCAP)", detect=_is_mult)
def load_mult(path: Path, content, *, name: str = "", emotions: str = "multilabel") -> Dataset:
    """Build a :class:`Dataset` from a MulT pickle's content.

    Parameters
    ----------
    path : Path
        The pickle (for messages and provenance).
    content : dict
        Its unpickled content.
    name : str
        Dataset name (default: ``mult:<file stem>``).
    emotions : {"multilabel", "classes"}
        IEMOCAP labels as four present/absent tasks, or as one class per utterance.
    """
    if emotions not in ("multilabel", "classes"):
        raise invalid_parameter("emotions", "format mult", "'multilabel' or 'classes'", emotions)
    require_keys(content, SPLITS, str(path), FIX)
    uids, vids, splits, labels, emotion_rows = [], [], [], [], []
    features: dict[str, list] = {m: [] for m in MODALITY_KEYS}
    label_shape = None
    for split in SPLITS:
        part = content[split]
        where = f"{path} [{split!r}]"
        require_keys(part, ("text", "audio", "vision", "labels", "id"), where, FIX)
        raw_labels = as_array(part["labels"], f"{where}['labels']", (1, 2, 3))
        n = len(raw_labels)
        require_samples(n, where, split)
        for m, key in MODALITY_KEYS.items():
            features[m].append(as_array(part[key], f"{where}[{key!r}]", 3, rows=n))
        ids = list(part["id"])
        if len(ids) != n:
            raise DataError(f"{where}['id']: {len(ids)} ids for {n} labels; the arrays of this split are inconsistent.")
        shape = raw_labels.shape[1:]
        if label_shape is not None and shape != label_shape:
            raise DataError(f"{where}['labels']: shape {raw_labels.shape} differs from the other splits' (N, {', '.join(map(str, label_shape))}).")
        label_shape = shape
        if raw_labels.ndim == 3 and raw_labels.shape[1:] == (len(EMOTIONS), 2):
            present = raw_labels[:, :, 1] > 0.5
            counts = present.sum(axis=1)
            if emotions == "classes" and np.any(counts != 1):
                bad = int(np.flatnonzero(counts != 1)[0])
                raise DataError(
                    f"{where}['labels']: sample {bad} ({ids[bad]!r}) has {int(counts[bad])} emotions present; one class per utterance "
                    "(emotions=classes) needs exactly one. Keep the per-emotion task (the default, --set data.emotions=multilabel)."
                )
            labels.append(present.argmax(axis=1) if emotions == "classes" else present.astype(np.int64))
            emotion_rows.append(present)
        elif int(np.prod(shape)) == 1:
            labels.append(raw_labels.reshape(n))
        else:
            raise DataError(f"{where}['labels']: shape {raw_labels.shape}; expected (N, 1, 1) sentiment or (N, 4, 2) IEMOCAP emotions.")
        for k, value in enumerate(ids):
            uid, vid = split_utterance_id(value)
            uids.append(uid)
            vids.append(vid)
            splits.append(split)
    classification = bool(emotion_rows)
    task = ("classification" if emotions == "classes" else "multilabel") if classification else "regression"
    for m, key in MODALITY_KEYS.items():
        dims = {x.shape[2] for x in features[m]}
        if len(dims) != 1:
            raise DataError(f"{path}: {key!r} has {sorted(dims)} features in different splits; expected one size.")
        steps = max(x.shape[1] for x in features[m])
        # zero padding goes at the start, where MulT puts it
        features[m] = np.concatenate([np.pad(x, ((0, 0), (steps - x.shape[1], 0), (0, 0))) for x in features[m]])
    order, video_ids, fold, utterance_ids = published_split(path, uids, vids, splits)
    label_array = np.concatenate(labels)[order]
    return Dataset(
        name=name or f"mult:{path.stem}",
        modalities=tuple(MODALITY_KEYS),
        features={m: _left_to_right(x[order]) for m, x in features.items()},
        lengths={m: _start_padded_lengths(x[order]) for m, x in features.items()},
        labels=label_array.astype(np.int64) if classification else label_array.astype(np.float32),
        utterance_ids=utterance_ids,
        video_ids=video_ids,
        folds=[fold],
        task=task,
        class_names=EMOTIONS if classification else None,
        checksums=file_checksum(path),
        description=f"MulT pickle {path.name}",
        annotations={"emotions": np.concatenate(emotion_rows)[order]} if classification else {},
    )


def _left_to_right(x: np.ndarray) -> np.ndarray:
    """Move each sample's start padding to the end, as :class:`Dataset` sequences are padded."""
    lengths = _start_padded_lengths(x)
    out = np.zeros_like(x)
    steps = x.shape[1]
    for i, n in enumerate(lengths):
        out[i, :n] = x[i, steps - n :]
    return out
