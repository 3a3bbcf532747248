"""Evaluation metrics for sentiment regression and emotion classification.

The definitions follow ``docs/metrics.md``. Binary
sentiment accuracy has two definitions in the literature; both are reported,
under names that say which is which:

- ``*_has0``: negative (< 0) vs non-negative (>= 0), all samples;
- ``*_non0``: negative vs positive, samples whose label is 0 removed
  (MMSA convention: class = ``x > 0`` for label and prediction alike, so a
  prediction of exactly 0 counts as negative there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imsa.errors import ConfigError, invalid_parameter, unknown_name


@dataclass(frozen=True)
class MetricInfo:
    """Description of one metric key.

    Parameters
    ----------
    name : str
        Key in the dictionaries returned by the metric functions.
    description : str
        One-line definition.
    higher_is_better : bool
        Direction used for model selection.
    """

    name: str
    description: str
    higher_is_better: bool


_METRIC_LIST = (
    MetricInfo("mae", "Mean absolute error, all samples", False),
    MetricInfo("corr", "Pearson correlation, all samples (NaN if either side is constant)", True),
    MetricInfo("acc7", "Acc-7: accuracy of round(clip(x, -3, 3)), half to even, all samples", True),
    MetricInfo("acc5", "Acc-5: accuracy of round(clip(x, -2, 2)), half to even, all samples", True),
    MetricInfo("acc2_has0", "Acc-2 negative (<0) vs non-negative (>=0), all samples", True),
    MetricInfo("f1_has0", "Weighted F1 of negative (<0) vs non-negative (>=0), all samples", True),
    MetricInfo("acc2_non0", "Acc-2 negative vs positive (x > 0), samples with label 0 removed", True),
    MetricInfo("f1_non0", "Weighted F1 of negative vs positive (x > 0), samples with label 0 removed", True),
    MetricInfo("acc2_sims", "CH-SIMS Acc-2: [-1, 0] vs (0, 1] after clipping to [-1, 1] (MMSA's SIMS bins)", True),
    MetricInfo("f1_sims", "CH-SIMS weighted F1 of [-1, 0] vs (0, 1] after clipping to [-1, 1]", True),
    MetricInfo("acc3_sims", "CH-SIMS Acc-3: [-1, -0.1], (-0.1, 0.1], (0.1, 1] after clipping to [-1, 1]", True),
    MetricInfo("acc5_sims", "CH-SIMS Acc-5: [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1] after clipping", True),
    MetricInfo("mae_sims", "CH-SIMS mean absolute error after clipping both sides to [-1, 1]", False),
    MetricInfo("corr_sims", "CH-SIMS Pearson correlation after clipping both sides to [-1, 1]", True),
    MetricInfo("wa", "Weighted accuracy: accuracy over utterances", True),
    MetricInfo("ua", "Unweighted accuracy: mean per-class recall over classes present in the labels", True),
    MetricInfo("wf1", "F1 per class averaged with weights = class support (sklearn 'weighted')", True),
    MetricInfo("emotion_binary_acc", "Multilabel: accuracy of each class's present/absent decision, averaged over classes", True),
    MetricInfo("emotion_binary_f1", "Multilabel: weighted F1 of each class's present/absent decision, averaged over classes", True),
)
METRICS: dict[str, MetricInfo] = {info.name: info for info in _METRIC_LIST}
REGRESSION_METRICS: tuple[str, ...] = ("mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0")
# The field's metric set for sentiment in [-1, 1] (CH-SIMS, CH-SIMS v2), added for those datasets.
SIMS_METRICS: tuple[str, ...] = ("acc2_sims", "f1_sims", "acc3_sims", "acc5_sims", "mae_sims", "corr_sims")
SIMS_BINS = {2: (-1.01, 0.0, 1.01), 3: (-1.01, -0.1, 0.1, 1.01), 5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)}
CLASSIFICATION_METRICS: tuple[str, ...] = ("wa", "ua", "wf1")
MULTILABEL_METRICS: tuple[str, ...] = ("emotion_binary_acc", "emotion_binary_f1")
TASKS: tuple[str, ...] = ("regression", "classification", "multilabel")


def _to_numpy(values, name: str, owner: str) -> np.ndarray:
    """Convert a numpy array, torch tensor or sequence to a numpy array."""
    if hasattr(values, "detach"):  # torch tensor; avoids importing torch here
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise invalid_parameter(name, owner, "array-like", type(values).__name__) from error
    if array.size == 0:
        raise invalid_parameter(name, owner, "non-empty", array.tolist())
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise invalid_parameter(name, owner, "numeric", str(array.dtype))
    if not np.all(np.isfinite(array)):
        raise invalid_parameter(name, owner, "finite (no NaN or inf)", "non-finite values")
    return array


def _as_vector(values, name: str, owner: str) -> np.ndarray:
    """A 1-D float array; an (N, 1) model output is flattened."""
    array = _to_numpy(values, name, owner).astype(np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise invalid_parameter(name, owner, "1-D (or of shape (N, 1))", f"shape {array.shape}")
    return array


def _check_same_length(prediction: np.ndarray, label: np.ndarray, owner: str) -> None:
    if len(prediction) != len(label):
        raise ConfigError(f"{owner}: 'prediction' and 'label' must have the same length. Got {len(prediction)} and {len(label)} instead.")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation, clipped into [-1, 1] (rounding can step past it); NaN when either
    side is constant, where the correlation is undefined (0.0 would be a score it never earned)."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.clip(np.sum(dx * dy) / denominator, -1.0, 1.0)) if denominator > 0 else float("nan")


def _accuracy(prediction: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean(prediction == label))


def _weighted_f1(prediction: np.ndarray, label: np.ndarray) -> float:
    """sklearn's ``f1_score(label, prediction, average="weighted", zero_division=0)``.

    Computed directly (per class ``2TP / (2TP + FP + FN)``, 0 where undefined, averaged
    with the true counts as weights): sklearn's input checks cost milliseconds per call,
    which dominated per-epoch validation over the seven missing-modality conditions.
    """
    classes, encoded = np.unique(np.concatenate([label, prediction]), return_inverse=True)
    true, predicted = encoded[: len(label)], encoded[len(label) :]
    support = np.bincount(true, minlength=len(classes))
    hits = np.bincount(true[true == predicted], minlength=len(classes))
    denominator = support + np.bincount(predicted, minlength=len(classes))
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros(len(classes)), where=denominator > 0)
    return float(np.average(f1, weights=support)) if support.sum() else 0.0


def sims_metrics(prediction, label) -> dict[str, float]:
    """The CH-SIMS metric set of the field's code (MMSA) for sentiment in [-1, 1].

    Both sides are clipped to [-1, 1] first. A score falls in bin i of
    :data:`SIMS_BINS` when ``edges[i] < x <= edges[i + 1]``, so Acc-2 separates
    [-1, 0] from (0, 1] (a score of exactly 0 is with the negatives, unlike ``acc2_has0``).
    ``f1_sims`` is the weighted F1 of the two Acc-2 classes; ``mae_sims`` and
    ``corr_sims`` are computed on the clipped values.
    """
    owner = "sims_metrics"
    prediction = np.clip(_as_vector(prediction, "prediction", owner).astype(np.float64), -1.0, 1.0)
    label = np.clip(_as_vector(label, "label", owner).astype(np.float64), -1.0, 1.0)
    _check_same_length(prediction, label, owner)

    def binned(x, classes):
        return np.searchsorted(np.asarray(SIMS_BINS[classes]), x, side="left") - 1

    return {
        "acc2_sims": _accuracy(binned(prediction, 2), binned(label, 2)),
        "f1_sims": _weighted_f1(binned(prediction, 2), binned(label, 2)),
        "acc3_sims": _accuracy(binned(prediction, 3), binned(label, 3)),
        "acc5_sims": _accuracy(binned(prediction, 5), binned(label, 5)),
        "mae_sims": float(np.mean(np.abs(prediction - label))),
        "corr_sims": _pearson(prediction, label),
    }


def regression_metrics(prediction, label, sims: bool = False) -> dict[str, float]:
    """Sentiment regression metrics for scores in [-3, 3] (MOSI, MOSEI), and with ``sims``
    the CH-SIMS set of :func:`sims_metrics` too.

    Parameters
    ----------
    prediction : array-like of shape (N,) or (N, 1)
        Predicted sentiment scores (numpy array, torch tensor or sequence).
    label : array-like of shape (N,) or (N, 1)
        True sentiment scores.

    Returns
    -------
    dict of str to float
        Keys in the order of :data:`REGRESSION_METRICS`:

        - ``mae``: mean absolute error;
        - ``corr``: Pearson correlation clipped into [-1, 1]; NaN when
          prediction or label is constant (undefined, not 0);
        - ``acc7`` / ``acc5``: accuracy after ``np.round(np.clip(x, -3, 3))``
          / ``np.round(np.clip(x, -2, 2))`` of both sides. ``np.round``
          rounds half to even: 2.5 -> 2, -0.5 -> -0, 1.5 -> 2;
        - ``acc2_has0`` / ``f1_has0``: accuracy / weighted F1 of
          ``x < 0`` vs ``x >= 0``, all samples (label 0 is non-negative);
        - ``acc2_non0`` / ``f1_non0``: accuracy / weighted F1 of ``x > 0``
          vs ``x <= 0`` on the samples whose label is not 0. NaN when every
          label is 0.

    Raises
    ------
    ConfigError
        If the inputs are empty, not 1-D, of different lengths, or hold
        non-finite values.
    """
    owner = "regression_metrics"
    prediction = _as_vector(prediction, "prediction", owner)
    label = _as_vector(label, "label", owner)
    _check_same_length(prediction, label, owner)

    def rounded(x, bound):
        return np.round(np.clip(x, -bound, bound))

    has0_prediction, has0_label = prediction >= 0, label >= 0
    nonzero = label != 0
    if nonzero.any():
        non0_prediction, non0_label = prediction[nonzero] > 0, label[nonzero] > 0
        acc2_non0 = _accuracy(non0_prediction, non0_label)
        f1_non0 = _weighted_f1(non0_prediction, non0_label)
    else:
        acc2_non0 = f1_non0 = float("nan")
    return {
        "mae": float(np.mean(np.abs(prediction - label))),
        "corr": _pearson(prediction, label),
        "acc7": _accuracy(rounded(prediction, 3), rounded(label, 3)),
        "acc5": _accuracy(rounded(prediction, 2), rounded(label, 2)),
        "acc2_has0": _accuracy(has0_prediction, has0_label),
        "f1_has0": _weighted_f1(has0_prediction, has0_label),
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        **(sims_metrics(prediction, label) if sims else {}),
    }


def _as_class_indices(values, name: str, owner: str) -> np.ndarray:
    array = _to_numpy(values, name, owner)
    if array.ndim != 1:
        raise invalid_parameter(name, owner, "1-D class indices", f"shape {array.shape}")
    if not np.all(array == np.round(array)) or np.any(array < 0):
        raise invalid_parameter(name, owner, "non-negative integer class indices", array.tolist())
    return array.astype(np.int64)


def classification_metrics(prediction, label, num_classes: int | None = None) -> dict[str, float]:
    """Emotion classification metrics (IEMOCAP): WA, UA and weighted F1.

    Parameters
    ----------
    prediction : array-like of shape (N,) or (N, C)
        Predicted class indices, or scores/logits whose argmax over the last
        axis is the predicted class.
    label : array-like of shape (N,)
        True class indices.
    num_classes : int, optional
        If given, class indices must lie in ``[0, num_classes)`` and score
        matrices must have ``num_classes`` columns.

    Returns
    -------
    dict of str to float
        Keys in the order of :data:`CLASSIFICATION_METRICS`:

        - ``wa``: accuracy over utterances;
        - ``ua``: mean of the per-class recalls over the classes present in
          ``label`` (sklearn ``balanced_accuracy_score``); predicted classes
          absent from ``label`` add no term;
        - ``wf1``: sklearn weighted F1.

    Raises
    ------
    ConfigError
        If the inputs are empty, of different lengths, non-finite, not class
        indices, or outside ``num_classes``.
    """
    owner = "classification_metrics"
    valid_count = isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool) and num_classes >= 1
    if num_classes is not None and not valid_count:
        raise invalid_parameter("num_classes", owner, "a positive integer or None", num_classes)
    scores = _to_numpy(prediction, "prediction", owner)
    if scores.ndim == 2:
        if num_classes is not None and scores.shape[1] != num_classes:
            raise invalid_parameter("prediction", owner, f"of shape (N, {num_classes})", f"shape {scores.shape}")
        scores = scores.argmax(axis=1)
    prediction = _as_class_indices(scores, "prediction", owner)
    label = _as_class_indices(label, "label", owner)
    _check_same_length(prediction, label, owner)
    if num_classes is not None:
        for name, values in (("prediction", prediction), ("label", label)):
            if values.max() >= num_classes:
                raise invalid_parameter(name, owner, f"class indices in [0, {num_classes})", int(values.max()))

    recalls = [np.mean(prediction[label == c] == c) for c in np.unique(label)]
    return {
        "wa": _accuracy(prediction, label),
        "ua": float(np.mean(recalls)),
        "wf1": _weighted_f1(prediction, label),
    }


def multilabel_metrics(prediction, label, class_names=None) -> dict[str, float]:
    """Per-class binary metrics of a multilabel task (IEMOCAP as MulT packs it), and their means.

    Each class is its own present/absent decision, scored as MulT scores IEMOCAP:
    accuracy and sklearn's weighted F1 of that decision. These are not WA/UA, which
    score one class per utterance.

    Parameters
    ----------
    prediction : array-like of shape (N, K, 2) or (N, K)
        Logits or probabilities (absent, present) per class, or 0/1 decisions.
    label : array-like of shape (N, K)
        0/1 per class.
    class_names : sequence of str, optional
        Names of the K classes, for the per-class keys (default ``0 .. K-1``).

    Returns
    -------
    dict of str to float
        ``emotion_binary_acc`` and ``emotion_binary_f1`` (the means over classes, in
        :data:`MULTILABEL_METRICS`), then ``binary_acc_<name>`` and ``binary_f1_<name>``
        per class.
    """
    owner = "multilabel_metrics"
    scores = _to_numpy(prediction, "prediction", owner)
    label = _to_numpy(label, "label", owner)
    if scores.ndim == 3:
        if scores.shape[2] != 2:
            raise invalid_parameter("prediction", owner, "of shape (N, K, 2) or (N, K)", f"shape {scores.shape}")
        scores = scores.argmax(axis=2)
    if label.ndim != 2 or scores.shape != label.shape or not len(label):
        raise invalid_parameter("prediction", owner, f"decisions of the labels' shape {label.shape} (N > 0)", f"shape {scores.shape}")
    for name, values in (("prediction", scores), ("label", label)):
        if not np.isin(values, (0, 1)).all():
            raise invalid_parameter(name, owner, "0/1 per class", np.unique(values).tolist()[:5])
    names = list(class_names) if class_names is not None else [str(k) for k in range(label.shape[1])]
    if len(names) != label.shape[1]:
        raise invalid_parameter("class_names", owner, f"{label.shape[1]} names", len(names))
    per_class = {}
    for k, name in enumerate(names):
        per_class[f"binary_acc_{name}"] = _accuracy(scores[:, k], label[:, k])
        per_class[f"binary_f1_{name}"] = _weighted_f1(scores[:, k], label[:, k])
    return {
        "emotion_binary_acc": float(np.mean([per_class[f"binary_acc_{n}"] for n in names])),
        "emotion_binary_f1": float(np.mean([per_class[f"binary_f1_{n}"] for n in names])),
        **per_class,
    }


def compute_metrics(task: str, prediction, label, **options) -> dict[str, float]:
    """Compute the metrics of a task.

    Parameters
    ----------
    task : {"regression", "classification", "multilabel"}
        Selects :func:`regression_metrics`, :func:`classification_metrics` or
        :func:`multilabel_metrics`.
    prediction, label : array-like
        Passed on unchanged.
    **options
        Keyword arguments of the selected function (``num_classes``, ``class_names``,
        ``sims``).

    Returns
    -------
    dict of str to float

    Raises
    ------
    ConfigError
        If ``task`` is unknown, or as raised by the selected function.
    """
    if task == "regression":
        return regression_metrics(prediction, label, **options)
    if task == "classification":
        return classification_metrics(prediction, label, **options)
    if task == "multilabel":
        return multilabel_metrics(prediction, label, **options)
    raise unknown_name("task", task, TASKS)
