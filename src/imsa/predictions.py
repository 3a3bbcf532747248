"""Per-utterance predictions: what ``Method.predict_dataset`` returns and ``imsa predict`` writes.

New utterances without labels come in a documented NPZ file (:func:`read_features`)::

    utterance_ids   (N,) str                       required
    video_ids       (N,) str                       optional; default: each utterance its own video
    l, a, v, ...    (N, D) float, or (N, T, D)     one array per modality the file has
    <m>_lengths     (N,) int                       optional, valid steps of a sequence modality

A modality absent from the file, or an utterance row that is all NaN, is missing for that
utterance: it goes into the explicit ``present`` mask, never guessed from zeros.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.dataset import Dataset, Fold, Subset
from .data.feature_stats import far_outside
from .errors import ConfigError, DataError


@dataclass
class Predictions:
    """One prediction per utterance.

    Attributes
    ----------
    utterance_ids, video_ids : list of str
    labels : ndarray or None
        Known labels, None for new utterances.
    values : ndarray
        ``(N,)`` regression values, or ``(N, C)`` class probabilities.
    present : ndarray
        ``(N, M)`` bool: the modalities each prediction saw.
    modalities : tuple of str
    task : str
    class_names : tuple of str or None
    """

    utterance_ids: list[str]
    video_ids: list[str]
    labels: np.ndarray | None
    values: np.ndarray
    present: np.ndarray
    modalities: tuple[str, ...]
    task: str
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.utterance_ids)

    @property
    def classes(self) -> np.ndarray:
        """The predicted class per utterance (classification), or 0/1 per class (multilabel)."""
        return self.values.argmax(axis=-1)

    def present_names(self) -> list[str]:
        """``"l,a"`` per utterance: the modalities its prediction saw."""
        return [",".join(m for m, p in zip(self.modalities, row) if p) for row in self.present]


def to_csv(rows: list[tuple[dict, Predictions]]) -> str:
    """CSV text: one row per utterance and model, ``extra`` columns (seed, fold, models) first.

    Regression: ``prediction``; classification: ``prediction`` (the class name) and one
    ``prob_<class>`` column per class; multilabel: ``prediction`` (the classes predicted
    present, joined by ``+``) and ``prob_<class>``, each class's probability of being present. Floats are written with 9 significant digits, so
    float32 values read back exactly.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header_written = False
    for extra, predictions in rows:
        if not header_written:
            head = list(extra) + ["utterance_id", "video_id", "label", "prediction"]
            if predictions.task != "regression":
                head += [f"prob_{name}" for name in predictions.class_names]
            writer.writerow(head + ["modalities"])
            header_written = True
        names = predictions.present_names()
        for i in range(len(predictions)):
            label = "" if predictions.labels is None else _label(predictions, predictions.labels[i])
            if predictions.task == "regression":
                values = [f"{predictions.values[i]:.9g}"]
            elif predictions.task == "multilabel":
                values = [_label(predictions, predictions.classes[i])] + [f"{p:.9g}" for p in predictions.values[i][:, 1]]
            else:
                values = [predictions.class_names[predictions.classes[i]]] + [f"{p:.9g}" for p in predictions.values[i]]
            writer.writerow(list(extra.values()) + [predictions.utterance_ids[i], predictions.video_ids[i], label] + values + [names[i]])
    return buffer.getvalue()


def _label(predictions: Predictions, label) -> str:
    if predictions.task == "regression":
        return f"{float(label):.9g}"
    if predictions.task == "multilabel":
        return "+".join(name for name, on in zip(predictions.class_names, label) if on)
    return predictions.class_names[int(label)]


def read_features(path: str | os.PathLike, spec, class_names=None) -> tuple[Dataset, np.ndarray]:
    """New utterances from an NPZ file, as a dataset of the model's shape and its ``present`` mask.

    Parameters
    ----------
    path : path
    spec : DataSpec
        The model's data spec: modality names, dimensions, sequence or vector.

    Returns
    -------
    dataset : Dataset
        One fold whose test split holds every video; labels are placeholders.
    present : ndarray
        ``(N, M)`` bool.

    Raises
    ------
    DataError
        For a file that is not a plain NPZ, unknown arrays, wrong dimensions, or an
        utterance with no modality at all; the message names the file and the fix.
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: features file not found.") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not an NPZ file of plain arrays ({e}).") from None
    with archive:
        arrays = {k: archive[k] for k in archive.files}
    return features_dataset(arrays, path, spec, class_names)


def features_dataset(arrays: dict[str, np.ndarray], path: Path, spec, class_names=None) -> tuple[Dataset, np.ndarray]:
    """:func:`read_features` on arrays already read (``path`` names their source in messages)."""
    modalities = spec.modalities
    known = {"utterance_ids", "video_ids", *modalities, *(f"{m}_lengths" for m in modalities)}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise DataError(f"{path}: unknown array(s) {', '.join(unknown)}; this model reads utterance_ids, video_ids and the modalities {', '.join(modalities)}.")
    if "utterance_ids" not in arrays:
        raise DataError(f"{path}: no 'utterance_ids' array (one id per utterance).")
    ids = [str(u) for u in arrays["utterance_ids"].reshape(-1)]
    n = len(ids)
    if n == 0:
        raise DataError(f"{path}: no utterances.")
    videos = [str(v) for v in arrays["video_ids"].reshape(-1)] if "video_ids" in arrays else list(ids)
    if len(videos) != n:
        raise DataError(f"{path}: {len(videos)} video ids for {n} utterances.")
    if not any(m in arrays for m in modalities):
        raise DataError(f"{path}: none of the model's modalities ({', '.join(modalities)}) is in the file.")
    features, lengths = {}, {}
    present = np.zeros((n, len(modalities)), dtype=bool)
    for k, m in enumerate(modalities):
        rank = 3 if spec.sequence[m] else 2
        if m not in arrays:
            shape = (n, 1, spec.dims[m]) if rank == 3 else (n, spec.dims[m])
            features[m] = np.zeros(shape, np.float32)
            if rank == 3:
                lengths[m] = np.ones(n, np.int64)
            continue
        try:
            x = np.asarray(arrays[m], dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{path}: array {m!r} is not numeric.") from None
        expected = f"({n}, T, {spec.dims[m]})" if rank == 3 else f"({n}, {spec.dims[m]})"
        if x.ndim != rank or len(x) != n or x.shape[-1] != spec.dims[m]:
            raise DataError(f"{path}: array {m!r} has shape {x.shape}; this model needs {expected}.")
        rows = x.reshape(n, -1)
        missing = np.isnan(rows).all(axis=1)
        present[:, k] = ~missing
        bad = ~np.isfinite(rows[~missing])
        if bad.any():
            raise DataError(
                f"{path}: array {m!r} holds {int(bad.sum())} NaN or infinite values in rows that are not all NaN; a missing modality is a row of NaN, nothing else."
            )
        features[m] = np.where(np.isnan(x), np.float32(0), x)
        if rank == 3:
            steps = arrays.get(f"{m}_lengths")
            lengths[m] = np.full(n, x.shape[1], np.int64) if steps is None else np.asarray(steps, dtype=np.int64).reshape(-1)
            if len(lengths[m]) != n or (lengths[m] < 1).any() or (lengths[m] > x.shape[1]).any():
                raise DataError(f"{path}: {m}_lengths must hold {n} values in [1, {x.shape[1]}].")
    nothing = ~present.any(axis=1)
    if nothing.any():
        first = [ids[i] for i in np.flatnonzero(nothing)[:3]]
        raise DataError(f"{path}: {int(nothing.sum())} utterance(s) have no modality at all (every row NaN), e.g. {', '.join(first)}; remove them.")
    order = list(dict.fromkeys(videos))
    dataset = Dataset(
        name=path.stem,
        modalities=modalities,
        features=features,
        labels=np.zeros(n, np.float32) if spec.task == "regression" else np.zeros(n, np.int64),
        utterance_ids=ids,
        video_ids=videos,
        folds=[Fold(train=(), valid=(), test=tuple(order))],
        task=spec.task,
        lengths=lengths,
        class_names=tuple(class_names) if class_names else (tuple(f"class{c}" for c in range(spec.output_dim)) if spec.task == "classification" else None),
    )
    return dataset, present


def unfamiliar_inputs(method, dataset: Dataset, utterance_ids, present: np.ndarray | None = None) -> tuple[int, dict[str, int]]:
    """How many of ``utterance_ids`` have features far outside ``method``'s training features:
    in all, and per modality.

    See :mod:`imsa.data.feature_stats`; ``(0, {})`` for a model file written before imsa
    recorded those statistics.
    """
    stats = getattr(method, "feature_stats_", None) or {}
    position = {u: i for i, u in enumerate(dataset.utterance_ids)}
    rows = np.array(sorted({position[u] for u in utterance_ids if u in position}), dtype=np.int64)
    if not stats or not len(rows):
        return 0, {}
    flags = far_outside(dataset, stats, rows, present)
    if not flags:
        return 0, {}
    return int(np.any(list(flags.values()), axis=0).sum()), {m: int(far.sum()) for m, far in flags.items() if far.any()}


def modality_mask(subset: Subset, names: tuple[str, ...], modalities=None, present: np.ndarray | None = None, *, owner: str = "the model") -> np.ndarray:
    """The ``(N_dataset, M)`` mask of what each utterance may use: the ``modalities`` asked for
    (default all of ``names``) where ``present`` (default: all); refuses a modality that is not
    one of ``names`` and an utterance of ``subset`` left with none."""
    dataset = subset.dataset
    if modalities is not None:
        modalities = tuple(modalities)
        unknown = [m for m in modalities if m not in names]
        if unknown or not modalities:
            what = f"{', '.join(repr(m) for m in unknown)} is not among" if unknown else "none of"
            raise ConfigError(
                f"Modalities {','.join(modalities) or '(none)'}: {what} the modalities of {owner}; give a comma-separated subset of {','.join(names)}."
            )
    mask = np.ones((len(dataset), len(names)), dtype=bool)
    if modalities is not None:
        mask[:, [m not in modalities for m in names]] = False
    if present is not None:
        mask &= np.asarray(present, dtype=bool)
    empty = ~mask[subset.indices].any(axis=1)
    if empty.any():
        first = [dataset.utterance_ids[i] for i in subset.indices[empty][:3]]
        raise DataError(f"{dataset.name}: {int(empty.sum())} utterance(s) have none of the modalities asked for, e.g. {', '.join(first)}.")
    return mask


def training_data(provenance: dict, *, dataset: str | None = None, data_dir=None) -> tuple[str | None, str | None]:
    """The dataset and data root to score with: the ones given, else those the model file records.

    A model written by ``imsa run`` or a grid records the data root it was trained from
    (``data_dir``) and, for a dataset given by path, its absolute path
    (``dataset_path``), so ``imsa predict RUN_DIR`` finds the data again from any
    directory without ``--data-dir``; a given ``data_dir`` overrides, and a recorded
    location that no longer exists falls back to ``$IMSA_DATA`` or the user cache.
    """
    name = dataset or provenance.get("dataset")
    if dataset is None and provenance.get("dataset_path") and Path(provenance["dataset_path"]).exists():
        name = provenance["dataset_path"]
    recorded = provenance.get("data_dir")
    if data_dir is None and recorded and Path(recorded).is_dir():
        data_dir = recorded
    return name, data_dir


def predict_models(
    models: list, dataset: Dataset, *, split: str = "test", modalities=None, present=None, all_models: bool = False
) -> list[tuple[dict, Predictions]]:
    """Score ``dataset`` with fitted models, each on the utterances its fold held out.

    Parameters
    ----------
    models : list of (seed, fold, Method)
    split : {"test", "valid", "train", "all"}
        Each model scores its own fold's split of ``dataset`` (so on a cross-validated
        dataset every utterance is scored by the models that never trained on it);
        ``"all"`` scores every utterance.
    modalities, present
        As :meth:`imsa.methods.Method.predict_dataset`.
    all_models : bool
        Every model scores the whole split of every fold, i.e. every utterance.

    Returns
    -------
    list of (dict, Predictions)
        ``({"seed": s, "fold": f}, predictions)`` per model.
    """
    rows = []
    for seed, fold, method in models:
        if split == "all" or all_models:
            subset = dataset
        else:
            if not 0 <= fold < len(dataset.folds):
                raise DataError(
                    f"{dataset.name} has {len(dataset.folds)} fold(s); the model of fold {fold} cannot score its {split} split. Use --split all or --all-models."
                )
            subset = dataset.split(fold)[split]
            if len(subset) == 0:
                raise DataError(f"{dataset.name}: the {split} split of fold {fold} is empty.")
        rows.append(({"seed": seed, "fold": fold}, method.predict_dataset(subset, modalities, present=present)))
    return rows


def predict_media(models: list, media, *, transcript=None, modalities=None, cache_dir=None, source: str = "the model") -> tuple[list[dict], Predictions | None]:
    """Extract ``media`` as the models' training data was extracted and predict each segment.

    Parameters
    ----------
    models : list of (seed, fold, Method)
        Trained on a folder of ``imsa extract`` (their model files record how).
    media, transcript : path
        A video or audio file and its SRT, WebVTT or plain-text transcript (default:
        the one beside it).

    Returns
    -------
    segments : list of dict
        Every segment: ``utterance_id``, ``start``, ``end``, presence flags, ``reason``.
    predictions : Predictions or None
        The segments with a modality present, averaged over ``models``; None if none has.
    """
    from .media.predict import media_features

    spec = models[0][2].spec_
    provenance = models[0][2].provenance_
    arrays, segments = media_features(
        provenance.get("extraction"), spec, media, transcript=transcript, cache_dir=cache_dir, model=source, trained_on=provenance.get("dataset") or ""
    )
    if not len(arrays["utterance_ids"]):
        return segments, None
    dataset, present = features_dataset(arrays, Path(media), spec, spec.class_names)
    rows = predict_models(models, dataset, split="all", modalities=modalities, present=present)
    return segments, (average(rows)[1] if len(rows) > 1 else rows[0][1])


def average(rows: list[tuple[dict, Predictions]]) -> tuple[dict, Predictions]:
    """The mean of several models' predictions per utterance (class probabilities for classes).

    Utterances keep the order in which they first appear; ``models`` counts the models
    averaged for each utterance (the CSV reports the smallest count).
    """
    first = rows[0][1]
    order: dict[str, int] = {}
    ids, videos, labels, present = [], [], [], []
    sums, counts = [], []
    for _, p in rows:
        for i, uid in enumerate(p.utterance_ids):
            k = order.get(uid)
            if k is None:
                k = order[uid] = len(ids)
                ids.append(uid)
                videos.append(p.video_ids[i])
                labels.append(None if p.labels is None else p.labels[i])
                present.append(p.present[i])
                sums.append(np.zeros_like(p.values[i], dtype=np.float64))
                counts.append(0)
            sums[k] = sums[k] + p.values[i]
            counts[k] += 1
    values = (np.stack(sums) / np.asarray(counts, dtype=np.float64).reshape((-1,) + (1,) * (np.ndim(sums[0])))).astype(np.float32)
    averaged = Predictions(
        utterance_ids=ids,
        video_ids=videos,
        labels=None if first.labels is None else np.asarray(labels),
        values=values,
        present=np.stack(present),
        modalities=first.modalities,
        task=first.task,
        class_names=first.class_names,
    )
    return {"models": min(counts)}, averaged
