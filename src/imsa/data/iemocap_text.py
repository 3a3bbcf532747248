"""IEMOCAP from its transcripts: the GCNet label pickles with text encoded by a pretrained model.

``iemocap4-text`` (4 classes: happy+excited, sad, neutral, angry; 5,531 utterances in
151 dialogues) and ``iemocap6-text`` (6 classes; 7,433 utterances) use the real labels,
speakers, transcripts and sessions of the GCNet label pickles, with the 5-fold
leave-one-session-out folds of :func:`imsa.data.gcnet.session_folds` (validation from
the training sessions). Text is the only modality: the transcripts encoded by a
pretrained text encoder, mean-pooled over tokens (default all-MiniLM-L6-v2; cached, see
:mod:`imsa.data.text_features`). Classification, scored by WA, UA and weighted F1.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .dataset import Dataset
from .download import GCNET_RAW, RemoteFile, pinned_sha256, require_files
from .gcnet import read_label_table, table_folds, table_labels
from .registry import register_dataset
from .text_features import TextSource, register_text_source, text_features

LABEL_PICKLES = {4: "iemocap/IEMOCAP_features_raw_4way.pkl", 6: "iemocap/IEMOCAP_features_raw_6way.pkl"}
# Both label pickles, pinned by commit and sha256 (each dataset downloads both: they are small).
FILES = (
    RemoteFile(
        LABEL_PICKLES[4], f"{GCNET_RAW}/dataset/IEMOCAP/IEMOCAP_features_raw_4way.pkl", "072cffa9c528dd0536792de7ac85d5a0efaf25d4a9e3ed01f7e45453547cc9fd"
    ),
    RemoteFile(
        LABEL_PICKLES[6], f"{GCNET_RAW}/dataset/IEMOCAP/IEMOCAP_features_raw_6way.pkl", "e35143e9f087d436779cccd650cb0327e9caa55178d326330f4a8a914e91e023"
    ),
)


def _label_table(name: str, classes: int, root: Path):
    paths = require_files(name, root)
    path = paths[LABEL_PICKLES[classes]]
    table = read_label_table(path)
    if not table.is_iemocap:
        raise DataError(f"{path}: expected the IEMOCAP 6-item label pickle. Fetch intact copies with `imsa data download {name}`.")
    return table, path


def _load(name: str, classes: int, root: Path, text_model: str, cache_dir: str, max_length: int, valid_fraction: float) -> Dataset:
    table, path = _label_table(name, classes, root)
    utterances, sentences = table.flat("utterances"), table.flat("sentences")
    labels, task, class_names = table_labels(table)
    if len(class_names) != classes:
        raise DataError(f"{path}: labels have {len(class_names)} classes, expected {classes}. Fetch intact copies with `imsa data download {name}`.")
    text, entry = text_features(name, utterances, sentences, model_path=text_model or None, cache_dir=cache_dir or None, max_length=max_length)
    return Dataset(
        name=name,
        modalities=("l",),
        features={"l": text["vectors"]},
        labels=labels,
        utterance_ids=utterances,
        video_ids=[v for v in table.videos for _ in table.utterances[v]],
        folds=table_folds(table, valid_fraction),
        task=task,
        transcripts=sentences,
        class_names=class_names,
        checksums={LABEL_PICKLES[classes]: pinned_sha256(name)[LABEL_PICKLES[classes]], "text-features": entry.key},  # verified by require_files
        description=f"IEMOCAP {classes}-class transcripts, text only, 5 session folds",
        annotations={"speakers": table.flat("speakers")},
    )


@register_text_source("iemocap4-text")
def read_iemocap4_texts(root: Path) -> TextSource:
    table, _ = _label_table("iemocap4-text", 4, root)
    return TextSource(table.flat("utterances"), table.flat("sentences"))


@register_text_source("iemocap6-text")
def read_iemocap6_texts(root: Path) -> TextSource:
    table, _ = _label_table("iemocap6-text", 6, root)
    return TextSource(table.flat("utterances"), table.flat("sentences"))


@register_dataset(
    "iemocap4-text", description="IEMOCAP 4 classes, 5,531 utterances, text encoded from transcripts; 5 session folds", family="iemocap4", files=FILES
)
def load_iemocap4_text(root: Path, *, text_model: str = "", cache_dir: str = "", max_length: int = 128, valid_fraction: float = 0.1) -> Dataset:
    """Load ``iemocap4-text``.

    Parameters
    ----------
    text_model : str
        A local Hugging Face model folder (default: all-MiniLM-L6-v2).
    cache_dir : str
        Text-feature cache (default ``$IMSA_CACHE`` or the user cache); missing
        features are computed once and cached.
    max_length : int
        Tokens kept per transcript.
    valid_fraction : float
        Share of each training session's dialogues used for validation.
    """
    return _load("iemocap4-text", 4, root, text_model, cache_dir, max_length, valid_fraction)


@register_dataset(
    "iemocap6-text", description="IEMOCAP 6 classes, 7,433 utterances, text encoded from transcripts; 5 session folds", family="iemocap6", files=FILES
)
def load_iemocap6_text(root: Path, *, text_model: str = "", cache_dir: str = "", max_length: int = 128, valid_fraction: float = 0.1) -> Dataset:
    """Load ``iemocap6-text`` (options as for ``iemocap4-text``)."""
    return _load("iemocap6-text", 6, root, text_model, cache_dir, max_length, valid_fraction)
