"""Missing-modality protocols: conditions, test masks and training mask samplers.

A *mask* is a boolean array of shape ``(n, M)`` whose column ``j`` says whether
modality ``modalities[j]`` of a dataset is present. Modalities are short codes
(``"l"``, ``"a"``, ``"v"``); a dataset declares its own order, e.g.
``("l", "a", "v")`` or ``("l", "a")``, and nothing here assumes three of them.

Three protocols are covered (see ``docs/protocols.md``):

- fixed conditions: one subset of modalities for every sample
  (:class:`Condition`, :func:`fixed_conditions`);
- the random missing rate of GCNet (:func:`random_missing_mask`), drawn once
  from a seed so that test masks are reproducible;
- training distributions over combinations (:class:`CombinationDistribution`
  and the other samplers, built from strings by :func:`make_sampler`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from imsa.errors import ConfigError, invalid_parameter

from .frames import make_frame_sampler
from .sampling import as_generator, check_count, check_modalities

MODALITY_ORDER = ("l", "a", "v")
MODALITY_NAMES = {"l": "language", "a": "audio", "v": "vision"}

SAMPLER_FORMS = (
    "complete",
    "uniform",
    "incomplete",
    "cmad",
    "dropout:<p>",
    "rate:<r>",
    "dicmor:<r>",
    "condition:<codes>",
    "batch:<form>",
    "frames:uniform",
    "frames:lnln",
    "frames:<r>",
)

_CMAD_WEIGHTS = {"l": 2, "a": 3, "v": 3, "l,a": 1, "l,v": 1, "a,v": 3, "l,a,v": 1}


# --------------------------------------------------------------------------- helpers


def _canonical_key(code: str) -> tuple:
    """Sort key: known codes in :data:`MODALITY_ORDER`, unknown ones after, alphabetically."""
    if code in MODALITY_ORDER:
        return (0, MODALITY_ORDER.index(code), "")
    return (1, 0, code)


def _check_probability(value, name: str, owner: str) -> float:
    """A float in [0, 1): 1 would leave nothing to keep."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0.0 <= float(value) < 1.0:
        raise invalid_parameter(name, owner, "a float in [0, 1)", value)
    return float(value)


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    """A set of available modalities, stored in canonical order.

    Parameters
    ----------
    modalities : tuple of str
        The available modality codes, in any order; stored sorted by
        :data:`MODALITY_ORDER` (unknown codes after, alphabetically).

    Examples
    --------
    >>> Condition(("a", "l")).name
    'l,a'
    >>> Condition.parse("l, v").mask(("l", "a", "v"))
    array([ True, False,  True])
    """

    modalities: tuple[str, ...]

    def __post_init__(self):
        codes = check_modalities(self.modalities, "Condition")
        object.__setattr__(self, "modalities", tuple(sorted(codes, key=_canonical_key)))

    @property
    def name(self) -> str:
        """Comma-joined codes in canonical order, e.g. ``"l,a"``: a stable key in results files."""
        return ",".join(self.modalities)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> Condition:
        """Build a condition from ``"l,a"`` (any order, spaces allowed).

        Raises
        ------
        ConfigError
            If ``text`` is empty or names a code twice.
        """
        if not isinstance(text, str):
            raise invalid_parameter("text", "Condition.parse", "a string such as 'l,a'", text)
        codes = [code.strip() for code in text.split(",")]
        if not all(codes) or len(set(codes)) != len(codes):
            raise invalid_parameter("text", "Condition.parse", "comma-separated distinct non-empty modality codes such as 'l,a'", text)
        return cls(tuple(codes))

    def mask(self, modalities: tuple[str, ...]) -> np.ndarray:
        """Boolean presence vector of shape ``(M,)`` aligned to a dataset's modality order.

        Raises
        ------
        ConfigError
            If the condition names a modality that ``modalities`` lacks.
        """
        modalities = check_modalities(modalities, "Condition.mask")
        unknown = [code for code in self.modalities if code not in modalities]
        if unknown:
            raise ConfigError(f"Condition {self.name!r} needs modalities {unknown} that the data does not have (modalities: {list(modalities)}).")
        return np.array([code in self.modalities for code in modalities], dtype=bool)


def _subset_positions(num_modalities: int) -> list[tuple[int, ...]]:
    """Non-empty subsets of ``range(M)`` by size, then lexicographically by position."""
    return [combo for size in range(1, num_modalities + 1) for combo in itertools.combinations(range(num_modalities), size)]


def fixed_conditions(modalities: tuple[str, ...]) -> list[Condition]:
    """Every non-empty subset of ``modalities``: ``2**M - 1`` conditions.

    Ordered by size, then by position in ``modalities``; for ``("l", "a", "v")``:
    l, a, v, l,a, l,v, a,v, l,a,v. :func:`condition_index` uses the same order.
    """
    modalities = check_modalities(modalities, "fixed_conditions")
    return [Condition(tuple(modalities[j] for j in combo)) for combo in _subset_positions(len(modalities))]


def condition_index(present: np.ndarray) -> np.ndarray:
    """Index into ``fixed_conditions(modalities)`` of each row of a mask.

    Parameters
    ----------
    present : array_like of bool, shape (..., M)
        Presence mask, columns in the dataset's modality order.

    Returns
    -------
    numpy.ndarray of int, shape (...)

    Raises
    ------
    ConfigError
        If a row has no modality present.
    """
    present = np.asarray(present, dtype=bool)
    if present.ndim == 0 or present.shape[-1] == 0:
        raise invalid_parameter("present", "condition_index", "an array of shape (..., M) with M >= 1", present.shape)
    num_modalities = present.shape[-1]
    # Lookup from bit pattern (bit j = column j) to position in fixed_conditions order.
    lookup = np.full(2**num_modalities, -1, dtype=np.int64)
    for index, combo in enumerate(_subset_positions(num_modalities)):
        lookup[sum(1 << j for j in combo)] = index
    patterns = present.astype(np.int64) @ (1 << np.arange(num_modalities, dtype=np.int64))
    if np.any(patterns == 0):
        raise ConfigError(f"{int(np.sum(patterns == 0))} mask row(s) have no modality present; every sample must keep at least one modality.")
    return lookup[patterns]


# --------------------------------------------------------------------------- random missing rate


def random_missing_mask(n: int, num_modalities: int, rate: float, rng) -> np.ndarray:
    """Draw a presence mask with a given missing rate (the GCNet protocol, made exact).

    Every row keeps at least one modality. ``rate == 0`` keeps everything. If
    ``1 - rate <= 1 / M`` every row keeps exactly one modality, chosen uniformly.
    Otherwise every row gets one uniformly chosen guaranteed modality, then exactly
    ``k - n`` further cells, uniformly without replacement among the other
    ``n * (M - 1)`` cells, are switched on, where ``k = round(n * M * (1 - rate))``.
    GCNet redraws random masks until the realised rate is within 0.005 of ``rate``;
    fixing the count instead realises the closest achievable rate directly (within
    ``0.5 / (n * M)``, so within 0.005 whenever ``n * M >= 100``) with no redraw loop.

    Parameters
    ----------
    n : int
        Number of rows (samples).
    num_modalities : int
        Number of columns ``M``.
    rate : float
        Target fraction of missing cells, in [0, 1). With ``M == 1`` it must be 0.
    rng : numpy.random.Generator or int
        Random generator or seed; draw test masks once from a seed.

    Returns
    -------
    numpy.ndarray of bool, shape (n, M)
    """
    owner = "random_missing_mask"
    n = check_count(n, owner)
    if isinstance(num_modalities, bool) or not isinstance(num_modalities, (int, np.integer)) or num_modalities < 1:
        raise invalid_parameter("num_modalities", owner, "a positive integer", num_modalities)
    rate = _check_probability(rate, "rate", owner)
    if num_modalities == 1 and rate != 0:
        raise invalid_parameter("rate", owner, "0 with a single modality", rate)
    rng = as_generator(rng, owner)
    num_modalities = int(num_modalities)

    if rate == 0:
        return np.ones((n, num_modalities), dtype=bool)
    present = np.zeros((n, num_modalities), dtype=bool)
    present[np.arange(n), rng.integers(num_modalities, size=n)] = True
    if 1 - rate <= 1 / num_modalities:
        return present
    total = n * num_modalities
    kept = int(np.clip(round(total * (1 - rate)), n, total))
    free_cells = np.flatnonzero(~present)
    present.flat[rng.choice(free_cells, size=kept - n, replace=False)] = True
    return present


def missing_rate(present: np.ndarray) -> float:
    """Realised fraction of missing (False) cells of a presence mask."""
    present = np.asarray(present, dtype=bool)
    if present.size == 0:
        raise invalid_parameter("present", "missing_rate", "a non-empty mask", present.shape)
    return float(1.0 - present.mean())


# --------------------------------------------------------------------------- training samplers


class MaskSampler(Protocol):
    """What the training loop needs: draw ``(n, M)`` presence masks and name itself."""

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Complete:
    """Every modality present for every row."""

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Return an all-True ``(n, M)`` mask (``rng`` is unused)."""
        modalities = check_modalities(modalities, "Complete.sample")
        return np.ones((check_count(n, "Complete.sample"), len(modalities)), dtype=bool)

    def describe(self) -> str:
        return "complete"


@dataclass(frozen=True)
class FixedCondition:
    """The same subset of modalities for every row.

    Parameters
    ----------
    condition : Condition or str
        The available modalities; a string such as ``"l,a"`` is parsed.
    """

    condition: Condition

    def __post_init__(self):
        if isinstance(self.condition, str):
            object.__setattr__(self, "condition", Condition.parse(self.condition))
        elif not isinstance(self.condition, Condition):
            raise invalid_parameter("condition", "FixedCondition", "a Condition or a string such as 'l,a'", self.condition)

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Return ``(n, M)`` rows equal to the condition's mask (``rng`` is unused)."""
        return np.tile(self.condition.mask(modalities), (check_count(n, "FixedCondition.sample"), 1))

    def describe(self) -> str:
        return f"condition:{self.condition.name}"


@dataclass(frozen=True)
class CombinationDistribution:
    """A categorical distribution over conditions, one draw per row.

    Parameters
    ----------
    weights : dict of str to float, or None
        Non-negative weights keyed by condition names (``"l,a"``; any order),
        normalised to probabilities and re-keyed by canonical names. ``None``
        means uniform over every non-empty subset of the modalities passed to
        :meth:`sample`, so one sampler serves datasets with any modalities.

    Examples
    --------
    >>> CombinationDistribution.cmad().weights["a,v"] == 3 / 14
    True
    """

    weights: dict[str, float] | None = None

    # A dict field makes the default field hash fail; hash the items instead.
    def __hash__(self):
        return hash(None if self.weights is None else tuple(self.weights.items()))

    def __post_init__(self):
        if self.weights is None:
            return
        owner = "CombinationDistribution"
        if not isinstance(self.weights, dict) or not self.weights:
            raise invalid_parameter("weights", owner, "a non-empty dict of condition name to weight", self.weights)
        normalised = {}
        for key, weight in self.weights.items():
            name = Condition.parse(key).name
            if name in normalised:
                raise invalid_parameter("weights", owner, "a dict naming each condition once", self.weights)
            if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)) or not math.isfinite(weight) or weight < 0:
                raise invalid_parameter(f"weights[{key!r}]", owner, "a finite non-negative number", weight)
            normalised[name] = float(weight)
        total = sum(normalised.values())
        if total <= 0:
            raise invalid_parameter("weights", owner, "weights with a positive sum", self.weights)
        object.__setattr__(self, "weights", {name: weight / total for name, weight in normalised.items()})

    @classmethod
    def uniform(cls, modalities: tuple[str, ...] | None = None) -> CombinationDistribution:
        """Every non-empty subset equally likely; ``None`` resolves the subsets at sampling time."""
        if modalities is None:
            return cls(None)
        return cls({condition.name: 1.0 for condition in fixed_conditions(modalities)})

    @classmethod
    def cmad(cls) -> CombinationDistribution:
        """The CMAD training distribution over three modalities (weights out of 14)."""
        return cls(dict(_CMAD_WEIGHTS))

    def marginal(self, modalities: tuple[str, ...]) -> CombinationDistribution:
        """The distribution seen by data with only ``modalities``.

        Other modalities are dropped from every condition, conditions that become the
        same merge their weights, and the one that becomes empty is left out (the rest
        renormalised). CMAD's 2/3/3/1/1/3/1 over ``l, a, v`` gives ``{l}: 3, {a}: 6,
        {l,a}: 2`` (out of 11) for ``l, a``.

        Raises
        ------
        ConfigError
            If no condition keeps any of ``modalities``.
        """
        if self.weights is None or all(m in modalities for name in self.weights for m in Condition.parse(name).modalities):
            return self
        merged: dict[str, float] = {}
        for name, weight in self.weights.items():
            kept = [m for m in Condition.parse(name).modalities if m in modalities]
            if kept:
                key = Condition.parse(",".join(kept)).name
                merged[key] = merged.get(key, 0.0) + weight
        if not merged:
            raise ConfigError(f"The training distribution {self.describe()} has no condition with any of the modalities {', '.join(modalities)}.")
        return CombinationDistribution(merged)

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw one condition per row with ``rng.choice``.

        Raises
        ------
        ConfigError
            If a condition of the distribution names a modality the data lacks.
        """
        n = check_count(n, "CombinationDistribution.sample")
        rng = as_generator(rng, "CombinationDistribution.sample")
        if self.weights is None:
            conditions = fixed_conditions(modalities)
            probabilities = np.full(len(conditions), 1.0 / len(conditions))
        else:
            conditions = [Condition.parse(name) for name in self.weights]
            probabilities = np.array(list(self.weights.values()))
        masks = np.stack([condition.mask(modalities) for condition in conditions])
        return masks[rng.choice(len(conditions), size=n, p=probabilities)]

    def describe(self) -> str:
        if self.weights is None:
            return "uniform"
        if self == CombinationDistribution.cmad():
            return "cmad"
        return "combinations(" + " ".join(f"{name}:{p:.3g}" for name, p in self.weights.items()) + ")"


@dataclass(frozen=True)
class Incomplete:
    """Each row draws one of the ``2**M - 2`` conditions that lack at least one
    modality, uniformly (MMIN's training distribution: the complete condition is
    never drawn). With two modalities that is each one alone, half the time each."""

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw an ``(n, M)`` mask with no empty and no complete row.

        Raises
        ------
        ConfigError
            With one modality, where no incomplete condition exists.
        """
        modalities = check_modalities(modalities, "Incomplete.sample")
        if len(modalities) < 2:
            raise ConfigError(f"The 'incomplete' training distribution needs at least two modalities; the data has only {modalities[0]!r}.")
        n = check_count(n, "Incomplete.sample")
        rng = as_generator(rng, "Incomplete.sample")
        masks = np.stack([condition.mask(modalities) for condition in fixed_conditions(modalities)[:-1]])
        return masks[rng.integers(len(masks), size=n)]

    def describe(self) -> str:
        return "incomplete"


@dataclass(frozen=True)
class IndependentDropout:
    """Drop each modality independently with probability ``p``.

    Rows that lose every modality get one uniformly chosen modality back, so the
    realised drop rate is slightly below ``p`` (by ``p**M / M`` in expectation).

    Parameters
    ----------
    p : float
        Drop probability, in [0, 1).
    """

    p: float

    def __post_init__(self):
        object.__setattr__(self, "p", _check_probability(self.p, "p", "IndependentDropout"))

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw an ``(n, M)`` mask with no empty row."""
        num_modalities = len(check_modalities(modalities, "IndependentDropout.sample"))
        n = check_count(n, "IndependentDropout.sample")
        rng = as_generator(rng, "IndependentDropout.sample")
        present = rng.random((n, num_modalities)) >= self.p
        empty_rows = np.flatnonzero(~present.any(axis=1))
        present[empty_rows, rng.integers(num_modalities, size=empty_rows.size)] = True
        return present

    def describe(self) -> str:
        return f"dropout:{self.p:g}"


@dataclass(frozen=True)
class RandomRate:
    """Masks with a fixed missing rate, drawn by :func:`random_missing_mask`.

    Parameters
    ----------
    rate : float
        Target fraction of missing cells, in [0, 1).
    """

    rate: float

    def __post_init__(self):
        object.__setattr__(self, "rate", _check_probability(self.rate, "rate", "RandomRate"))

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw an ``(n, M)`` mask whose missing rate is as close to ``rate`` as ``n * M`` allows."""
        modalities = check_modalities(modalities, "RandomRate.sample")
        return random_missing_mask(n, len(modalities), self.rate, rng)

    def describe(self) -> str:
        return f"rate:{self.rate:g}"


# The MR protocol of DiCMoR, IMDer and HME (DiCMoR's DICMOR.py:64-73, IMDer's trainer): per missing
# rate, the share of samples missing two modalities and the share missing one (2 two + one = 3 MR).
# MR 0.0 indexes the released lists at -1, so it means two missing everywhere, not complete data.
MR_SHARES = {
    0.0: (1.0, 0.0),
    0.1: (0.1, 0.1),
    0.2: (0.2, 0.2),
    0.3: (0.3, 0.3),
    0.4: (0.5, 0.2),
    0.5: (0.7, 0.1),
    0.6: (0.9, 0.0),
    0.7: (1.0, 0.0),
}


def mr_mask(n: int, num_modalities: int, rate: float, rng) -> np.ndarray:
    """An ``(n, 3)`` presence mask of the MR protocol at ``rate`` (one of 0.0, 0.1, ..., 0.7).

    Exactly ``round(two * n)`` utterances keep one modality and ``round(one * n)`` lose
    one, with (two, one) = :data:`MR_SHARES` [rate]; which utterances, and which modality
    each keeps or loses, are uniform draws of ``rng``. The realised missing rate is
    (2 two + one) / 3: the nominal rate up to 0.6, 2/3 at 0.7 and at 0.0 (as released).
    The released code draws one pattern per batch of a shuffled loader, in a fixed order
    of batches; drawing per utterance with exact counts gives the same composition
    without tying it to batch size or order.
    """
    if num_modalities != 3:
        raise ConfigError(f"The MR protocol is defined for three modalities; the data has {num_modalities}.")
    rate = round(float(rate), 10)
    if rate not in MR_SHARES:
        raise invalid_parameter("rate", "the mr protocol", "one of 0.0, 0.1, ..., 0.7", rate)
    n = check_count(n, "mr_mask")
    rng = as_generator(rng, "mr_mask")
    two, one = MR_SHARES[rate]
    keep_one = min(n, int(round(two * n)))
    lose_one = min(n - keep_one, int(round(one * n)))
    order = rng.permutation(n)
    which = rng.integers(3, size=n)
    present = np.ones((n, 3), dtype=bool)
    rows = order[:keep_one]
    present[rows] = False
    present[rows, which[rows]] = True
    rows = order[keep_one : keep_one + lose_one]
    present[rows, which[rows]] = False
    return present


@dataclass(frozen=True)
class DiCMoRRate:
    """DiCMoR's training composition at a nominal missing rate, per sample: two of the three
    modalities missing with probability a(r), one with b(r) (2a + b = 3r; which ones
    uniform), else complete. r = 0.7 realises 2/3, as released. The released code draws
    one pattern per batch in a fixed batch order; this draws per sample.

    Parameters
    ----------
    rate : float
        One of 0.0, 0.1, ..., 0.7 (0.0 as released: every sample keeps one modality).
    """

    rate: float

    def __post_init__(self):
        rate = round(float(self.rate), 10)
        if rate not in MR_SHARES:
            raise invalid_parameter("rate", "DiCMoRRate", "one of 0.0, 0.1, ..., 0.7", self.rate)
        object.__setattr__(self, "rate", rate)

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw an ``(n, 3)`` mask. Raises ConfigError for other than three modalities."""
        modalities = check_modalities(modalities, "DiCMoRRate.sample")
        if len(modalities) != 3:
            raise ConfigError(f"The 'dicmor:{self.rate:g}' composition is defined for three modalities; the data has {len(modalities)}.")
        n = check_count(n, "DiCMoRRate.sample")
        rng = as_generator(rng, "DiCMoRRate.sample")
        two, one = MR_SHARES[self.rate]
        kind = rng.choice(3, size=n, p=[two, one, 1.0 - two - one])  # 0: two missing, 1: one missing, 2: complete
        which = rng.integers(3, size=n)
        present = np.ones((n, 3), dtype=bool)
        rows = np.arange(n)
        present[kind == 0] = False
        present[rows[kind == 0], which[kind == 0]] = True  # two missing: one kept
        present[rows[kind == 1], which[kind == 1]] = False  # one missing
        return present

    def describe(self) -> str:
        return f"dicmor:{self.rate:g}"


@dataclass(frozen=True)
class PerBatch:
    """One pattern per batch, as the released DiCMoR and IMDer trainers draw them: one row
    of ``inner``'s, given to every row of the batch (the loop draws once per batch).

    The released trainers also order the patterns within each pass over the data (the
    batches that keep one modality first, then those that keep two, then complete ones);
    here every batch draws on its own, with the same expected shares.
    """

    inner: MaskSampler

    def __post_init__(self):
        if hasattr(self.inner, "sample_frames") or isinstance(self.inner, PerBatch):
            raise ConfigError(f"'batch:' takes a whole-modality sampler, not {self.inner.describe()!r}.")

    def sample(self, n: int, modalities: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw one ``(1, M)`` row of ``inner`` and repeat it ``n`` times."""
        n = check_count(n, "PerBatch.sample")
        return np.repeat(self.inner.sample(1, modalities, rng), n, axis=0)

    def describe(self) -> str:
        return f"batch:{self.inner.describe()}"


def make_sampler(spec: str) -> MaskSampler:
    """Build a training mask sampler from a config string.

    Parameters
    ----------
    spec : str
        One of ``"complete"``, ``"uniform"``, ``"incomplete"``, ``"cmad"``, ``"dropout:<p>"``,
        ``"rate:<r>"``, ``"dicmor:<r>"``, ``"condition:<codes>"`` (e.g. ``"condition:l,a"``),
        ``"batch:<form>"`` (one pattern of ``<form>`` per batch, e.g. ``"batch:dicmor:0.5"``),
        or a frame-level distribution ``"frames:uniform"``, ``"frames:lnln"``, ``"frames:<r>"``
        (see :mod:`imsa.frames`).
        A sampler's :meth:`describe` gives back such a string.

    Raises
    ------
    ConfigError
        For an unknown form (the message lists the valid ones) or a bad parameter.
    """
    if not isinstance(spec, str):
        raise invalid_parameter("spec", "make_sampler", f"one of {', '.join(SAMPLER_FORMS)}", spec)
    kind, _, argument = spec.strip().partition(":")
    kind = kind.strip().lower()
    simple = {"complete": Complete, "uniform": CombinationDistribution.uniform, "incomplete": Incomplete, "cmad": CombinationDistribution.cmad}
    if kind in simple and not argument:
        return simple[kind]()
    if kind == "condition" and argument:
        return FixedCondition(Condition.parse(argument))
    if kind == "batch" and argument:
        try:
            return PerBatch(make_sampler(argument))
        except ConfigError as e:
            raise ConfigError(f"In {spec!r}: {e}") from None
    if kind == "frames" and argument and argument != "same":  # frames:same is the frames protocol's own rate
        return make_frame_sampler(spec.strip(), 0.0)
    if kind in ("dropout", "rate", "dicmor") and argument:
        try:
            value = float(argument)
        except ValueError:
            value = None
        if value is not None:
            return {"dropout": IndependentDropout, "rate": RandomRate, "dicmor": DiCMoRRate}[kind](value)
    raise ConfigError(f"Unknown mask sampler {spec!r}. Valid forms: {', '.join(SAMPLER_FORMS)}.")
