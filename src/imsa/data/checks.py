"""Checks of a dataset before anything trains on it: refusals for data that would give
meaningless numbers, warnings for data that gives unreliable ones.

Refused (one error naming the dataset, the utterances and the fix): labels outside the
task's range (sentiment in [-3, 3], CH-SIMS [-1, 1], or a range the user declares), a
video or dialogue in two splits of a fold (leakage), an empty split, a classification
training split with a single class. NaN or infinite labels are refused when the dataset
is built (:class:`imsa.data.dataset.Dataset`). Warned: feature values of absurd magnitude,
and splits too small for some metrics.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import SPLITS, Dataset

logger = logging.getLogger(__name__)

# The label range of each family's sentiment scores; files of no known family get [-3, 3].
LABEL_RANGES = {"mosi": (-3.0, 3.0), "mosei": (-3.0, 3.0), "sims": (-1.0, 1.0), "": (-3.0, 3.0)}
ABSURD_FEATURE = 1e6
# Below this many utterances, these metrics say little (a correlation, F1 or 7-class
# accuracy on a handful of utterances swings with one prediction).
SMALL_SPLIT = 30
FRAGILE_METRICS = {"regression": "corr, f1_has0, f1_non0, acc7, acc5", "classification": "ua, wf1", "multilabel": "the per-class F1"}


def parse_label_range(value) -> tuple[float, float]:
    """``[low, high]`` from the ``label_range`` option, checked."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"label_range must be [LOW, HIGH], e.g. --set data.label_range=[-10,10]. Got {value!r}.") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(f"label_range must be two finite numbers LOW < HIGH. Got {value!r}.")
    return low, high


def check_loaded(dataset: Dataset, *, label_range=None, shared_videos: str = "refuse") -> None:
    """The checks of a freshly loaded dataset (see the module docstring).

    Parameters
    ----------
    label_range : [low, high], optional
        The declared range of regression labels (default: the family's).
    shared_videos : {"refuse", "allow"}
        Whether a published split may divide one video between splits (CH-SIMS does).
    """
    where = dataset.source
    if dataset.task == "regression":
        low, high = parse_label_range(label_range) if label_range is not None else LABEL_RANGES.get(dataset.family, (None, None))
        if low is not None:
            outside = (dataset.labels < low) | (dataset.labels > high)
            if outside.any():
                first = [f"{dataset.utterance_ids[i]} ({dataset.labels[i]:g})" for i in np.flatnonzero(outside)[:3]]
                raise DataError(
                    f"{where}: {int(outside.sum())} label(s) outside [{low:g}, {high:g}], e.g. {', '.join(first)}. "
                    "Fix the file, or declare the scale with --set data.label_range=[LOW,HIGH]."
                )
    if shared_videos not in ("refuse", "allow"):
        raise ConfigError(f"shared_videos must be 'refuse' or 'allow'. Got {shared_videos!r}.")
    if shared_videos == "refuse":
        for k, fold in enumerate(dataset.folds):
            owners: dict[str, list[str]] = {}
            for split in SPLITS:
                for video in fold.videos(split):
                    base = video.split("/", 1)[1] if video.split("/", 1)[0] in SPLITS else video
                    owners.setdefault(base, []).append(split)
            shared = {v: s for v, s in owners.items() if len(s) > 1}
            if shared:
                video, splits = next(iter(shared.items()))
                raise DataError(
                    f"{where}: fold {k}: {len(shared)} video(s) have utterances in several splits, e.g. {video} in {' and '.join(splits)}: "
                    "leakage (a model sees the speaker and topic it is tested on). Split by video; or, to reproduce a published "
                    "split that does this (CH-SIMS), accept it with --set data.shared_videos=allow."
                )
    for m in dataset.modalities:
        absurd = int((np.abs(dataset.features[m]) > ABSURD_FEATURE).sum())
        if absurd:
            logger.warning(
                "%s: %d feature value(s) of modality %s exceed %g in magnitude; check the file or standardise the features.", where, absurd, m, ABSURD_FEATURE
            )


def check_fold(dataset: Dataset, fold: int) -> None:
    """The checks of one fold before a run trains on it."""
    splits = dataset.split(fold)
    where = f"{dataset.source} fold {fold}"
    for split, subset in splits.items():
        if len(subset) == 0:
            raise DataError(f"{where}: the {split} split has no utterances; nothing can be trained, selected or scored. Check the file's split lists.")
    if dataset.task == "multilabel":
        constant = [name for name, column in zip(dataset.class_names, splits["train"].labels.T) if len(np.unique(column)) < 2]
        if constant:
            raise DataError(
                f"{where}: {', '.join(constant)} is always present or always absent in the training split; a binary classifier cannot learn from that."
            )
    if dataset.task == "classification":
        classes = np.unique(splits["train"].labels)
        if len(classes) < 2:
            raise DataError(
                f"{where}: the training split has a single class ({dataset.class_names[int(classes[0])] if dataset.class_names else classes[0]}); a classifier cannot learn from it."
            )
    for split in ("valid", "test"):
        n = len(splits[split])
        if n < SMALL_SPLIT:
            logger.warning("%s: the %s split has %d utterance(s); %s are unreliable on so few.", where, split, n, FRAGILE_METRICS[dataset.task])
