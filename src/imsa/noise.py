"""Noisy modalities: present features corrupted instead of removed.

The noise half of LNLN's and P-RMF's evaluations and of Robust-MSA: a model may be robust
to a missing modality and not to a corrupted one, or the reverse. Three corruptions, each
at a rate r in [0, 1) (0 leaves the features as they are):

* ``gauss:r``: Gaussian noise whose standard deviation is r times the root mean square of
  the utterance's features in that modality (over its real steps): a signal-to-noise
  ratio of -20 log10(r) dB (r = 0.1: 20 dB, 0.5: 6 dB, 0.9: 0.9 dB);
* ``replace:r``: every real step (for an utterance vector, the vector) is replaced with
  probability r by a step of another utterance of the same split, drawn uniformly
  (random frame replacement);
* ``erase:r``: round(r D) of the modality's D feature channels are zeroed at every step
  (feature-channel erasure).

Draws are keyed by (mask seed, corruption, modality, utterance id), so they do not depend
on batch order or size and every method sees the same corrupted inputs. Only the modalities
a setting keeps are corrupted; the noise is applied before frame-level drops, so the
two compose (a dropped step is zero whatever its noise).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, invalid_parameter

NOISE_KINDS = ("gauss", "replace", "erase")
NOISE_RATES = tuple(round(0.1 * k, 1) for k in range(10))  # the noise protocol's default rates


@dataclass(frozen=True)
class Noise:
    """A corruption of present features (see the module docstring).

    Parameters
    ----------
    kind : {"gauss", "replace", "erase"}
    rate : float
        In [0, 1).
    seed : int
        The mask seed that keys the draws.
    """

    kind: str
    rate: float
    seed: int = 0

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ConfigError(f"Unknown noise {self.kind!r}. Valid noises: {', '.join(NOISE_KINDS)} (e.g. gauss:0.3).")
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 <= self.rate < 1.0:
            raise invalid_parameter("rate", f"the {self.kind} noise", "in [0, 1)", self.rate)
        object.__setattr__(self, "rate", float(self.rate))

    @classmethod
    def parse(cls, spec: str, seed: int = 0) -> "Noise":
        """``"gauss:0.3"`` -> Noise."""
        kind, sep, rate = str(spec).partition(":")
        try:
            return cls(kind.strip(), float(rate), seed)
        except ValueError:
            raise ConfigError(f"Noise {spec!r}: expected KIND:RATE with KIND one of {', '.join(NOISE_KINDS)} and RATE in [0, 1), e.g. gauss:0.3.") from None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.rate:g}"

    def _rng(self, modality: str, uid: str) -> np.random.Generator:
        key = hashlib.blake2b(f"{self.seed}\x1f{self.kind}\x1f{modality}\x1f{uid}".encode(), digest_size=8).digest()
        return np.random.default_rng(int.from_bytes(key, "little"))

    def corrupt(
        self, x: np.ndarray, lengths: np.ndarray | None, uids, modality: str, donors: np.ndarray | None, donor_lengths: np.ndarray | None
    ) -> np.ndarray:
        """A corrupted copy of ``x``: ``(n, D)`` vectors or ``(n, T, D)`` sequences with ``lengths``.

        ``uids`` names each row (None: a padding row, left alone); ``donors`` (with
        ``donor_lengths``) are the split's features that ``replace`` draws from (the
        other corruptions need none).
        """
        out = np.array(x, dtype=np.float32, copy=True)
        if self.rate == 0:
            return out
        for i, uid in enumerate(uids):
            if uid is None:
                continue
            rng = self._rng(modality, uid)
            steps = out[i] if out.ndim == 2 else out[i, : int(lengths[i])]
            rows = steps.reshape(-1, out.shape[-1])
            if self.kind == "gauss":
                scale = self.rate * float(np.sqrt(np.mean(rows.astype(np.float64) ** 2)))
                rows += (rng.standard_normal(rows.shape) * scale).astype(np.float32)
            elif self.kind == "erase":
                rows[:, rng.permutation(rows.shape[1])[: int(round(self.rate * rows.shape[1]))]] = 0.0
            else:
                chosen = np.flatnonzero(rng.random(len(rows)) < self.rate)
                donor = rng.integers(len(donors), size=len(chosen))
                if donors.ndim == 2:
                    rows[chosen] = donors[donor]
                else:
                    step = (rng.random(len(chosen)) * donor_lengths[donor]).astype(np.int64)
                    rows[chosen] = donors[donor, step]
        return out
