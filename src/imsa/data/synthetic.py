"""The built-in synthetic benchmark: deterministic, instant, and with a known answer.

Each utterance carries one latent sentiment cue per modality, ``s_m ~ N(0, 1)``.
Its label is a known linear function of the cues::

    y = clip(weight_l * s_l + weight_a * s_a + weight_v * s_v + video_offset + label_noise * e, -3, 3)

and each modality's features show only its own cue, ``x_m = s_m * u_m + feature_noise * n``
(``u_m`` a fixed random unit direction, ``n`` white noise). The weights set how informative
each modality is, so the best achievable score under every missing-modality condition is
known in advance: losing a heavily weighted modality must hurt more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import invalid_parameter
from .dataset import Dataset, Fold
from .registry import register_dataset

ALIGNED_SHAPES = {"mosi": (768, 5, 20), "mosei": (768, 74, 35)}  # text, audio, vision widths of MMSA's aligned_50.pkl


@register_dataset(
    "synthetic",
    description="Built-in synthetic videos with three modalities of known informativeness (no files needed)",
    family="synthetic",
)
def load_synthetic(
    root: Path | None = None,
    *,
    num_videos: int = 80,
    min_utterances: int = 6,
    max_utterances: int = 14,
    dim_l: int = 32,
    dim_a: int = 16,
    dim_v: int = 24,
    weight_l: float = 1.0,
    weight_a: float = 0.6,
    weight_v: float = 0.4,
    feature_noise: float = 0.5,
    label_noise: float = 0.3,
    sequence_length: int = 0,
    aligned: bool = False,
    like: str = "",
    num_classes: int = 0,
    seed: int = 0,
) -> Dataset:
    """Generate the synthetic benchmark.

    Parameters
    ----------
    num_videos : int
        Videos; split 60/20/20 % into train/valid/test (by video).
    min_utterances, max_utterances : int
        Utterances per video, drawn uniformly.
    dim_l, dim_a, dim_v : int
        Feature sizes of the three modalities.
    weight_l, weight_a, weight_v : float
        Dependence of the label on each modality's cue (its informativeness).
    feature_noise, label_noise : float
        Standard deviation of the white noise on the features and on the label.
    sequence_length : int
        0 gives one vector per utterance; T > 0 gives (T, D) sequences of random
        length in [1, T] whose every valid step shows the cue.
    aligned : bool
        With sequences: one length per utterance shared by every modality (word-aligned,
        as MMSA's ``aligned_50.pkl``); otherwise each modality draws its own.
    like : {"", "mosi", "mosei"}
        The shapes of MMSA's aligned CMU-MOSI (50 steps; text 768, audio 5, vision 20) or
        CMU-MOSEI (768 / 74 / 35), aligned; replaces the dims and the sequence length.
    num_classes : int
        0 gives regression labels in [-3, 3]; K > 1 bins them into K equally
        frequent classes (classification).
    seed : int
        The generator's seed: the same arguments give the same dataset.
    """
    if num_videos < 5:
        raise invalid_parameter("num_videos", "synthetic", "at least 5", num_videos)
    if not 1 <= min_utterances <= max_utterances:
        raise invalid_parameter("min_utterances", "synthetic", f"in [1, max_utterances={max_utterances}]", min_utterances)
    if like:
        shapes = ALIGNED_SHAPES.get(like)
        if shapes is None:
            raise invalid_parameter("like", "synthetic", " or ".join(repr(k) for k in ALIGNED_SHAPES), like)
        (dim_l, dim_a, dim_v), sequence_length, aligned = shapes, 50, True
    if num_classes == 1 or num_classes < 0:
        raise invalid_parameter("num_classes", "synthetic", "0 (regression) or at least 2", num_classes)
    rng = np.random.default_rng(seed)
    dims = {"l": dim_l, "a": dim_a, "v": dim_v}
    weights = {"l": weight_l, "a": weight_a, "v": weight_v}
    per_video = rng.integers(min_utterances, max_utterances + 1, size=num_videos)
    n = int(per_video.sum())
    video_names = [f"synth{v:03d}" for v in range(num_videos)]
    video_ids = [video_names[v] for v in range(num_videos) for _ in range(per_video[v])]
    utterance_ids = [f"{video_names[v]}_{k + 1}" for v in range(num_videos) for k in range(per_video[v])]

    cues = {m: rng.standard_normal(n) for m in dims}
    video_offset = np.repeat(0.3 * rng.standard_normal(num_videos), per_video)
    target = sum(weights[m] * cues[m] for m in dims) + video_offset + label_noise * rng.standard_normal(n)
    labels = np.clip(target, -3, 3).astype(np.float32)

    features, lengths = {}, {}
    shared_steps = rng.integers(1, sequence_length + 1, size=n) if sequence_length and aligned else None
    for m, d in dims.items():
        direction = rng.standard_normal(d)
        direction /= np.linalg.norm(direction)
        if sequence_length:
            steps = shared_steps if aligned else rng.integers(1, sequence_length + 1, size=n)
            x = cues[m][:, None, None] * direction + feature_noise * rng.standard_normal((n, sequence_length, d))
            x *= (np.arange(sequence_length)[None, :] < steps[:, None])[..., None]
            lengths[m] = steps
        else:
            x = cues[m][:, None] * direction + feature_noise * rng.standard_normal((n, d))
        features[m] = x.astype(np.float32)

    class_names = None
    if num_classes:
        edges = np.quantile(labels, np.linspace(0, 1, num_classes + 1)[1:-1])
        labels = np.searchsorted(edges, labels, side="right").astype(np.int64)
        class_names = tuple(f"class{k}" for k in range(num_classes))

    order = rng.permutation(num_videos)
    n_train, n_valid = int(0.6 * num_videos), int(0.2 * num_videos)
    pick = lambda ix: tuple(video_names[v] for v in sorted(ix))  # noqa: E731
    fold = Fold(
        train=pick(order[:n_train]),
        valid=pick(order[n_train : n_train + n_valid]),
        test=pick(order[n_train + n_valid :]),
    )
    return Dataset(
        name="synthetic",
        modalities=("l", "a", "v"),
        features=features,
        lengths=lengths,
        labels=labels,
        utterance_ids=utterance_ids,
        video_ids=video_ids,
        folds=[fold],
        task="classification" if num_classes else "regression",
        class_names=class_names,
        description="imsa synthetic benchmark",
    )
