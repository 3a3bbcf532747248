"""The common dataset: utterances grouped into videos or dialogues.

Every loader, whatever its file format, produces a :class:`Dataset`. Features are
held per modality as one array over all utterances: ``(N, D)`` for utterance
vectors, ``(N, T, D)`` (zero-padded) plus ``lengths`` for time sequences. Splits
are given as folds of video ids, so that utterances of one video never straddle
train and test.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import ConfigError, DataError
from ..text import TEXT_TOKENS

logger = logging.getLogger(__name__)

TASKS = ("regression", "classification", "multilabel")
SPLITS = ("train", "valid", "test")
# Annotation: (N, M) bool, the modalities an utterance has at its source (extraction found no
# face, no speech, no transcript); batches keep the others missing under every protocol.
SOURCE_PRESENT = "source_present"


@dataclass(frozen=True)
class Fold:
    """One train/valid/test partition, as tuples of video ids."""

    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    def videos(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise ConfigError(f"Unknown split {split!r}. Valid splits: {', '.join(SPLITS)}.")
        return getattr(self, split)


@dataclass
class Dataset:
    """Utterances with per-modality features, labels and folds.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"mosi-bclstm"``.
    modalities : tuple of str
        Modality codes in the order used by every ``present`` mask, e.g. ``("l", "a", "v")``.
    features : dict of str to ndarray
        ``(N, D)`` float32 utterance vectors or ``(N, T, D)`` zero-padded sequences.
    labels : ndarray
        ``(N,)`` float32 continuous labels (regression) or int64 classes (classification);
        ``(N, K)`` int64 0/1 for ``multilabel``: each of the K ``class_names`` (e.g. IEMOCAP
        emotions as MulT packs them) present or absent, a binary task per class.
    utterance_ids, video_ids : list of str
        Per utterance; utterances of one video are contiguous and in spoken order.
    folds : list of Fold
        Published split (one fold) or cross-validation folds.
    task : {"regression", "classification", "multilabel"}
    lengths : dict of str to ndarray, optional
        ``(N,)`` valid time steps for sequence modalities.
    transcripts : list of str, optional
    class_names : tuple of str, optional
    checksums : dict of str to str
        sha256 of the files the dataset was read from, for provenance.
    description : str
    annotations : dict of str to sequence, optional
        Further per-utterance data of length N that a format carries, e.g. ``"words"``
        (one list of words per utterance, row t of the word-aligned sequences belongs to
        word t), ``"speakers"``, or extra label columns.
    extraction : dict, optional
        For features ``imsa extract`` made from media: its configuration (extractors,
        options, rates, thresholds, package versions), recorded in model files so that
        ``imsa predict --media`` extracts new media the same way.
    family : str
        The corpus it comes from (``mosi``, ``iemocap4``, ...; see
        :mod:`imsa.data.families`), which picks packaged method configs; ``""`` unknown.
    family_source : str
        How the family was known: ``registered``, ``given``, or the detection evidence.
    """

    name: str
    modalities: tuple[str, ...]
    features: dict[str, np.ndarray]
    labels: np.ndarray
    utterance_ids: list[str]
    video_ids: list[str]
    folds: list[Fold]
    task: str = "regression"
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    transcripts: list[str] | None = None
    class_names: tuple[str, ...] | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    description: str = ""
    annotations: dict = field(default_factory=dict)
    family: str = ""
    family_source: str = ""
    extraction: dict | None = None

    def __post_init__(self):
        self.modalities = tuple(self.modalities)
        n = len(self.utterance_ids)
        if self.task not in TASKS:
            raise ConfigError(f"Unknown task {self.task!r}. Valid tasks: {', '.join(TASKS)}.")
        if set(self.features) != set(self.modalities):
            raise DataError(f"{self.name}: features given for {sorted(self.features)} but modalities are {self.modalities}.")
        for m, x in self.features.items():
            if x.ndim not in (2, 3) or len(x) != n:
                raise DataError(f"{self.name}: features of modality {m!r} have shape {x.shape}; expected ({n}, D) or ({n}, T, D).")
            if x.ndim == 3 and m not in self.lengths:
                raise DataError(f"{self.name}: sequence modality {m!r} needs lengths.")
        if len(self.labels) != n or len(self.video_ids) != n:
            raise DataError(f"{self.name}: {n} utterance ids but {len(self.labels)} labels and {len(self.video_ids)} video ids.")
        if self.transcripts is not None and len(self.transcripts) != n:
            raise DataError(f"{self.name}: {len(self.transcripts)} transcripts for {n} utterances.")
        for key, values in self.annotations.items():
            if len(values) != n:
                raise DataError(f"{self.name}: annotation {key!r} has {len(values)} entries for {n} utterances.")
        source = self.annotations.get(SOURCE_PRESENT)
        if source is not None and np.shape(source) != (n, len(self.modalities)):
            raise DataError(
                f"{self.name}: annotation {SOURCE_PRESENT!r} has shape {np.shape(source)}; expected ({n}, {len(self.modalities)}), one flag per modality."
            )
        tokens = self.annotations.get(TEXT_TOKENS)
        text = self.features.get("l")
        if tokens is not None and text is not None:  # what batches carry as the text's token ids
            shape = np.shape(tokens)
            if text.ndim != 3 or len(shape) != 3 or shape[1] != 3 or shape[2] != text.shape[1] or not np.issubdtype(np.asarray(tokens).dtype, np.integer):
                raise DataError(
                    f"{self.name}: annotation 'text_bert' has shape {shape}; token ids must be integers of shape ({n}, 3, T) "
                    f"(ids, attention mask, segment ids) with T the text sequence's steps ({text.shape[1:2]})."
                )
        if self.task == "multilabel":
            k = len(self.class_names or ())
            if self.labels.shape != (n, k) or not np.isin(self.labels, (0, 1)).all():
                raise DataError(f"{self.name}: multilabel labels must be 0/1 of shape ({n}, {k}) (one column per class name); got shape {self.labels.shape}.")
        bad = ~np.isfinite(np.asarray(self.labels, dtype=np.float64))
        if bad.any():
            first = [self.utterance_ids[i] for i in np.flatnonzero(bad)[:3]]
            raise DataError(f"{self.source}: {int(bad.sum())} label(s) are NaN or infinite, e.g. utterance(s) {', '.join(first)}; fix or remove them.")
        if len(set(self.utterance_ids)) != n:
            raise DataError(f"{self.name}: utterance ids are not unique.")
        known = set(self.video_ids)
        for k, fold in enumerate(self.folds):
            for split in SPLITS:
                unknown = set(fold.videos(split)) - known
                if unknown:
                    raise DataError(f"{self.name}: fold {k} {split} names unknown videos {sorted(unknown)[:3]}.")
        self.features = {m: sanitize_features(x, f"{self.name}/{m}") for m, x in self.features.items()}

    @property
    def source(self) -> str:
        """The dataset for messages: its name and, for one read from a user's files, the files."""
        if self.checksums and self.family_source != "registered":
            return f"{self.name} (read from {', '.join(sorted(self.checksums))})"
        return self.name

    # -- shape information -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.utterance_ids)

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a classification dataset; None for regression."""
        return len(self.class_names) if self.class_names else None

    @property
    def output_dim(self) -> int:
        """Width of a model's prediction: 1 for regression, the class count for classes,
        two logits (absent, present) per class for ``multilabel``."""
        if self.task == "multilabel":
            return 2 * self.num_classes
        return 1 if self.task == "regression" else self.num_classes

    def dim(self, modality: str) -> int:
        """The feature width of ``modality``."""
        return self.features[modality].shape[-1]

    @property
    def dims(self) -> dict[str, int]:
        """The feature width of every modality."""
        return {m: self.dim(m) for m in self.modalities}

    def is_sequence(self, modality: str) -> bool:
        """Whether ``modality`` holds (N, T, D) sequences rather than (N, D) vectors."""
        return self.features[modality].ndim == 3

    # -- grouping --------------------------------------------------------------------------
    @cached_property
    def video_index(self) -> dict[str, np.ndarray]:
        """Video id -> utterance indices in spoken order."""
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(self.video_ids):
            groups.setdefault(v, []).append(i)
        return {v: np.asarray(ix, dtype=np.int64) for v, ix in groups.items()}

    @cached_property
    def speakers(self) -> tuple[np.ndarray, int]:
        """``(N,)`` speaker index of every utterance and the number of speaker indices.

        From ``annotations["speakers"]``: with at most two distinct labels they are
        indexed in sorted order over the dataset (IEMOCAP F = 0, M = 1, as GCNet's code);
        with more, speakers are indexed within each video by order of first appearance,
        and the count is the most any video has. Without the annotation every utterance
        is speaker 0 of 1.
        """
        labels = self.annotations.get("speakers")
        n = len(self.utterance_ids)
        if labels is None:
            return np.zeros(n, dtype=np.int64), 1
        labels = [str(s) for s in labels]
        distinct = sorted(set(labels))
        if len(distinct) <= 2:
            index = {s: k for k, s in enumerate(distinct)}
            return np.array([index[s] for s in labels], dtype=np.int64), max(len(distinct), 1)
        out = np.zeros(n, dtype=np.int64)
        count = 1
        for rows in self.video_index.values():
            seen: dict[str, int] = {}
            for i in rows:
                out[i] = seen.setdefault(labels[i], len(seen))
            count = max(count, len(seen))
        return out, count

    def split(self, fold: int = 0) -> dict[str, "Subset"]:
        """The train/valid/test subsets of one fold."""
        if not 0 <= fold < len(self.folds):
            raise ConfigError(f"Dataset {self.name} has {len(self.folds)} fold(s); fold {fold} does not exist.")
        f = self.folds[fold]
        return {s: Subset(self, f.videos(s)) for s in SPLITS}

    @cached_property
    def checksum(self) -> str:
        """sha256 over the source files' checksums, or over the arrays when there are none."""
        h = hashlib.sha256()
        if self.checksums:
            for path in sorted(self.checksums):
                h.update(f"{path}={self.checksums[path]};".encode())
        else:
            for m in self.modalities:
                h.update(np.ascontiguousarray(self.features[m]).tobytes())
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


class Subset:
    """The utterances of some videos of a :class:`Dataset` (a split of one fold).

    ``indices`` are dataset utterance indices, video by video in the order given.
    """

    def __init__(self, dataset: Dataset, videos):
        self.dataset = dataset
        self.videos = tuple(videos)
        self.video_utterances = [dataset.video_index[v] for v in self.videos]
        self.indices = np.concatenate(self.video_utterances) if self.videos else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"Subset({self.dataset.name}, {len(self.videos)} videos, {len(self)} utterances)"

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels[self.indices]


def sanitize_features(x: np.ndarray, where: str) -> np.ndarray:
    """float32 copy with NaN and +-inf replaced by 0, with a warning that counts them."""
    x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    count = int(bad.sum())
    if count:
        logger.warning("%s: replaced %d non-finite values (NaN/inf) by 0.", where, count)
        x = np.where(bad, np.float32(0), x)
    return x
