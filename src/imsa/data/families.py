"""Dataset families: which corpus a dataset is, whatever file it was read from.

Papers publish their settings per corpus (MoMKE: 300 epochs on CMU-MOSI, 100 on
CMU-MOSEI, 200 on IEMOCAP), and the same corpus reaches imsa under many names: a
registered dataset, an MMSA pickle, a GCNet folder. A dataset therefore carries its
family, and packaged method configs (``configs/<method>/<family>.yaml``) are found by
it. A registered dataset declares its family; a file loaded by path gets it from its
content (:func:`detect_family`), or from the ``family`` option where detection cannot
tell (``--set data.family=mosei``).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

FAMILIES = {
    "mosi": "CMU-MOSI (93 videos, 2,199 utterances, sentiment in [-3, 3])",
    "mosei": "CMU-MOSEI (3,228 videos, 22,856 utterances, sentiment in [-3, 3])",
    "iemocap4": "IEMOCAP, 4 emotion classes (5,531 utterances)",
    "iemocap6": "IEMOCAP, 6 emotion classes (7,433 utterances)",
    "sims": "CH-SIMS (2,281 utterances, sentiment in [-1, 1])",
    "synthetic": "imsa's built-in synthetic benchmark",
}
# Upper bound of CMU-MOSI's videos, and a floor for CMU-MOSEI's (3,228 in the full corpus;
# the published aligned subsets keep over 2,000): no published subset falls in between.
MOSI_MAX_VIDEOS = 93
MOSEI_MIN_VIDEOS = 1000
IEMOCAP_CLASSES = {4: ("happy", "sad", "neutral", "angry"), 6: ("happy", "sad", "neutral", "angry", "excited", "frustrated")}


def check_family(family: str, owner: str) -> None:
    """Refuse a family name that is not in :data:`FAMILIES` (the message lists them)."""
    if family not in FAMILIES:
        raise ConfigError(f"Unknown dataset family {family!r} for {owner}. Valid families: {', '.join(FAMILIES)}.")


def detect_family(dataset) -> tuple[str, str]:
    """The family of a dataset read from a file, and the evidence, from its content.

    IEMOCAP: classification whose dialogues are named ``Ses0N...`` or whose class
    names are IEMOCAP's, 4 or 6 classes. CH-SIMS: sentiment in [-1, 1] with ``video_``
    ids. CMU-MOSI / CMU-MOSEI: sentiment in [-3, 3] from at most 93 videos / at least
    1,000 videos.

    Returns
    -------
    family : str
        A key of :data:`FAMILIES`, or ``""`` when the content matches none.
    evidence : str
        What decided it, for the line that says which packaged config applied.
    """
    videos = {v.rsplit("/", 1)[-1] for v in dataset.video_ids}  # a video split between splits is "split/id"
    size = f"{len(dataset):,} utterances in {len(videos):,} videos"
    if dataset.task != "regression":  # classes, or one present/absent task per class
        k = dataset.num_classes
        sessions = all(v.startswith("Ses0") for v in videos)
        if k in IEMOCAP_CLASSES and (sessions or tuple(dataset.class_names) == IEMOCAP_CLASSES[k]):
            return f"iemocap{k}", f"detected: {k} classes, {size}, IEMOCAP {'session ids' if sessions else 'class names'}"
        return "", f"not detected: {k} classes, {size}"
    labels = np.asarray(dataset.labels, dtype=np.float64)
    extent = float(np.abs(labels[np.isfinite(labels)]).max(initial=0.0))
    if extent <= 1.0 and all(v.startswith("video_") for v in videos):
        return "sims", f"detected: sentiment in [-1, 1], {size}, CH-SIMS ids"
    if extent <= 3.0:
        if len(videos) <= MOSI_MAX_VIDEOS:
            return "mosi", f"detected: sentiment in [-3, 3], {size} (CMU-MOSI has 93 videos)"
        if len(videos) >= MOSEI_MIN_VIDEOS:
            return "mosei", f"detected: sentiment in [-3, 3], {size} (CMU-MOSEI has 3,228 videos)"
    return "", f"not detected: sentiment within ±{extent:g}, {size}"
