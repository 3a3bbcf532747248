"""Evaluation protocols: which missing-modality settings a model is trained for and scored on.

* ``fixed``: every non-empty subset of the dataset's modalities is a test condition,
  applied to every utterance (7 for three modalities, 3 for two). One model is scored
  under all of them, plus their mean.
* ``random``: the GCNet missing rate. Training draws fresh masks at the rate for every
  batch; valid and test masks are drawn once per split from ``mask_seed``, so a result
  can be reproduced and two methods are scored on identical masks.
* ``frames``: frame-level missing at rate r inside every (present) sequence modality:
  words, audio frames, video frames become zeros (see :mod:`imsa.frames`). Evaluation
  masks are keyed draws from ``mask_seed``; training drops steps at r in every batch
  (``frames:same``) unless the method asks for another frame distribution; with one of
  its own, ``rates`` lets one model be scored at several rates.

* ``mr``: the missing-rate protocol of DiCMoR, IMDer and HME at MR in {0.0, 0.1, ..., 0.7}:
  a share of utterances keeps one modality and a share loses one, by the papers' released
  table (:data:`imsa.missing.MR_SHARES`; 2 two + one = 3 MR), so the realised rate is MR up
  to 0.6 and 2/3 at 0.7 and at 0.0 (MR 0.0 is not complete data in that code). Unlike the
  GCNet rate, whose masks are uniform over the patterns that keep a modality, MR fixes the
  mix: at 0.1, 10 % of utterances keep one modality and 10 % lose one (GCNet's rate 0.1:
  about 2 % and 25 %). Evaluation masks are keyed draws from ``mask_seed`` with exact
  counts; training draws the same composition per sample (``dicmor:MR``).

* ``noise``: every modality present, corrupted at a rate (``gauss``, ``replace`` or
  ``erase``; see :mod:`imsa.noise`), keyed draws from ``mask_seed``; the method trains as
  it always does. Any protocol composes with a noise (``noise="gauss:0.3"``, named
  ``fixed,noise=gauss:0.3``): the settings' present modalities are corrupted, before any
  frame drops, so robustness to missing and to corrupted input can be told apart.

``fixed`` and ``random`` compose with frame-level missing (``frames=R``, named
``fixed,frames=0.3`` and ``rate=0.3,frames=0.2``): whole-modality masks first, then
frames dropped at R inside the modalities that stay present, with the frames
protocol's keyed evaluation draws and ``frames:same`` training drops inside the
protocol's own training masks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .data.dataset import Subset
from .errors import ConfigError, invalid_parameter, unknown_name
from .frames import FrameDrop, FrameSetting, FramesInside, keyed_frame_masks
from .missing import MR_SHARES, DiCMoRRate, MaskSampler, RandomRate, fixed_conditions, mr_mask, random_missing_mask
from .noise import NOISE_KINDS, Noise

PROTOCOLS = ("fixed", "random", "frames", "mr", "noise")
MAX_RATE = 0.7
FRAME_RATES = tuple(round(0.1 * k, 1) for k in range(10))  # the frames protocol's default rates
MR_RATES = tuple(sorted(MR_SHARES))  # the MR protocol's rates, 0.0 ... 0.7
MR_STREAM = zlib.crc32(b"mr")  # keys the MR draws apart from the random protocol's


@dataclass(frozen=True)
class Protocol:
    """A missing-modality protocol.

    Parameters
    ----------
    kind : {"fixed", "random", "frames", "mr", "noise"}
    rate : float
        Missing rate in [0, 0.7] for ``random``, frame drop rate in [0, 1] for ``frames``,
        MR in {0.0, 0.1, ..., 0.7} for ``mr``, noise rate in [0, 1) for ``noise``; ignored for ``fixed``. Required by ``random`` and by ``frames`` without ``rates``:
        no default, because a default of 0 would mean nothing is missing.
    mask_seed : int
        Seed of the evaluation masks of ``random`` and ``frames``.
    frames : float
        Frame drop rate in [0, 1] inside the present modalities of ``fixed`` and
        ``random`` (0: none); the ``frames`` protocol has its rate in ``rate``.
    rates : tuple of float
        ``frames`` and ``noise``: several rates scored by one model (``rate`` is then
        unused), which selects its epoch on the average over the rates. For ``frames``,
        a method that trains under its own frame noise whatever the test rate (LNLN); for
        ``noise`` any method, since training never sees the noise (``noise`` then names
        the kind alone).
    noise : str
        ``KIND:RATE`` (e.g. ``"gauss:0.3"``): corrupt the present modalities of every
        setting (see :mod:`imsa.noise`); "" for none. For ``kind="noise"`` it may name the
        kind alone (``rate`` gives the rate; default ``gauss``).
    """

    kind: str = "fixed"
    rate: float | None = None
    mask_seed: int = 0
    frames: float = 0.0
    rates: tuple = ()
    noise: str = ""

    def __post_init__(self):
        if self.kind not in PROTOCOLS:
            raise unknown_name("protocol", self.kind, PROTOCOLS)
        if self.kind == "noise" and self.rates:  # one model scored at several noise rates: the kind alone
            if ":" in self.noise:
                raise ConfigError(f"The noise protocol got rates {list(self.rates)} and a noise with a rate ({self.noise!r}); give the kind alone.")
            object.__setattr__(self, "noise", Noise(self.noise or NOISE_KINDS[0], 0.0).kind)
        elif self.kind == "noise":  # the noise protocol: its rate in both fields, normalised
            kind = self.noise.partition(":")[0] or NOISE_KINDS[0]
            given = Noise.parse(self.noise).rate if ":" in self.noise else None
            if given is not None and self.rate is not None and given != self.rate:
                raise ConfigError(f"The noise protocol got two rates: rate={self.rate:g} and noise={self.noise!r}; give one.")
            rate = self.rate if self.rate is not None else given
            if rate is None:
                raise ConfigError(
                    "The noise protocol needs its noise rate: --rate R with R in [0, 1), e.g. --rate 0.3 (a grid's `noise` alone runs 0.0 ... 0.9)."
                )
            noise = Noise(kind, rate)
            object.__setattr__(self, "rate", noise.rate)
            object.__setattr__(self, "noise", noise.name)
        elif self.noise:
            object.__setattr__(self, "noise", Noise.parse(self.noise).name)
        if self.rate is None:
            if self.kind == "random":
                raise ConfigError(
                    f"The random protocol needs its missing rate: --rate R with R in [0, {MAX_RATE}], e.g. --rate 0.3 "
                    "(Protocol('random', rate=0.3) in Python; a grid's `random` alone runs 0.0 ... 0.7)."
                )
            if self.kind == "mr":
                raise ConfigError(
                    "The mr protocol needs its missing rate: --rate R with R one of 0.0, 0.1, ..., 0.7, e.g. --rate 0.3 "
                    "(Protocol('mr', rate=0.3) in Python; a grid's `mr` alone runs 0.0 ... 0.7)."
                )
            if self.kind == "frames" and not self.rates:
                raise ConfigError(
                    "The frames protocol needs its frame drop rate: --rate R with R in [0, 1], e.g. --rate 0.3 "
                    "(Protocol('frames', rate=0.3) in Python; `imsa run --protocol frames` without --rate runs 0.0 ... 0.9)."
                )
            object.__setattr__(self, "rate", 0.0)  # unused by fixed and by several frame rates; stored as before
        if self.kind == "random" and not 0.0 <= self.rate <= MAX_RATE:
            raise invalid_parameter("rate", "the random protocol", f"in [0, {MAX_RATE}]", self.rate)
        if self.kind == "frames" and not 0.0 <= self.rate <= 1.0:
            raise invalid_parameter("rate", "the frames protocol", "in [0, 1]", self.rate)
        if self.kind == "mr":
            if round(float(self.rate), 10) not in MR_SHARES:
                raise invalid_parameter("rate", "the mr protocol", "one of 0.0, 0.1, ..., 0.7 (the papers' MR values)", self.rate)
            object.__setattr__(self, "rate", round(float(self.rate), 1))
        if isinstance(self.mask_seed, bool) or not isinstance(self.mask_seed, int) or self.mask_seed < 0:
            raise invalid_parameter("mask_seed", "the protocol", "an integer of at least 0", self.mask_seed)
        if not 0.0 <= self.frames <= 1.0:
            raise invalid_parameter("frames", "the protocol", "a frame drop rate in [0, 1]", self.frames)
        if self.frames and self.kind in ("frames", "mr", "noise"):
            raise ConfigError(f"frames=R composes fixed or random with frame-level missing, not the {self.kind} protocol.")
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))  # a list after a trip through JSON
        if self.rates and self.kind not in ("frames", "noise"):
            raise ConfigError("Several rates scored by one model (rates) belong to the frames and noise protocols.")
        for r in self.rates:
            if self.kind == "frames" and not 0.0 <= r <= 1.0:
                raise invalid_parameter("rates", "the frames protocol", "drop rates in [0, 1]", list(self.rates))
            if self.kind == "noise" and not 0.0 <= r < 1.0:
                raise invalid_parameter("rates", "the noise protocol", "noise rates in [0, 1)", list(self.rates))
        if len(set(self.rates)) != len(self.rates):
            raise ConfigError(f"The {self.kind} protocol's rates repeat: {list(self.rates)}.")

    @property
    def corruption(self) -> Noise | None:
        """The noise applied to present modalities, keyed by the mask seed (None: none, or one per rate)."""
        return Noise.parse(self.noise, self.mask_seed) if self.noise and not self.rates else None

    @property
    def drops_frames(self) -> bool:
        """Whether frames are dropped (the frames protocol, or a composition with it)."""
        return self.kind == "frames" or self.frames > 0

    def to_dict(self) -> dict:
        """The protocol as stored in run files and identities (``frames`` only where set, so
        that protocols without it keep the identities they always had)."""
        data = {"kind": self.kind, "rate": self.rate, "mask_seed": self.mask_seed}
        if self.frames:
            data["frames"] = self.frames
        if self.rates:
            data["rates"] = list(self.rates)
        if self.noise:
            data["noise"] = self.noise
        return data

    @property
    def name(self) -> str:
        """The experiment's name for this protocol: ``fixed``, ``rate=0.3``, ``frames=0.3``, ``mr=0.3``, ``noise=gauss:0.3``, with compositions appended."""
        if self.kind == "frames":
            return "frames=" + ",".join(f"{r:g}" for r in self.rates) if self.rates else f"frames={self.rate:g}"
        if self.kind == "noise":
            return f"noise={self.noise}:" + ",".join(f"{r:g}" for r in self.rates) if self.rates else f"noise={self.noise}"
        noise = f",noise={self.noise}" if self.noise else ""
        if self.kind == "mr":
            return f"mr={self.rate:g}{noise}"
        base = "fixed" if self.kind == "fixed" else f"rate={self.rate:g}"
        return (f"{base},frames={self.frames:g}" if self.frames else base) + noise

    def settings(self, subset: Subset) -> dict[str, np.ndarray]:
        """Setting name -> ``(N_dataset, M)`` bool present mask for the utterances of ``subset``
        (a :class:`~imsa.frames.FrameSetting`, which adds the frame masks, for ``frames``).

        Fixed conditions are named by their modalities (``"l"``, ``"a,v"``, ``"l,a,v"``);
        a random rate by ``"rate=0.3"``, a frame rate by ``"frames=0.3"``, an MR by ``"mr=0.3"``,
        a noise by ``"noise=gauss:0.3"``. With a noise, every setting is a
        :class:`~imsa.frames.FrameSetting` that carries it.
        """
        settings = self._masks(subset)
        noise = self.corruption
        if noise is None:
            return settings
        return {
            name: FrameSetting(s.present, s.frames, noise) if isinstance(s, FrameSetting) else FrameSetting(np.array(s, dtype=bool), {}, noise)
            for name, s in settings.items()
        }

    def _masks(self, subset: Subset) -> dict[str, np.ndarray]:
        dataset = subset.dataset
        modalities = dataset.modalities
        shape = (len(dataset), len(modalities))
        frames = keyed_frame_masks(dataset, subset.indices, self.frames, self.mask_seed) if self.frames else None
        if self.kind == "fixed":
            if frames is not None:
                return {c.name: FrameSetting(np.broadcast_to(c.mask(modalities), shape).copy(), frames) for c in fixed_conditions(modalities)}
            return {c.name: np.broadcast_to(c.mask(modalities), shape) for c in fixed_conditions(modalities)}
        if self.kind == "frames":
            return {
                f"frames={r:g}": FrameSetting(np.ones(shape, dtype=bool), keyed_frame_masks(dataset, subset.indices, r, self.mask_seed))
                for r in (self.rates or (self.rate,))
            }
        # Seeded by the split's videos, so every method and every run sees the same masks.
        videos = zlib.crc32(",".join(subset.videos).encode())
        masks = np.ones(shape, dtype=bool)
        if self.kind == "noise" and self.rates:  # every rate's noise on the same complete masks
            return {f"noise={noise.name}": FrameSetting(masks, {}, noise) for noise in (Noise(self.noise, r, self.mask_seed) for r in self.rates)}
        if self.kind == "noise":
            return {self.name: masks}
        if self.kind == "mr":
            masks[subset.indices] = mr_mask(len(subset), len(modalities), self.rate, np.random.default_rng([self.mask_seed, videos, MR_STREAM]))
            return {self.name: masks}
        rng = np.random.default_rng([self.mask_seed, videos])
        masks[subset.indices] = random_missing_mask(len(subset), len(modalities), self.rate, rng)
        return {self.name: masks if frames is None else FrameSetting(masks, frames)}

    def training_sampler(self, default: MaskSampler) -> MaskSampler:
        """The training masks a method should use: the random protocol's rate, the MR composition, else the method's ``default``.

        A method asks once, in ``fit``, and hands the answer to its phases; a phase that
        must train on something else (complete data for a teacher) simply does not ask.
        """
        if self.kind == "frames":  # the method's own frame distribution, else frames:same
            if self.rates and not (isinstance(default, FrameDrop) and isinstance(default.rate, str)):
                raise ConfigError(
                    f"One model for the frame rates {list(self.rates)} needs training under a frame noise of its own (e.g. train_missing=frames:lnln, "
                    "or a method that brings one, as LNLN); otherwise run one experiment per rate."
                )
            return default if isinstance(default, FrameDrop) else FrameDrop(self.rate)
        if self.kind == "mr":  # the composition of the rate, drawn per sample
            return DiCMoRRate(self.rate)
        sampler = RandomRate(self.rate) if self.kind == "random" else default
        return FramesInside(sampler, FrameDrop(self.frames)) if self.frames else sampler
