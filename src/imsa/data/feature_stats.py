"""How far new inputs lie from the features a model was trained on.

A model fitted on features of one scale silently returns nonsense for features of
another (a different extractor, unnormalised values): a sentiment model on [-3, 3]
predicted 12.2 for such inputs. At fit time each method records, per modality, the
per-dimension mean and spread of its training features and how far its training
utterances lie from them; ``imsa predict`` measures new utterances the same way and
warns about those far beyond anything seen in training.

The distance of an utterance is the root mean square, over its feature values (every
real time step of a sequence), of ``(x - mean) / scale``; ``scale`` is the training
standard deviation of each dimension, floored at a tenth of the modality's mean
deviation so that a near-constant dimension does not turn a tiny change into a huge
distance. A training utterance lies at about 1. ``limit`` is 4 times the 99th
percentile of the training distances (and at least 4); beyond it an utterance is
reported. Training sets larger than ``MAX_ROWS`` utterances are described by ``MAX_ROWS`` of
them, evenly spaced: the statistics need no more, and on CMU-MOSEI's 16,326 training
utterances measuring all of them cost more than an epoch of the lighter models.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset

CHUNK = 512  # utterances per pass, so that a MOSEI-sized sequence modality is never copied whole
MAX_ROWS = 4096
LIMIT_FACTOR = 4.0
SCALE_FLOOR = 0.1


def _rows(dataset: Dataset, modality: str, rows: np.ndarray):
    """(values, real-step mask or None) of ``rows``, in chunks."""
    x = dataset.features[modality]
    for start in range(0, len(rows), CHUNK):
        index = rows[start : start + CHUNK]
        values = np.asarray(x[index], dtype=np.float64)
        if values.ndim == 3:
            steps = np.arange(values.shape[1])
            yield values, steps[None, :] < np.asarray(dataset.lengths[modality])[index][:, None]
        else:
            yield values, None


def feature_statistics(dataset: Dataset, rows, modalities=None) -> dict:
    """Per modality: ``mean`` and ``scale`` per dimension and the distance ``limit``, from ``rows`` of ``dataset``.

    Rows whose features are all zero (a missing modality) do not count; of more than
    ``MAX_ROWS`` rows, ``MAX_ROWS`` evenly spaced ones are measured.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > MAX_ROWS:
        rows = rows[np.linspace(0, len(rows) - 1, MAX_ROWS).round().astype(np.int64)]
    stats = {}
    for m in modalities or dataset.modalities:
        total, squares, count = 0.0, 0.0, 0
        for values, real in _rows(dataset, m, rows):
            keep = _kept(values, real)
            total = total + values[keep].sum(axis=0)
            squares = squares + (values[keep] ** 2).sum(axis=0)
            count += int(keep.sum())
        if count < 2:
            continue
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
        scale = np.maximum(std, SCALE_FLOOR * std.mean() + 1e-12)
        entry = {"mean": mean, "scale": scale}
        distances = _distances(dataset, m, rows, entry)
        distances = distances[np.isfinite(distances)]
        limit = max(LIMIT_FACTOR * float(np.quantile(distances, 0.99)), LIMIT_FACTOR) if len(distances) else LIMIT_FACTOR
        stats[m] = {"mean": [float(v) for v in mean.astype(np.float32)], "scale": [float(v) for v in scale.astype(np.float32)], "limit": limit}
    return stats


def _present_rows(values: np.ndarray) -> np.ndarray:
    """Which utterances hold data: those whose features are not all zero (a missing modality)."""
    return np.any(values.reshape(len(values), -1) != 0, axis=1)


def _kept(values: np.ndarray, real) -> np.ndarray:
    """Which rows (or time steps) hold data: real steps of utterances that are not all zero."""
    present = _present_rows(values)
    return present if real is None else real & present[:, None]


def _distances(dataset: Dataset, modality: str, rows: np.ndarray, entry: dict) -> np.ndarray:
    mean, scale = np.asarray(entry["mean"], np.float64), np.asarray(entry["scale"], np.float64)
    out = []
    for values, real in _rows(dataset, modality, rows):
        z2 = ((values - mean) / scale) ** 2
        if real is None:
            d = np.sqrt(z2.mean(axis=1))
        else:
            steps = real.sum(axis=1)
            d = np.sqrt((z2 * real[:, :, None]).sum(axis=(1, 2)) / np.maximum(steps * values.shape[2], 1))
        d[~_present_rows(values)] = np.nan
        out.append(d)
    return np.concatenate(out) if out else np.zeros(0)


def far_outside(dataset: Dataset, stats: dict, rows=None, present: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per modality with statistics: a bool per row of ``rows``, True where the utterance lies beyond the limit.

    ``present`` ``(N, M)`` leaves out modalities an utterance does not have.
    """
    rows = np.arange(len(dataset)) if rows is None else np.asarray(rows, dtype=np.int64)
    flags = {}
    for k, m in enumerate(dataset.modalities):
        entry = stats.get(m)
        if entry is None or len(entry["mean"]) != dataset.features[m].shape[-1]:
            continue
        distances = _distances(dataset, m, rows, entry)
        far = np.nan_to_num(distances, nan=0.0) > entry["limit"]
        if present is not None:
            far &= present[rows, k]
        flags[m] = far
    return flags
