"""CMU-MOSI from the bc-LSTM CSVs (declare-lab) and the GCNet label pickle, without leakage.

The bc-LSTM text (100-d CNN) and video (100-d 3D-CNN) features were produced by
networks trained on the labels of the CSVs' 62 "train" videos (Poria et al., ACL
2017), so a model fitted there learns to trust them and fails on unseen videos. This
dataset therefore keeps only the 752 utterances of the 31 videos of ``*_test0.csv``,
which the extractors never saw, and evaluates by 5-fold cross-validation grouped by
video: fold k tests on part k, validates on part (k + 1) mod 5 and trains on the
other three.

The video-to-part assignment is fixed: videos are taken from most to fewest
utterances (ties by id) and each goes to the part with the fewest utterances so far
(ties to the lower part), which balances the parts' sizes. It is listed in
``docs/datasets.md`` and pinned by the tests.

Labels are the continuous sentiment scores in [-3, 3] of the GCNet pickle; the
CSVs' binary labels are checked against them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset, Fold
from .download import BCLSTM_RAW, GCNET_RAW, RemoteFile, pinned_sha256, require_files
from .registry import register_dataset
from .safe_pickle import load_pickle

NUM_PARTS = 5
LABEL_PICKLE = "cmu-mosi/CMUMOSI_features_raw_2way.pkl"
TRANSCRIPTS = "cmu-mosi/bc-lstm/transcripts.csv"
ROW_INDEX = "cmu-mosi/bc-lstm/text_test.csv"
FEATURE_CSVS = {
    "l": "cmu-mosi/bc-lstm/text/text_test0.csv",
    "a": "cmu-mosi/bc-lstm/audio/audio_test0.csv",
    "v": "cmu-mosi/bc-lstm/video/video_test0.csv",
}
FEATURE_DIMS = {"l": 100, "a": 73, "v": 100}
# The fix for a damaged or foreign file; `download` replaces files whose sha256 differs.
REFETCH = "Fetch intact copies with `imsa data download mosi-bclstm`."


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="") as f:
            return [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read as CSV ({e}). {REFETCH}") from None


def _floats(rows: list[list[str]], path: Path, width: int) -> np.ndarray:
    for line, row in enumerate(rows, 1):
        if len(row) != width:
            raise DataError(f"{path}, line {line}: {len(row)} columns, expected {width}. The file is truncated or not the bc-LSTM CSV. {REFETCH}")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: non-numeric value ({e}). {REFETCH}") from None


def assign_parts(video_sizes: dict[str, int], num_parts: int = NUM_PARTS) -> list[list[str]]:
    """Greedy balanced assignment of videos to parts (see the module docstring)."""
    parts: list[list[str]] = [[] for _ in range(num_parts)]
    totals = [0] * num_parts
    for video in sorted(video_sizes, key=lambda v: (-video_sizes[v], v)):
        k = min(range(num_parts), key=lambda p: (totals[p], p))
        parts[k].append(video)
        totals[k] += video_sizes[video]
    return [sorted(p) for p in parts]


def cross_validation_folds(parts: list[list[str]]) -> list[Fold]:
    """Fold k: test = part k, valid = part k+1 (mod K), train = the rest."""
    k_parts = len(parts)
    folds = []
    for k in range(k_parts):
        valid = (k + 1) % k_parts
        train = [v for p in range(k_parts) if p not in (k, valid) for v in parts[p]]
        folds.append(Fold(train=tuple(sorted(train)), valid=tuple(parts[valid]), test=tuple(parts[k])))
    return folds


def _bclstm(path: str, sha256: str) -> RemoteFile:
    # Upstream keeps the CSVs under data/; locally they sit under cmu-mosi/bc-lstm/.
    return RemoteFile(f"cmu-mosi/bc-lstm/{path}", f"{BCLSTM_RAW}/data/{path}", sha256)


# The published files this loader (and mosi-transcripts) reads, pinned by commit and sha256.
FILES = (
    RemoteFile(LABEL_PICKLE, f"{GCNET_RAW}/dataset/CMUMOSI/CMUMOSI_features_raw_2way.pkl", "931ee50f3a77b2eb18786840a880a439f3ae6542bf2dfb5e14ecc9690702af84"),
    _bclstm("transcripts.csv", "e7689e6d70720addd2a6b316419d245a68839c32b014ff426c406063ee777466"),
    _bclstm("text_train.csv", "73770b6302ad0f7a51f4eddcae6788efde4d0b6802e09f78249d5b538d1c1d67"),
    _bclstm("text_test.csv", "f3b735070bf07ceff7a6ef6c8f4c32757e988de484e35bd6d38b2aecef851a59"),
    _bclstm("text/text_train0.csv", "cc327045db6cc361a08b4037b97bb24de4ddb5efb381468c4835cc4a60674668"),
    _bclstm("text/text_test0.csv", "a343e22272919d1384c2075dbcdd5fef5aa9f9366b0552a83f7c3147b64b047a"),
    _bclstm("audio/audio_train0.csv", "5435398a54664e7b00304587dc59ae84a438852be033c2a2fba779588624a2a1"),
    _bclstm("audio/audio_test0.csv", "ddd17eeefd3d951d51d4e2ef8a0d132652d8161e1886f71eb7262b7a14bffff6"),
    _bclstm("video/video_train0.csv", "b6efc0413132d627efd06f67f1706830e775e90af9a75696f535c48dbc73f12f"),
    _bclstm("video/video_test0.csv", "cab836253d81100f59d533fa2ff65cd53c486be3ec9fd82203c5e25a7a77265f"),
)


@register_dataset(
    "mosi-bclstm",
    description="CMU-MOSI, 31 unseen videos / 752 utterances, bc-LSTM text 100-d, audio 73-d, video 100-d; 5-fold CV by video",
    family="mosi",
    files=FILES,
)
def load_mosi_bclstm(root: Path) -> Dataset:
    """Load ``mosi-bclstm`` from the data root (see ``imsa data download mosi-bclstm``)."""
    paths = require_files("mosi-bclstm", root)
    transcripts = _read_csv(paths[TRANSCRIPTS])
    row_index = _read_csv(paths[ROW_INDEX])
    try:
        csv_ids = [transcripts[int(row[0])][0] for row in row_index]
    except (ValueError, IndexError):
        raise DataError(f"{paths[ROW_INDEX]}: first column must index rows of {paths[TRANSCRIPTS]}; the files do not match. {REFETCH}") from None

    features, binary = {}, {}
    for m, rel in FEATURE_CSVS.items():
        table = _floats(_read_csv(paths[rel]), paths[rel], FEATURE_DIMS[m] + 1)
        if len(table) != len(csv_ids):
            raise DataError(f"{paths[rel]}: {len(table)} rows but {paths[ROW_INDEX]} has {len(csv_ids)}; the files do not belong together. {REFETCH}")
        features[m], binary[m] = table[:, :-1], table[:, -1]
    for m in ("a", "v"):
        if not np.array_equal(binary[m], binary["l"]):
            raise DataError(f"{paths[FEATURE_CSVS[m]]}: binary labels disagree with {paths[FEATURE_CSVS['l']]}; rows are out of order. {REFETCH}")

    label_table = load_pickle(paths[LABEL_PICKLE])
    if not (isinstance(label_table, list) and len(label_table) == 7 and all(isinstance(x, dict) for x in label_table[:4])):
        raise DataError(
            f"{paths[LABEL_PICKLE]}: expected the GCNet 7-item list [videoIDs, videoLabels, videoSpeakers, videoSentences, train, valid, test]. {REFETCH}"
        )
    video_utterances, video_labels, _, video_sentences = label_table[:4]
    row_of = {u: r for r, u in enumerate(csv_ids)}
    videos = sorted({u.rsplit("_", 1)[0] for u in csv_ids})

    order, labels, transcript_text = [], [], []
    for video in videos:
        if video not in video_utterances:
            raise DataError(f"{paths[LABEL_PICKLE]}: video {video!r} of the CSVs has no labels. {REFETCH}")
        for utterance, label, sentence in zip(video_utterances[video], video_labels[video], video_sentences[video]):
            if utterance not in row_of:
                raise DataError(f"{paths[FEATURE_CSVS['l']]}: utterance {utterance!r} of the label pickle has no feature row. {REFETCH}")
            order.append(row_of[utterance])
            labels.append(float(label))
            transcript_text.append(str(sentence))
    if len(order) != len(csv_ids):
        raise DataError(f"{paths[LABEL_PICKLE]}: labels {len(order)} utterances of the CSVs' {len(csv_ids)}; the files do not match. {REFETCH}")
    labels = np.asarray(labels, dtype=np.float32)
    disagree = np.flatnonzero((labels >= 0) != (binary["l"][order] > 0.5))
    if len(disagree):
        raise DataError(
            f"{paths[LABEL_PICKLE]}: continuous label of {csv_ids[order[disagree[0]]]!r} disagrees with the CSVs' binary label ({len(disagree)} utterances). {REFETCH}"
        )

    utterance_ids = [csv_ids[r] for r in order]
    video_ids = [u.rsplit("_", 1)[0] for u in utterance_ids]
    sizes = {v: video_ids.count(v) for v in videos}
    return Dataset(
        name="mosi-bclstm",
        modalities=("l", "a", "v"),
        features={m: x[order] for m, x in features.items()},
        labels=labels,
        utterance_ids=utterance_ids,
        video_ids=video_ids,
        folds=cross_validation_folds(assign_parts(sizes)),
        task="regression",
        transcripts=transcript_text,
        checksums=pinned_sha256("mosi-bclstm"),  # verified by require_files
        description=__doc__.strip().splitlines()[0],
    )
