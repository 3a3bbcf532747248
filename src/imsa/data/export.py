"""Writing a loaded dataset in a published format, so that other codebases can read it.

:func:`export_gcnet` writes the GCNet / MoMKE layout that :mod:`imsa.data.gcnet` reads::

    OUT/<name>_features_raw.pkl        label pickle (7-item list, or 6-item for IEMOCAP folds)
    OUT/features/text/<utterance>.npy  one file per utterance and modality
    OUT/features/audio/<utterance>.npy
    OUT/features/video/<utterance>.npy

Vector features are written as (D,) arrays; sequences as (length, D) arrays, which
GCNet-style loaders average over time. A dataset whose folds are IEMOCAP's 5
leave-one-session-out folds is written as a 6-item IEMOCAP pickle (its folds are
implied by the sessions); any other dataset as a 7-item pickle holding one fold's
train/valid/test videos, since the format has room for one split only.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..files import atomic_write
from .dataset import Dataset
from .gcnet import session_of

logger = logging.getLogger(__name__)

FOLDER_OF = {"l": "text", "a": "audio", "v": "video"}


def _is_session_folds(dataset: Dataset) -> bool:
    if len(dataset.folds) != 5:
        return False
    try:
        sessions = {v: session_of(v) for v in dataset.video_index}
    except DataError:
        return False
    return all(set(f.test) == {v for v, s in sessions.items() if s == k + 1} for k, f in enumerate(dataset.folds))


def export_gcnet(dataset: Dataset, out: str | os.PathLike, *, fold: int = 0, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``dataset`` as GCNet-style feature folders plus a label pickle.

    Parameters
    ----------
    dataset : Dataset
    out : path
        Output folder; created if needed. Existing files of the same names are replaced.
    fold : int
        The fold written into a 7-item pickle (ignored for IEMOCAP session folds).
    progress : callable, optional
        ``progress(files_done, files_total)``.

    Returns
    -------
    Path
        The label pickle written.
    """
    if not 0 <= fold < len(dataset.folds):
        raise ConfigError(f"Dataset {dataset.name} has {len(dataset.folds)} fold(s); fold {fold} does not exist.")
    for uid in dataset.utterance_ids:
        if "/" in uid or "\\" in uid or uid in ("", ".", ".."):
            raise DataError(f"{dataset.name}: utterance id {uid!r} cannot be a file name; the GCNet layout names one file per utterance.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out needs a folder to write the feature folders into.")
    if dataset.task == "multilabel":
        raise ConfigError(
            f"{dataset.source}: the GCNet layout holds one label per utterance; a multilabel dataset (several classes per utterance) cannot be written in it."
        )
    videos = list(dataset.video_index)
    integer = dataset.task == "classification"
    table: list = [{}, {}, {}, {}]
    speakers = dataset.annotations.get("speakers")
    for video, index in dataset.video_index.items():
        table[0][video] = [dataset.utterance_ids[i] for i in index]
        table[1][video] = [int(dataset.labels[i]) if integer else float(dataset.labels[i]) for i in index]
        table[2][video] = [str(speakers[i]) if speakers is not None else "" for i in index]
        table[3][video] = [dataset.transcripts[i] if dataset.transcripts is not None else "" for i in index]
    if _is_session_folds(dataset):
        test = set(dataset.folds[-1].test)  # the usual IEMOCAP split: sessions 1-4 / 5
        table += [{v for v in videos if v not in test}, test]
    else:
        if len(dataset.folds) > 1:
            logger.warning("%s: the GCNet label pickle holds one split; writing fold %d of %d.", dataset.name, fold, len(dataset.folds))
        f = dataset.folds[fold]
        table += [set(f.train), set(f.valid), set(f.test)]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-") or "dataset"
    out.mkdir(parents=True, exist_ok=True)
    total = len(dataset) * len(dataset.modalities)
    done = 0
    for m in dataset.modalities:
        folder = out / "features" / FOLDER_OF[m]
        folder.mkdir(parents=True, exist_ok=True)
        x = dataset.features[m]
        for i, uid in enumerate(dataset.utterance_ids):
            row = x[i, : int(dataset.lengths[m][i])] if dataset.is_sequence(m) else x[i]
            np.save(folder / f"{uid}.npy", np.ascontiguousarray(row, dtype=np.float32))
            done += 1
            if progress and (done % 500 == 0 or done == total):
                progress(done, total)
    path = out / f"{safe}_features_raw.pkl"
    return atomic_write(path, lambda f: pickle.dump(table, f, protocol=4))
