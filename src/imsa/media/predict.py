"""New media for a trained model: extracted exactly as its training data was.

A model trained on a folder of ``imsa extract`` records that folder's extraction
configuration (extractors, options, rate, thresholds). :func:`media_features` extracts a
new file with it and returns the arrays ``imsa predict --features`` reads (a modality the
media lacks is a row of NaN), plus every segment's times and reasons, so that a segment
with nothing present can be reported instead of predicted.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import DataError
from .corpus import assemble, run_jobs
from .decode import MediaError
from .pipeline import ExtractionConfig
from .sources import file_job

logger = logging.getLogger(__name__)


def media_features(
    extraction: dict | None, spec, media: str | os.PathLike, *, transcript=None, cache_dir=None, model: str = "the model", trained_on: str = ""
) -> tuple[dict, list[dict]]:
    """Extract ``media`` with the recorded ``extraction`` into arrays of the model's shape.

    Parameters
    ----------
    extraction : dict or None
        The model file's record of its training data's extraction (None: the model was
        trained on other features, which is refused).
    spec : DataSpec
        The model's modalities, dimensions and sequence/vector kinds.
    media, transcript : path
        The file and its SRT, WebVTT or plain-text transcript (default: the one beside it).
    model, trained_on : str
        The model's path and the dataset it was trained on, for messages.

    Returns
    -------
    arrays : dict
        ``utterance_ids``, ``video_ids``, one array per modality and ``<m>_lengths`` for
        sequences, for the segments with something present.
    rows : list of dict
        Every segment: ``utterance_id``, ``start``, ``end``, flags and ``reason``.
    """
    if not extraction:
        source = f" ({trained_on})" if trained_on else ""
        raise DataError(
            f"{model} was trained on features that imsa extract did not make{source}, so it cannot read media; train on a folder written by imsa extract."
        )
    config = ExtractionConfig.from_dict(extraction["config"])
    recorded = extraction.get("versions") or {}
    changed = {p: (v, now) for p, now in config.versions().items() if (v := recorded.get(p)) and now and v != now}
    if changed:
        logger.warning("Extractor packages differ from the model's training data: %s.", ", ".join(f"{p} {a} -> {b}" for p, (a, b) in changed.items()))
    job = file_job(media, transcript)
    results, failures = run_jobs([job], config, cache_dir=cache_dir)
    if failures:
        raise MediaError(failures[0][1])
    rows, arrays = assemble([job], results, config)
    if any(spec.sequence.values()) and extraction.get("alignment") == "words" and not arrays["aligned"]:
        logger.warning(
            "%s was trained on word-aligned sequences, but %s has no word timings (WebVTT inline timestamps, or --extractor asr=whisper): its steps differ.",
            model,
            media,
        )
    recorded_dims = extraction.get("frame_dims") if any(spec.sequence.values()) else extraction.get("dims")
    out = {"utterance_ids": arrays["utterance_ids"], "video_ids": arrays["video_ids"]}
    for k, m in enumerate(("l", "a", "v")):
        if m not in spec.modalities:
            continue
        kind = "sequence" if spec.sequence[m] else "vectors"
        x = arrays[f"{kind}_{m}"].copy()
        if x.shape[-1] != spec.dims[m]:
            raise DataError(
                f"{media}: the {m} features extracted here have {x.shape[-1]} dimensions, {model} reads {spec.dims[m]} "
                f"(its training data: {recorded_dims}); it was trained on other {kind}."
            )
        x[~arrays["present"][:, k]] = np.nan
        out[m] = x
        if spec.sequence[m]:
            out[f"{m}_lengths"] = arrays["lengths_l" if m == "l" else "lengths_av"]
    return out, rows


def segments_csv(rows: list[dict], predictions) -> str:
    """``utterance_id,start,end,prediction,modalities,reason``: one row per segment, in time order.

    ``predictions`` (a :class:`imsa.predictions.Predictions`, or None when no segment had
    anything present) covers the segments with something present; the others get an empty
    prediction and the reasons nothing was. Classification adds one ``prob_<class>`` column
    per class.
    """
    import csv
    import io

    scored = {}
    if predictions is not None:
        names = predictions.present_names()
        for i, u in enumerate(predictions.utterance_ids):
            if predictions.task == "regression":
                scored[u] = ([f"{predictions.values[i]:.9g}"], names[i])
            else:
                probs = [f"{p:.9g}" for p in predictions.values[i]]
                scored[u] = ([predictions.class_names[predictions.classes[i]], *probs], names[i])
    classes = list(predictions.class_names) if predictions is not None and predictions.task != "regression" else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["utterance_id", "start", "end", "prediction", *(f"prob_{c}" for c in classes), "modalities", "reason"])
    for row in rows:
        values, modalities = scored.get(row["utterance_id"], ([""] * (1 + len(classes)), ""))
        reason = row["reason"] if row["utterance_id"] in scored else (row["reason"] + ";nothing_present").lstrip(";")
        writer.writerow([row["utterance_id"], f"{row['start']:.3f}", f"{row['end']:.3f}", *values, modalities, reason])
    return buffer.getvalue()
