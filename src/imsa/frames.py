"""Frame-level missing data: parts of a modality dropped (words, audio frames, video frames).

The protocol is the one recommended in the LNLN spec, section 8.4. The droppable units
of a sequence modality are its real steps ``t < L`` (for a text sequence whose loader
protects its ends, e.g. MMSA's BERT states of [CLS] and [SEP], all but the first and
last). A dropped step becomes the zero vector; the padding mask is unchanged (a dropped
step is still a real step) and ``present`` stays True.

Evaluation draws are *keyed*: for utterance id ``uid``, modality ``m`` and mask seed
``s``, ``key`` is the 8-byte blake2b digest of ``f"{s}\\x1f{m}\\x1f{uid}"`` read as a
little-endian integer, and step t gets ``u_t`` from SplitMix64 of
``key + (t + 1) * 0x9E3779B97F4A7C15``; a droppable step is dropped iff ``u_t < r``. So a
mask depends on nothing but (seed, modality, utterance, step): not on batch order,
padding width, split or file order; masks are nested across rates and shared by every
method. Training masks are redrawn for every batch from the run's generator
(:class:`FrameDrop`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, invalid_parameter
from .sampling import as_generator, check_count, check_modalities

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
FRAME_SAMPLERS = ("frames:same", "frames:uniform", "frames:lnln", "frames:<r>")
PROTECTED_ENDS = "protected_ends"  # Dataset annotation: per utterance, the modality codes whose first and last real steps are never dropped


def keyed_uniforms(seed: int, modality: str, uid: str, length: int) -> np.ndarray:
    """The ``length`` uniforms in [0, 1) of utterance ``uid``'s modality ``modality`` under ``seed``."""
    key = int.from_bytes(hashlib.blake2b(f"{seed}\x1f{modality}\x1f{uid}".encode(), digest_size=8).digest(), "little")
    with np.errstate(over="ignore"):
        z = np.uint64(key) + np.arange(1, length + 1, dtype=np.uint64) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def droppable(lengths: np.ndarray, width: int, protected: np.ndarray | None = None) -> np.ndarray:
    """``(n, width)`` bool: the real steps, less the first and last where ``protected``."""
    steps = np.arange(width)[None, :]
    out = steps < np.asarray(lengths)[:, None]
    if protected is not None and protected.any():
        ends = (steps == 0) | (steps == np.asarray(lengths)[:, None] - 1)
        out &= ~(ends & np.asarray(protected)[:, None])
    return out


def sequence_modalities(dataset) -> tuple[str, ...]:
    """The dataset's modalities, refusing frame-level missing where one holds utterance vectors."""
    vectors = [m for m in dataset.modalities if not dataset.is_sequence(m)]
    if vectors:
        raise ConfigError(
            f"{dataset.name}: frame-level missing drops time steps, but {'modality' if len(vectors) == 1 else 'modalities'} {', '.join(map(repr, vectors))} "
            f"{'holds' if len(vectors) == 1 else 'hold'} one vector per utterance. "
            "Use sequence data (MMSA, MulT or MAG pickles, or synthetic with data.sequence_length)."
        )
    return dataset.modalities


def protected(dataset, modality: str, rows: np.ndarray) -> np.ndarray:
    """Per row whether ``modality``'s ends are protected (the loader says so in an annotation)."""
    marks = dataset.annotations.get(PROTECTED_ENDS)
    if marks is None:
        return np.zeros(len(rows), dtype=bool)
    return np.array([modality in marks[i] for i in rows], dtype=bool)


def keyed_frame_masks(dataset, rows: np.ndarray, rate: float, seed: int) -> dict[str, np.ndarray]:
    """Per modality ``(N_dataset, T)`` bool, True where a step is kept: the keyed draw at ``rate``
    for the utterances ``rows``, every step kept elsewhere."""
    masks = {}
    for m in sequence_modalities(dataset):
        width = dataset.features[m].shape[1]
        keep = np.ones((len(dataset), width), dtype=bool)
        lengths = dataset.lengths[m][rows]
        can_drop = droppable(lengths, width, protected(dataset, m, rows))
        if rate > 0:
            uniforms = np.zeros((len(rows), width))
            for j, i in enumerate(rows):
                uniforms[j, : lengths[j]] = keyed_uniforms(seed, m, dataset.utterance_ids[i], int(lengths[j]))
            keep[rows] = ~(can_drop & (uniforms < rate))
        masks[m] = keep
    return masks


@dataclass(frozen=True)
class FrameSetting:
    """An evaluation setting beyond a mask: ``present`` ``(N_dataset, M)`` as any setting, plus
    ``frames[m]`` ``(N_dataset, T_m)`` True at kept steps (none: no step dropped) and a
    ``noise`` (:class:`imsa.noise.Noise`) that corrupts the present modalities."""

    present: np.ndarray
    frames: dict = field(default_factory=dict)
    noise: object = None

    def dropped_fraction(self, dataset, rows: np.ndarray) -> float:
        """The realised share of droppable steps that are dropped, over ``rows``."""
        dropped = total = 0
        for m, keep in self.frames.items():
            can = droppable(dataset.lengths[m][rows], keep.shape[1], protected(dataset, m, rows))
            dropped += int((can & ~keep[rows]).sum())
            total += int(can.sum())
        return dropped / max(total, 1)


@dataclass(frozen=True)
class FrameDrop:
    """Training masks that keep every modality and drop steps inside them, redrawn per batch.

    ``rate``: every droppable step dropped with this probability; ``"uniform"``: each
    sample and modality draws its rate from U(0, 1); ``"lnln"``: 0 with probability 1/2,
    else U(0, 1) (LNLN's training noise).
    """

    rate: float | str

    def __post_init__(self):
        if isinstance(self.rate, str):
            if self.rate not in ("uniform", "lnln"):
                raise invalid_parameter("rate", "FrameDrop", "a rate in [0, 1], 'uniform' or 'lnln'", self.rate)
        elif not 0.0 <= float(self.rate) <= 1.0:
            raise invalid_parameter("rate", "FrameDrop", "a rate in [0, 1], 'uniform' or 'lnln'", self.rate)

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Every modality present (the frames are dropped by :meth:`sample_frames`)."""
        return np.ones((check_count(n, "FrameDrop.sample"), len(check_modalities(modalities, "FrameDrop.sample"))), dtype=bool)

    def sample_frames(self, can_drop: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Per modality ``(n, T)`` keep masks for the droppable steps ``can_drop[m]``."""
        rng = as_generator(rng, "FrameDrop.sample_frames")
        out = {}
        for m, can in can_drop.items():
            n = can.shape[0]
            if self.rate == "uniform":
                rates = rng.random(n)
            elif self.rate == "lnln":
                rates = np.where(rng.random(n) < 0.5, 0.0, rng.random(n))
            else:
                rates = np.full(n, float(self.rate))
            out[m] = ~(can & (rng.random(can.shape) < rates[:, None]))
        return out

    def describe(self) -> str:
        return f"frames:{self.rate}" if isinstance(self.rate, str) else f"frames:{float(self.rate):g}"


def make_frame_sampler(spec: str, rate: float) -> FrameDrop:
    """``frames:same`` (the protocol's ``rate``), ``frames:uniform``, ``frames:lnln`` or ``frames:<r>``."""
    kind, _, argument = spec.partition(":")
    if kind == "frames":
        if argument == "same":
            return FrameDrop(rate)
        if argument in ("uniform", "lnln"):
            return FrameDrop(argument)
        try:
            return FrameDrop(float(argument))
        except ValueError:
            pass
    raise ConfigError(f"Unknown frame sampler {spec!r}. Valid forms: {', '.join(FRAME_SAMPLERS)}.")


@dataclass(frozen=True)
class FramesInside:
    """Whole-modality training masks from ``modalities`` (a mask sampler), then frame drops
    from ``frames`` inside the modalities that stay present (whole-modality first, frames
    second, as the LNLN spec, section 8.3 composes them)."""

    modalities: object
    frames: FrameDrop

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        return self.modalities.sample(n, modalities, rng)

    def sample_frames(self, can_drop: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self.frames.sample_frames(can_drop, rng)

    def describe(self) -> str:
        return f"{self.modalities.describe()} with {self.frames.describe()}"
