"""Scoring a model under many missing-modality settings at once, and the validation score
that selects epochs (never test data)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .batch import Batch, iterate_batches
from .data.dataset import Subset
from .devices import autocast
from .errors import ConfigError, did_you_mean
from .metrics import METRICS, compute_metrics

SIMS_FAMILIES = ("sims",)


@torch.no_grad()
def predict_settings(
    predict: Callable[[Batch], torch.Tensor],
    subset: Subset,
    settings: dict[str, np.ndarray],
    *,
    level: str = "utterance",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Predictions for every utterance of ``subset`` under each missing-modality setting.

    All settings are scored in one pass: each batch is repeated once per setting with
    that setting's ``present`` mask, so the model runs once on the stacked batch.

    Parameters
    ----------
    predict : callable
        ``predict(batch) -> Tensor`` of shape ``(B, [S,] [C])``, reading ``batch.present``.
    subset : Subset
    settings : dict of str to ndarray
        Name -> ``(N_dataset, M)`` bool present mask per dataset utterance, or a
        :class:`~imsa.frames.FrameSetting` that adds frame masks or a noise.
    level : {"utterance", "video"}
    batch_size : int
        Utterances (or videos) per batch before the repetition over settings.
    device, precision
        Where the model is (batches are built there), and the autocast precision.

    Returns
    -------
    dict of str to ndarray
        Name -> predictions aligned with ``subset.indices``: ``(N,)`` or ``(N, C)``.
    """
    from .frames import FrameSetting

    names = list(settings)
    device = torch.device(device)
    present_of = {k: v.present if isinstance(v, FrameSetting) else v for k, v in settings.items()}
    stacked = torch.from_numpy(np.stack([present_of[k] for k in names])).to(device)  # (K, N_dataset, M)
    framed = [k for k in names if isinstance(settings[k], FrameSetting) and settings[k].frames]
    noisy = {k: settings[k].noise for k in names if isinstance(settings[k], FrameSetting) and settings[k].noise is not None}
    data = subset.dataset
    # What frame replacement draws from: the split's features, copied only when a setting replaces.
    replacing = any(n.kind == "replace" for n in noisy.values())
    donors = {
        m: (data.features[m][subset.indices], data.lengths[m][subset.indices] if m in data.lengths else None) if replacing else (None, None)
        for m in data.modalities
    }
    frames = {}  # modality -> (K, N_dataset, T) kept steps, every step kept under plain settings
    if framed:
        for m in settings[framed[0]].frames:
            width = settings[framed[0]].frames[m].shape[1]
            frames[m] = torch.from_numpy(np.stack([settings[k].frames[m] if k in framed else np.ones((len(subset.dataset), width), bool) for k in names])).to(
                device
            )
    out: dict[str, list] = {k: [] for k in names}
    for batch in iterate_batches(subset, batch_size, level=level, device=device):
        rows = batch.index.clamp(min=0)
        present = stacked[:, rows].reshape((-1,) + batch.present.shape[1:])
        stacked_batch = batch.repeat(len(names))
        if noisy:
            stacked_batch = _corrupted(stacked_batch, subset.dataset, names, noisy, donors)
        stacked_batch = stacked_batch.with_present(present)
        if frames:
            stacked_batch = stacked_batch.with_frames({m: keep[:, rows].reshape((-1,) + batch.padding[m].shape[1:]) for m, keep in frames.items()})
        with autocast(device, precision):
            prediction = predict(stacked_batch).float()
        prediction = prediction.reshape((len(names), *batch.labels.shape) + prediction.shape[batch.labels.dim() :])
        keep = batch.index >= 0
        for k, name in enumerate(names):
            out[name].append(prediction[k][keep])
    return {k: torch.cat(v).cpu().numpy() for k, v in out.items()}  # one copy to the host per evaluation


def _corrupted(stacked: Batch, dataset, names: list[str], noisy: dict, donors: dict) -> Batch:
    """The stacked batch with each noisy setting's slice corrupted (:mod:`imsa.noise`), before masks and frame drops."""
    import dataclasses

    index = stacked.index.reshape(len(names), -1).cpu().numpy()
    inputs = dict(stacked.inputs)
    for k, name in enumerate(names):
        if name not in noisy:
            continue
        uids = [dataset.utterance_ids[i] if i >= 0 else None for i in index[k]]
        for m, x in inputs.items():
            rows = x.reshape((len(names), -1) + x.shape[stacked.index.dim() :])
            lengths = dataset.lengths[m][np.clip(index[k], 0, None)] if m in dataset.lengths else None
            corrupted = noisy[name].corrupt(rows[k].cpu().numpy(), lengths, uids, m, *donors[m])
            rows = rows.clone()
            rows[k] = torch.from_numpy(corrupted).to(x.device)
            inputs[m] = rows.reshape(x.shape)
    return dataclasses.replace(stacked, inputs=inputs)


def evaluate(
    predict: Callable[[Batch], torch.Tensor],
    subset: Subset,
    settings: dict[str, np.ndarray],
    *,
    level: str = "utterance",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> dict[str, dict[str, float]]:
    """Metrics of ``predict`` on ``subset`` under each setting, plus ``"mean"`` over settings.

    Returns
    -------
    dict
        Setting name -> metric name -> value (see :mod:`imsa.metrics`); with more than
        one setting, ``"mean"`` holds the average of each metric over the settings.
    """
    return metrics_of(predict_settings(predict, subset, settings, level=level, batch_size=batch_size, device=device, precision=precision), subset)


def metrics_of(predictions: dict[str, np.ndarray], subset: Subset) -> dict[str, dict[str, float]]:
    """Metrics of per-setting predictions on ``subset``, plus ``"mean"`` over settings (see :func:`evaluate`)."""
    task, labels = subset.dataset.task, subset.labels
    options = {"class_names": subset.dataset.class_names} if task == "multilabel" else {}
    if task == "regression" and subset.dataset.family in SIMS_FAMILIES:  # sentiment in [-1, 1]: the field's CH-SIMS set too
        options = {"sims": True}
    results = {name: compute_metrics(task, pred, labels, **options) for name, pred in predictions.items()}
    if len(results) > 1:
        keys = next(iter(results.values())).keys()
        results["mean"] = {k: float(np.mean([r[k] for r in results.values()])) for k in keys}
    return results


def selection_score(results: dict[str, dict[str, float]], metric: str) -> float:
    """The value that selects epochs: ``metric`` averaged over the evaluated settings."""
    if metric not in METRICS:
        raise ConfigError(f"Unknown selection metric {metric!r}.{did_you_mean(metric, METRICS)} Valid metrics: {', '.join(METRICS)}.")
    row = results.get("mean") or next(iter(results.values()))
    return row[metric]
