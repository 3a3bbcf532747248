"""GCNet / MoMKE data: a label pickle plus per-utterance feature files.

Published with zeroQiaoba/GCNet (Lian et al., TPAMI 2023) and reused by wxxv/MoMKE.

Label pickle: for CMU-MOSI / CMU-MOSEI a 7-item list ``[videoIDs, videoLabels,
videoSpeakers, videoSentences, trainVids, valVids, testVids]``, for IEMOCAP a 6-item
list ``[videoIDs, videoLabels, videoSpeakers, videoSentences, trainVid, testVid]``; the
first four are dicts keyed by video (dialogue) id and hold per-utterance lists.

Features: ``features/<name>/<utterance_id>.npy``, one file per utterance with a vector
(D,) or a (T, D) array that is averaged over time; or a folder ``<utterance_id>/`` of
per-face ``.npy`` files that are averaged. For IEMOCAP the face file names carry the
speaker letter (F/M) and, as in GCNet, an utterance gets the average of its own
speaker's faces (GCNet's host/guest features, selected by the speaker); an utterance
with no (matching) face gets a zero vector.

Folds: MOSI/MOSEI the published train/valid/test videos. IEMOCAP 5-fold
leave-one-session-out (the session is the digit of ``Ses0N``): fold k tests on session
k + 1; validation is taken from the training sessions: from every session, the
``valid_fraction`` of its dialogues chosen by a permutation seeded with the session
number, so a dialogue is a validation dialogue in every fold that trains on its session.
Samples are utterances grouped into their videos or dialogues.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, invalid_parameter
from .dataset import Dataset, Fold
from .families import IEMOCAP_CLASSES  # GCNet's IEMOCAP label codes (4-way: happy+excited, sad, neutral, angry)
from .formats import file_checksum, register_format
from .safe_pickle import load_pickle

logger = logging.getLogger(__name__)

NUM_SESSIONS = 5
# Feature folder names recognised per modality (GCNet/MoMKE names first, then generic words).
FEATURE_HINTS = {
    "l": ("deberta", "roberta", "bert", "glove", "text", "lexical"),
    "a": ("wav2vec", "hubert", "wavlm", "audio", "opensmile", "acoustic"),
    "v": ("manet", "face", "video", "vision", "visual", "openface", "resnet"),
}
MODALITY_OPTIONS = {"l": "text_feature", "a": "audio_feature", "v": "video_feature"}
FIX = "The file is not a GCNet label pickle (7-item list for MOSI/MOSEI, 6-item list for IEMOCAP)."


@dataclass
class LabelTable:
    """The content of a GCNet label pickle.

    Attributes
    ----------
    path : Path
    videos : list of str
        Video (dialogue) ids in sorted order.
    utterances, labels, speakers, sentences : dict of str to list
        Per video, per utterance in spoken order.
    splits : dict of str to set, or None
        ``train``/``valid``/``test`` video sets (MOSI/MOSEI); None for IEMOCAP.
    """

    path: Path
    videos: list[str]
    utterances: dict
    labels: dict
    speakers: dict
    sentences: dict
    splits: dict | None

    @property
    def is_iemocap(self) -> bool:
        return self.splits is None

    def flat(self, key: str) -> list:
        table = getattr(self, key)
        return [x for v in self.videos for x in table[v]]


def is_label_table(content) -> bool:
    return isinstance(content, (list, tuple)) and len(content) in (6, 7) and all(isinstance(x, dict) for x in content[:4])


def read_label_table(path: Path, content=None) -> LabelTable:
    """Read and check a GCNet label pickle (through the restricted unpickler).

    Raises
    ------
    DataError
        If it is not a 6- or 7-item list of the expected dicts, or a video's lists
        have different lengths; the message names the file and the video.
    """
    content = load_pickle(path) if content is None else content
    if not is_label_table(content):
        raise DataError(f"{path}: expected a 6- or 7-item list [videoIDs, videoLabels, videoSpeakers, videoSentences, ...]. {FIX}")
    utterances, labels, speakers, sentences = content[:4]
    names = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences")
    if len(content) == 7:
        splits = {s: _video_set(content[4 + k], path, f"{s} videos") for k, s in enumerate(("train", "valid", "test"))}
        videos = sorted(set().union(*splits.values()))
    else:
        splits = None
        videos = sorted(_video_set(content[4], path, "trainVid") | _video_set(content[5], path, "testVid"))
    for video in videos:
        if video not in utterances:
            raise DataError(f"{path}: video {video!r} is listed in a split but has no entry in videoIDs. {FIX}")
        n = len(utterances[video])
        for name, table in zip(names[1:], (labels, speakers, sentences)):
            if video not in table:
                raise DataError(f"{path}: {name} has no entry for video {video!r}. {FIX}")
            if len(table[video]) != n:
                raise DataError(f"{path}: {name}[{video!r}] has {len(table[video])} entries but videoIDs lists {n} utterances.")
    return LabelTable(
        path=path,
        videos=videos,
        utterances={v: [str(u) for u in utterances[v]] for v in videos},
        labels={v: list(labels[v]) for v in videos},
        speakers={v: [str(s) for s in speakers[v]] for v in videos},
        sentences={v: [str(s) for s in sentences[v]] for v in videos},
        splits=splits,
    )


def _video_set(value, path: Path, what: str) -> set:
    if not isinstance(value, (set, frozenset, list, tuple)):
        raise DataError(f"{path}: {what} must be a set of video ids, found {type(value).__name__}. {FIX}")
    return {str(v) for v in value}


def session_of(video: str) -> int:
    """IEMOCAP session number (1..5) of a dialogue id such as ``Ses01F_impro01``."""
    match = re.match(r"Ses0*(\d+)", video)
    if not match:
        raise DataError(f"IEMOCAP dialogue id {video!r} does not start with 'Ses0N'; cannot tell its session.")
    return int(match.group(1))


def session_folds(videos: list[str], valid_fraction: float = 0.1) -> list[Fold]:
    """5-fold leave-one-session-out; validation dialogues taken from the training sessions.

    Fold k tests on session k + 1. From every session, ``round(valid_fraction * n)`` of
    its n dialogues (at least one) are validation dialogues whenever that session is a
    training session, chosen by a permutation seeded with the session number.
    """
    if not 0 < valid_fraction < 1:
        raise invalid_parameter("valid_fraction", "IEMOCAP folds", "in (0, 1)", valid_fraction)
    by_session: dict[int, list[str]] = {}
    for v in sorted(videos):
        by_session.setdefault(session_of(v), []).append(v)
    missing = sorted(set(range(1, NUM_SESSIONS + 1)) - set(by_session))
    if missing or len(by_session) != NUM_SESSIONS:
        raise DataError(f"IEMOCAP needs dialogues of sessions 1..{NUM_SESSIONS}; sessions {missing or sorted(by_session)} are missing or unexpected.")
    valid_of = {}
    for s, dialogues in by_session.items():
        count = max(1, int(round(valid_fraction * len(dialogues))))
        picked = np.random.default_rng(s).permutation(len(dialogues))[:count]
        valid_of[s] = {dialogues[i] for i in picked}
    folds = []
    for k in range(NUM_SESSIONS):
        test_session = k + 1
        train, valid = [], []
        for s, dialogues in sorted(by_session.items()):
            if s == test_session:
                continue
            for v in dialogues:
                (valid if v in valid_of[s] else train).append(v)
        folds.append(Fold(train=tuple(train), valid=tuple(valid), test=tuple(by_session[test_session])))
    return folds


def table_folds(table: LabelTable, valid_fraction: float = 0.1) -> list[Fold]:
    """The folds of a label table: the published split (MOSI/MOSEI) or the 5 session folds."""
    if table.is_iemocap:
        return session_folds(table.videos, valid_fraction)
    return [Fold(**{s: tuple(sorted(table.splits[s])) for s in ("train", "valid", "test")})]


def table_labels(table: LabelTable, task: str = "") -> tuple[np.ndarray, str, tuple[str, ...] | None]:
    """Labels, task and class names of a label table.

    The task is declared by the table's layout, never guessed from the values: the
    7-item MOSI/MOSEI table holds sentiment scores (regression, even where every score
    happens to be an integer), the 6-item IEMOCAP table emotion classes. ``task``
    overrides it (a 7-item table of classes, as ``imsa data export`` writes for a
    classification dataset).
    """
    if task not in ("", "regression", "classification"):
        raise invalid_parameter("task", "format gcnet", "'', 'regression' or 'classification'", task)
    task = task or ("classification" if table.is_iemocap else "regression")
    raw = table.flat("labels")
    if task == "regression":
        try:
            return np.asarray(raw, dtype=np.float32).reshape(len(raw)), "regression", None
        except (TypeError, ValueError):
            raise DataError(f"{table.path}: videoLabels must be sentiment scores. {FIX}") from None
    try:
        values = np.asarray(raw, dtype=np.float64).reshape(len(raw))
    except (TypeError, ValueError):
        raise DataError(f"{table.path}: videoLabels must be integer classes for IEMOCAP. {FIX}") from None
    if not np.array_equal(values, np.round(values)):
        raise DataError(
            f"{table.path}: classification needs integer class labels, found e.g. {values[values != np.round(values)][0]:g}; for sentiment scores use task=regression."
        )
    labels = values.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{table.path}: negative class label {int(labels.min())}.")
    k = int(labels.max()) + 1 if len(labels) else 0
    names = IEMOCAP_CLASSES.get(k) if table.is_iemocap else None
    names = names or tuple(f"class{c}" for c in range(max(k, 2)))
    return labels, "classification", names


# Features --------------------------------------------------------------------------------


def _speaker_of_face(face: str, uid: str) -> str | None:
    # GCNet's rule: a face file whose name contains 'F' is the female speaker's, else 'M';
    # a leading copy of the utterance id (whose 'Ses01F' would always match) is skipped.
    if face.startswith(uid):
        face = face[len(uid) :]
    if "F" in face:
        return "F"
    if "M" in face:
        return "M"
    return None


def read_features(folder: Path, utterances: list[str], speakers: list[str]) -> np.ndarray:
    """One feature vector per utterance from a GCNet feature folder.

    Parameters
    ----------
    folder : Path
        ``features/<name>``, holding ``<utterance_id>.npy`` or ``<utterance_id>/*.npy``.
    utterances, speakers : list of str
        Utterance ids and their speakers ('' when unknown: all faces are averaged).

    Returns
    -------
    ndarray
        (N, D) float32.

    Raises
    ------
    DataError
        If an utterance has neither file nor folder, a file is unreadable, or the sizes
        disagree; the message names the utterance id and the folder.
    """
    rows: list[np.ndarray | None] = []
    dim = None
    for uid, speaker in zip(utterances, speakers):
        file, faces = folder / f"{uid}.npy", folder / uid
        if file.is_file():
            vectors = [_load_npy(file, uid)]
        elif faces.is_dir():
            names = sorted(p.name for p in faces.iterdir() if p.suffix == ".npy")
            if speaker:
                for face in names:
                    if _speaker_of_face(Path(face).stem, uid) is None:
                        raise DataError(f"{faces / face}: face file of utterance {uid!r} names no speaker (F or M); expected the speaker letter in the name.")
                names = [f for f in names if _speaker_of_face(Path(f).stem, uid) == speaker]
            vectors = [_load_npy(faces / f, uid) for f in names]
        else:
            raise DataError(
                f"{folder}: no features for utterance {uid!r} (neither {file.name} nor a face folder {uid}/). Extract them, or point the loader at the right feature folder."
            )
        for v in vectors:
            if dim is not None and v.shape[-1] != dim:
                raise DataError(f"{folder}: utterance {uid!r} has {v.shape[-1]} features, others {dim}; one feature folder must hold one feature size.")
            dim = v.shape[-1]
        rows.append(np.mean(np.stack(vectors), axis=0) if vectors else None)
    if dim is None:
        raise DataError(f"{folder}: no feature files for any of the {len(utterances)} utterances.")
    return np.stack([r if r is not None else np.zeros(dim, np.float32) for r in rows]).astype(np.float32)


def _load_npy(path: Path, uid: str) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable feature file of utterance {uid!r} ({e}).") from None
    x = np.asarray(x, dtype=np.float32).squeeze()
    if x.ndim == 0:
        x = x.reshape(1)
    if x.ndim == 2:  # (T, D): average over time
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise DataError(f"{path}: features of utterance {uid!r} have shape {x.shape}; expected (D,) or (T, D).")
    return x


def _find_label_pickle(folder: Path) -> Path | None:
    candidates = sorted(folder.glob("*.pkl"))
    preferred = [p for p in candidates if "features_raw" in p.name]
    picks = preferred or candidates
    return picks[0] if len(picks) == 1 else None


def _is_gcnet(path: Path, content) -> bool:
    if path.is_dir():
        pickle_path = _find_label_pickle(path)
        return pickle_path is not None and is_label_table(load_pickle(pickle_path))
    return is_label_table(content)


def _feature_folders(root: Path, chosen: dict[str, str]) -> dict[str, Path]:
    """Modality -> feature folder: the named ones, else recognised folder names under ``root``."""
    folders: dict[str, Path] = {}
    available = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for m, option in MODALITY_OPTIONS.items():
        if chosen[m]:
            folder = root / chosen[m]
            if not folder.is_dir():
                raise DataError(f"{folder}: feature folder of {option}={chosen[m]!r} not found. Folders under {root}: {', '.join(available) or 'none'}.")
            folders[m] = folder
            continue
        exact = [name for name in available if name.lower() in (m, {"l": "text", "a": "audio", "v": "video"}[m])]
        hinted = exact or [name for name in available if any(h in name.lower() for h in FEATURE_HINTS[m])]
        if len(hinted) > 1:
            raise DataError(f"{root}: several feature folders could be modality {m!r} ({', '.join(hinted)}); choose one with {option}=NAME.")
        if hinted:
            folders[m] = root / hinted[0]
    if not folders:
        raise DataError(
            f"{root}: no feature folders recognised (found: {', '.join(available) or 'none'}). "
            "Name them with text_feature=, audio_feature=, video_feature= (e.g. --set data.audio_feature=wav2vec-large-c-UTT)."
        )
    return folders


@register_format("gcnet", description="GCNet/MoMKE label pickle + features/<name>/<utterance>.npy (MOSI, MOSEI, IEMOCAP)", detect=_is_gcnet)
def load_gcnet(
    path: Path,
    content,
    *,
    feature_dir: str = "",
    text_feature: str = "",
    audio_feature: str = "",
    video_feature: str = "",
    valid_fraction: float = 0.1,
    task: str = "",
    name: str = "",
) -> Dataset:
    """Build a :class:`Dataset` from a GCNet label pickle and its feature folders.

    Parameters
    ----------
    path : Path
        The label pickle, or a folder holding it (one ``*.pkl``) and ``features/``.
    content : list or None
        The unpickled label table (None for a folder).
    feature_dir : str
        Folder of the feature folders (default: ``features/`` beside the label pickle,
        else the pickle's own folder); relative to the pickle's folder.
    text_feature, audio_feature, video_feature : str
        Feature folder name per modality, e.g. ``deberta-large-4-UTT``,
        ``wav2vec-large-c-UTT``, ``manet_UTT``; by default recognised from the folder
        names (``l``/``text``, ``a``/``audio``, ``v``/``video`` or the usual extractor
        names). A modality without a folder is not loaded.
    valid_fraction : float
        IEMOCAP: share of each training session's dialogues used for validation.
    task : {"", "regression", "classification"}
        Default: by the table's layout (MOSI/MOSEI sentiment regression, IEMOCAP
        classes); ``classification`` for a 7-item table of classes.
    name : str
        Dataset name (default: ``gcnet:<pickle stem>``).
    """
    if path.is_dir():
        pickle_path = _find_label_pickle(path)
        if pickle_path is None:
            raise DataError(f"{path}: expected exactly one label pickle (*.pkl) in the folder; name the file instead.")
        content = None
    else:
        pickle_path = path
    table = read_label_table(pickle_path, content)
    base = pickle_path.parent
    if feature_dir:
        root = Path(feature_dir) if Path(feature_dir).is_absolute() else base / feature_dir
    else:
        root = base / "features" if (base / "features").is_dir() else base
    folders = _feature_folders(root, {"l": text_feature, "a": audio_feature, "v": video_feature})
    utterances = table.flat("utterances")
    speakers = table.flat("speakers") if table.is_iemocap else [""] * len(utterances)
    features = {m: read_features(folder, utterances, speakers) for m, folder in folders.items()}
    labels, task, class_names = table_labels(table, task)
    modalities = tuple(m for m in ("l", "a", "v") if m in features)
    checksums = file_checksum(pickle_path)
    for m in modalities:
        checksums[f"{folders[m].name}/*.npy"] = hashlib.sha256(features[m].tobytes()).hexdigest()
    logger.info("%s: %d utterances, features %s.", pickle_path, len(utterances), {m: folders[m].name for m in modalities})
    return Dataset(
        name=name or f"gcnet:{pickle_path.stem}",
        modalities=modalities,
        features=features,
        labels=labels,
        utterance_ids=utterances,
        video_ids=[v for v in table.videos for _ in table.utterances[v]],
        folds=table_folds(table, valid_fraction),
        task=task,
        transcripts=table.flat("sentences"),
        class_names=class_names,
        checksums=checksums,
        description=f"GCNet label pickle {pickle_path.name} with features from {root}",
        annotations={"speakers": table.flat("speakers")},
    )
