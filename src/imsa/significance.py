"""Is a difference in a table real? Two paired tests between two methods on the same runs.

* :func:`paired_permutation_p` — over the matched seed x fold runs (same seed, same fold,
  same test masks): the exact two-sided sign-flip permutation test of the mean of the
  per-run differences, i.e. of the very number the table compares. Exact for up to 16
  pairs (65,536 sign patterns), Monte Carlo beyond. It assumes nothing about the shape
  of the differences, but it has few pairs to work with: with 5 runs the smallest
  possible p is 2/32 = 0.0625, so no difference over 5 runs can reach p < 0.05.
* :func:`paired_bootstrap_p` — over test utterances: the utterances of every run are
  resampled with replacement (each run on its own, the same draw for both methods and
  for every condition of an average), the metric recomputed for both methods, and the
  two-sided p is twice the share of resamples whose difference falls on the other side
  of zero (Koehn 2004; Berg-Kirkpatrick et al. 2012). It measures how much the
  difference depends on which utterances happened to be in the test sets, for the
  trained models at hand; it does not cover retraining variance, which the first test does.

The metrics are recomputed vectorised over resamples, with the definitions of
:mod:`imsa.metrics` (checked against it in the tests).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from .metrics import METRICS, SIMS_BINS, SIMS_METRICS

EXACT_PAIRS = 16
MONTE_CARLO_DRAWS = 100_000


def paired_permutation_p(differences: Sequence[float], *, seed: int = 0) -> float:
    """Two-sided p of the sign-flip permutation test that the mean paired difference is 0.

    ``p = (# sign patterns with |mean| >= |observed mean|) / (# patterns)``; the
    observed pattern counts, so p >= 1 / 2^(n-1). NaN for no pairs; 1 when every
    difference is 0.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan")
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, np.abs(d).max())
    if len(d) <= EXACT_PAIRS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(MONTE_CARLO_DRAWS, len(d)))
        signs[0] = 1.0  # the observed pattern
    means = np.abs(signs @ d) / len(d)
    return float(np.mean(means >= observed - tolerance))


def smallest_permutation_p(pairs: int) -> float:
    """The smallest p :func:`paired_permutation_p` can give with ``pairs`` differences.

    Exact test: 2 / 2^n (the observed sign pattern and its mirror image are always as
    extreme as themselves), e.g. 0.0625 for 5 runs, 0.0039 for 9 and 3.1e-5 for 16. The
    Monte Carlo test beyond 16 pairs counts the observed pattern among its draws, so its
    floor is 1 / draws. NaN for no pairs.
    """
    if pairs < 1:
        return float("nan")
    return 2.0 / 2**pairs if pairs <= EXACT_PAIRS else 1.0 / MONTE_CARLO_DRAWS


def _weighted_f1(hits, true_counts, predicted_counts) -> np.ndarray:
    """Weighted F1 per resample from per-class counts of shape (B, C)."""
    denominator = true_counts + predicted_counts
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros_like(hits, dtype=np.float64), where=denominator > 0)
    total = true_counts.sum(axis=1)
    return np.divide((f1 * true_counts).sum(axis=1), total, out=np.full(len(total), np.nan), where=total > 0)


def _class_counts(true: np.ndarray, predicted: np.ndarray, counts: np.ndarray, classes: int):
    """Per-resample hits, true and predicted counts per class; ``counts`` (B, N) is how often each utterance was drawn."""
    hits = np.stack([counts @ ((true == c) & (predicted == c)) for c in range(classes)], axis=1)
    true_counts = np.stack([counts @ (true == c) for c in range(classes)], axis=1)
    predicted_counts = np.stack([counts @ (predicted == c) for c in range(classes)], axis=1)
    return hits.astype(np.float64), true_counts.astype(np.float64), predicted_counts.astype(np.float64)


def resampled_metric(metric: str, prediction: np.ndarray, label: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``metric`` on each resample, where ``counts[b, i]`` is how often utterance i was drawn in resample b.

    ``prediction``: regression values, or class scores ``(N, C)`` / class indices.
    """
    counts = counts.astype(np.float64)
    n = counts.sum(axis=1)
    if metric in ("emotion_binary_acc", "emotion_binary_f1"):  # (N, K, 2) scores or (N, K) decisions; the mean over classes
        decisions = prediction.argmax(axis=-1) if prediction.ndim == 3 else prediction.astype(np.int64)
        per_class = [resampled_metric("wa" if metric == "emotion_binary_acc" else "wf1", decisions[:, k], label[:, k], counts) for k in range(label.shape[1])]
        return np.mean(per_class, axis=0)
    if metric in ("wa", "ua", "wf1"):
        predicted = prediction.argmax(axis=-1) if prediction.ndim == 2 else prediction.astype(np.int64)
        true = label.astype(np.int64)
        classes = int(max(true.max(), predicted.max())) + 1
        if metric == "wa":
            return counts @ (predicted == true) / n
        hits, true_counts, predicted_counts = _class_counts(true, predicted, counts, classes)
        if metric == "wf1":
            return _weighted_f1(hits, true_counts, predicted_counts)
        recall = np.divide(hits, true_counts, out=np.zeros_like(hits), where=true_counts > 0)
        return recall.sum(axis=1) / np.maximum((true_counts > 0).sum(axis=1), 1)
    p, y = prediction.astype(np.float64).reshape(-1), label.astype(np.float64).reshape(-1)
    if metric in SIMS_METRICS:  # the CH-SIMS set: clipped to [-1, 1], then binned (see imsa.metrics.sims_metrics)
        p, y = np.clip(p, -1.0, 1.0), np.clip(y, -1.0, 1.0)
        if metric in ("mae_sims", "corr_sims"):
            return resampled_metric(metric.removesuffix("_sims"), p, y, counts)
        edges = np.asarray(SIMS_BINS[{"acc2_sims": 2, "f1_sims": 2, "acc3_sims": 3, "acc5_sims": 5}[metric]])
        true, predicted = np.searchsorted(edges, y, side="left") - 1, np.searchsorted(edges, p, side="left") - 1
        if metric == "f1_sims":
            return _weighted_f1(*_class_counts(true, predicted, counts, 2))
        return counts @ (true == predicted) / n
    if metric == "mae":
        return counts @ np.abs(p - y) / n
    if metric == "corr":
        mp, my = counts @ p / n, counts @ y / n
        cov = counts @ (p * y) / n - mp * my
        vp, vy = counts @ (p * p) / n - mp**2, counts @ (y * y) / n - my**2
        denominator = np.sqrt(np.clip(vp, 0, None) * np.clip(vy, 0, None))
        # NaN where a resample is constant on either side, as imsa.metrics gives
        return np.clip(np.divide(cov, denominator, out=np.full_like(cov, np.nan), where=denominator > 1e-15), -1.0, 1.0)
    if metric in ("acc7", "acc5"):
        bound = 3 if metric == "acc7" else 2
        return counts @ (np.round(np.clip(p, -bound, bound)) == np.round(np.clip(y, -bound, bound))) / n
    if metric in ("acc2_has0", "f1_has0"):
        true, predicted = (y >= 0).astype(np.int64), (p >= 0).astype(np.int64)
        if metric == "acc2_has0":
            return counts @ (true == predicted) / n
        return _weighted_f1(*_class_counts(true, predicted, counts, 2))
    if metric in ("acc2_non0", "f1_non0"):
        keep = y != 0
        kept = counts[:, keep]
        true, predicted = (y[keep] > 0).astype(np.int64), (p[keep] > 0).astype(np.int64)
        if metric == "acc2_non0":
            total = kept.sum(axis=1)
            return np.divide(kept @ (true == predicted), total, out=np.full(len(total), np.nan), where=total > 0)
        return _weighted_f1(*_class_counts(true, predicted, kept, 2))
    raise ValueError(f"unknown metric {metric!r}")


def paired_bootstrap_p(strata: list, metric: str, *, resamples: int = 1000, seed: int = 0) -> float:
    """Two-sided p of the paired bootstrap over test utterances.

    Parameters
    ----------
    strata : list of (labels, [(prediction_a, prediction_b), ...])
        One per matched run: its test labels and, per condition (one, or several for an
        average over conditions or rates), both methods' predictions of the same utterances.
    metric : str
    resamples : int
    seed : int

    Returns
    -------
    float
        ``min(1, 2 * (min(#(delta* <= 0), #(delta* >= 0)) + 1) / (resamples + 1))`` where
        delta* is the mean over runs and conditions of metric(a) - metric(b) on a
        resample (at least 2 / (resamples + 1)); NaN without strata.
    """
    if not strata:
        return float("nan")
    rng = np.random.default_rng(seed)
    delta = np.zeros(resamples)
    for labels, pairs in strata:
        n = len(labels)
        draws = rng.integers(0, n, size=(resamples, n))
        counts = np.zeros((resamples, n))
        np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
        for a, b in pairs:
            delta += resampled_metric(metric, a, labels, counts) - resampled_metric(metric, b, labels, counts)
    delta /= sum(len(pairs) for _, pairs in strata)
    delta = delta[np.isfinite(delta)]
    if len(delta) == 0:
        return float("nan")
    # +1: the observed sample counts as one resample, so p is never reported as 0
    other_side = min(np.sum(delta <= 0), np.sum(delta >= 0))
    return float(min(1.0, 2.0 * (other_side + 1) / (len(delta) + 1)))


def better(metric: str, a: float, b: float) -> bool:
    """Whether value ``a`` is better than ``b`` for ``metric``."""
    return a > b if METRICS[metric].higher_is_better else a < b
